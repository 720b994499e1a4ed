// Package npy reads and writes NumPy .npy files: float32/float16/float64
// matrices and unicode ('<U') string arrays, the types the reference
// implementation's image DB uses.
package npy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/imagescope/imagescope/internal/half"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

const magic = "\x93NUMPY"

// Header is an .npy file's header.
type Header struct {
	// Descr is the NumPy dtype string, e.g. "<f4", "<f2", "<U64".
	Descr string
	// Fortran is true for column-major data.
	Fortran bool
	// Shape is the array's shape (empty for a scalar).
	Shape []int
}

// Count returns the number of elements the shape holds.
func (h Header) Count() int {
	n := 1
	for _, s := range h.Shape {
		n *= s
	}
	return n
}

// ReadHeader reads the magic string and header of an .npy stream, leaving
// r at the first data byte.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("read .npy preamble: %w", err)
	}
	if string(pre[:6]) != magic {
		return Header{}, errors.New("not an .npy file (bad magic string)")
	}
	major := pre[6]
	var hlen int
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("read .npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("read .npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return Header{}, fmt.Errorf("unsupported .npy format version %d.%d", major, pre[7])
	}
	if hlen > 1<<20 {
		return Header{}, fmt.Errorf(".npy header length %d is implausible", hlen)
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(r, hb); err != nil {
		return Header{}, fmt.Errorf("read .npy header: %w", err)
	}
	return parseHeader(string(hb))
}

// parseHeader parses the Python dict literal of an .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
func parseHeader(s string) (Header, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return Header{}, fmt.Errorf("malformed .npy header %q", s)
	}
	body := s[1 : len(s)-1]
	var h Header
	seen := map[string]bool{}
	for len(strings.TrimSpace(body)) > 0 {
		body = strings.TrimSpace(body)
		key, rest, err := pyString(body)
		if err != nil {
			return Header{}, fmt.Errorf("malformed .npy header %q: %w", s, err)
		}
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, ":") {
			return Header{}, fmt.Errorf("malformed .npy header %q: missing ':' after %q", s, key)
		}
		rest = strings.TrimSpace(rest[1:])
		switch key {
		case "descr":
			if h.Descr, rest, err = pyString(rest); err != nil {
				return Header{}, fmt.Errorf("malformed .npy header %q: descr: %w", s, err)
			}
		case "fortran_order":
			switch {
			case strings.HasPrefix(rest, "True"):
				h.Fortran, rest = true, rest[4:]
			case strings.HasPrefix(rest, "False"):
				h.Fortran, rest = false, rest[5:]
			default:
				return Header{}, fmt.Errorf("malformed .npy header %q: fortran_order", s)
			}
		case "shape":
			if !strings.HasPrefix(rest, "(") {
				return Header{}, fmt.Errorf("malformed .npy header %q: shape", s)
			}
			end := strings.IndexByte(rest, ')')
			if end < 0 {
				return Header{}, fmt.Errorf("malformed .npy header %q: shape", s)
			}
			h.Shape = []int{}
			for _, f := range strings.Split(rest[1:end], ",") {
				f = strings.TrimSpace(f)
				if f == "" {
					continue
				}
				f = strings.TrimSuffix(f, "L")
				v, err := strconv.Atoi(f)
				if err != nil || v < 0 {
					return Header{}, fmt.Errorf("malformed .npy header %q: shape entry %q", s, f)
				}
				h.Shape = append(h.Shape, v)
			}
			rest = rest[end+1:]
		default:
			return Header{}, fmt.Errorf("malformed .npy header %q: unknown key %q", s, key)
		}
		seen[key] = true
		rest = strings.TrimSpace(rest)
		rest = strings.TrimPrefix(rest, ",")
		body = rest
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return Header{}, fmt.Errorf("malformed .npy header %q: no %q", s, k)
		}
	}
	n := 1
	for _, d := range h.Shape {
		if d != 0 && n > math.MaxInt32*64/d {
			return Header{}, fmt.Errorf(".npy shape %v is too large", h.Shape)
		}
		n *= d
	}
	return h, nil
}

func pyString(s string) (val, rest string, err error) {
	if len(s) == 0 || (s[0] != '\'' && s[0] != '"') {
		return "", s, fmt.Errorf("expected a quoted string at %q", s)
	}
	q := s[0]
	end := strings.IndexByte(s[1:], q)
	if end < 0 {
		return "", s, errors.New("unterminated string")
	}
	return s[1 : 1+end], s[2+end:], nil
}

// floatKind describes a floating dtype descr.
func floatKind(descr string) (size int, order binary.ByteOrder, err error) {
	if len(descr) != 3 || descr[1] != 'f' {
		return 0, nil, fmt.Errorf("dtype %q is not a float type", descr)
	}
	switch descr[0] {
	case '<', '=':
		order = binary.LittleEndian
	case '>':
		order = binary.BigEndian
	default:
		return 0, nil, fmt.Errorf("dtype %q: unknown byte order", descr)
	}
	switch descr[2] {
	case '2', '4', '8':
		size = int(descr[2] - '0')
	default:
		return 0, nil, fmt.Errorf("dtype %q: unsupported float size", descr)
	}
	return size, order, nil
}

// ReadMatrix reads a 2-D float array (float16, float32 or float64) as
// float32 values in row-major order. A 1-D array is refused: the image DB
// files hold one row per image.
func ReadMatrix(r io.Reader) (data []float32, rows, cols int, err error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, 0, 0, err
	}
	size, order, err := floatKind(h.Descr)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("want a float16/float32/float64 matrix: %w", err)
	}
	if len(h.Shape) != 2 {
		return nil, 0, 0, fmt.Errorf("want a 2-D matrix, got shape %v", h.Shape)
	}
	rows, cols = h.Shape[0], h.Shape[1]
	n := rows * cols
	data = make([]float32, n)
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 64<<10)
	per := len(buf) / size
	for i := 0; i < n; i += per {
		m := min(per, n-i)
		b := buf[:m*size]
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, 0, 0, fmt.Errorf("read matrix data (%d of %d values): %w", i, n, err)
		}
		for j := 0; j < m; j++ {
			switch size {
			case 2:
				data[i+j] = half.ToFloat32(order.Uint16(b[j*2:]))
			case 4:
				data[i+j] = math.Float32frombits(order.Uint32(b[j*4:]))
			case 8:
				data[i+j] = float32(math.Float64frombits(order.Uint64(b[j*8:])))
			}
		}
	}
	if h.Fortran && rows > 1 && cols > 1 {
		t := make([]float32, n)
		for c := 0; c < cols; c++ {
			for r := 0; r < rows; r++ {
				t[r*cols+c] = data[c*rows+r]
			}
		}
		data = t
	}
	return data, rows, cols, nil
}

// ReadStrings reads a 1-D unicode string array (dtype '<U n').
func ReadStrings(r io.Reader) ([]string, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	if len(h.Descr) < 3 || h.Descr[1] != 'U' || (h.Descr[0] != '<' && h.Descr[0] != '>' && h.Descr[0] != '=') {
		return nil, fmt.Errorf("want a unicode string array (dtype <U...), got dtype %q", h.Descr)
	}
	width, err := strconv.Atoi(h.Descr[2:])
	if err != nil || width <= 0 || width > 1<<20 {
		return nil, fmt.Errorf("dtype %q: bad string width", h.Descr)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if h.Descr[0] == '>' {
		order = binary.BigEndian
	}
	if len(h.Shape) != 1 {
		return nil, fmt.Errorf("want a 1-D string array, got shape %v", h.Shape)
	}
	n := h.Shape[0]
	out := make([]string, n)
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 4*width)
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, fmt.Errorf("read string %d of %d: %w", i, n, err)
		}
		sb.Reset()
		for j := 0; j < width; j++ {
			cp := order.Uint32(buf[j*4:])
			if cp == 0 {
				break
			}
			if cp > utf8.MaxRune || (cp >= 0xD800 && cp <= 0xDFFF) {
				return nil, fmt.Errorf("string %d holds invalid code point %#x", i, cp)
			}
			sb.WriteRune(rune(cp))
		}
		out[i] = sb.String()
	}
	return out, nil
}

func writeHeader(w io.Writer, descr string, shape []int) error {
	var sh string
	switch len(shape) {
	case 1:
		sh = fmt.Sprintf("(%d,)", shape[0])
	default:
		parts := make([]string, len(shape))
		for i, s := range shape {
			parts[i] = strconv.Itoa(s)
		}
		sh = "(" + strings.Join(parts, ", ") + ")"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, sh)
	// Version 1.0: magic(6) + version(2) + len(2) + header, padded with
	// spaces and a newline to a multiple of 64 bytes.
	total := 10 + len(dict) + 1
	pad := (64 - total%64) % 64
	hdr := dict + strings.Repeat(" ", pad) + "\n"
	if len(hdr) > math.MaxUint16 {
		return errors.New("npy header too long")
	}
	b := make([]byte, 0, 10+len(hdr))
	b = append(b, magic...)
	b = append(b, 1, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(hdr)))
	b = append(b, hdr...)
	_, err := w.Write(b)
	return err
}

// WriteMatrix writes a rows x cols float32 matrix ('<f4'), row-major.
func WriteMatrix(w io.Writer, data []float32, rows, cols int) error {
	if len(data) != rows*cols {
		return fmt.Errorf("npy: %d values for a %dx%d matrix", len(data), rows, cols)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, "<f4", []int{rows, cols}); err != nil {
		return err
	}
	var b [4]byte
	for _, v := range data {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		if _, err := bw.Write(b[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteMatrix16 writes a rows x cols matrix as float16 ('<f2').
func WriteMatrix16(w io.Writer, data []float32, rows, cols int) error {
	if len(data) != rows*cols {
		return fmt.Errorf("npy: %d values for a %dx%d matrix", len(data), rows, cols)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, "<f2", []int{rows, cols}); err != nil {
		return err
	}
	var b [2]byte
	for _, v := range data {
		binary.LittleEndian.PutUint16(b[:], half.FromFloat32(v))
		if _, err := bw.Write(b[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteStrings writes a 1-D unicode string array ('<U n', n = the longest
// string in code points, at least 1).
func WriteStrings(w io.Writer, ss []string) error {
	width := 1
	for _, s := range ss {
		width = max(width, utf8.RuneCountInString(s))
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, "<U"+strconv.Itoa(width), []int{len(ss)}); err != nil {
		return err
	}
	buf := make([]byte, 4*width)
	for _, s := range ss {
		clear(buf)
		j := 0
		for _, r := range s {
			binary.LittleEndian.PutUint32(buf[j*4:], uint32(r))
			j++
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadMatrixFile reads a float matrix from a file; errors name the file.
func ReadMatrixFile(path string) ([]float32, int, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	data, rows, cols, err := ReadMatrix(f)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return data, rows, cols, nil
}

// ReadStringsFile reads a string array from a file; errors name the file.
func ReadStringsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ss, err := ReadStrings(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ss, nil
}

// WriteMatrixFile writes m (rows x cols, row-major) to a new .npy file.
func WriteMatrixFile(path string, m []float32, rows, cols int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteMatrix(f, m, rows, cols); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
