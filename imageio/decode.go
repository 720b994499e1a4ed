package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"strings"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"
)

// DefaultMaxPixels is the largest pixel count accepted by default: images of
// 20000x20000 pixels (400 million) or more are refused.
const DefaultMaxPixels = 20000*20000 - 1

// DefaultMaxBytes bounds the encoded size read by default (1 GiB).
const DefaultMaxBytes = 1 << 30

// Errors a decode can be matched against with errors.Is.
var (
	ErrEmpty       = errors.New("empty file (0 bytes)")
	ErrTruncated   = errors.New("truncated image data")
	ErrUnsupported = errors.New("unsupported image format")
	ErrTooLarge    = errors.New("image too large")
	ErrCorrupt     = errors.New("corrupt image data")
)

// Limits bound what Decode accepts. The zero value means the defaults.
type Limits struct {
	// MaxPixels is the largest width*height accepted; 0 means
	// DefaultMaxPixels. It is checked from the header before any pixel
	// is decoded.
	MaxPixels int64
	// MaxBytes is the largest encoded size read; 0 means DefaultMaxBytes.
	MaxBytes int64
	// IgnoreOrientation leaves pixels as stored, without applying the EXIF
	// orientation (the CLIP references do not apply it).
	IgnoreOrientation bool
}

func (l Limits) maxPixels() int64 {
	if l.MaxPixels <= 0 {
		return DefaultMaxPixels
	}
	return l.MaxPixels
}

func (l Limits) maxBytes() int64 {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return l.MaxBytes
}

// Info describes a decoded image.
type Info struct {
	Format string // "jpeg", "png", "gif", "bmp" or "webp"
	// Width and Height are the size of the returned image (after the
	// orientation is applied).
	Width, Height int
	// Orientation is the EXIF orientation tag found (1..8; 1 when absent).
	Orientation int
	// Oriented tells whether the pixels were transformed for Orientation.
	Oriented bool
}

// DecodeFile decodes the image file at path (JPEG, PNG, GIF, BMP or WebP),
// refusing images over the limits before decoding their pixels, and applies
// the EXIF orientation. Errors name the file.
func DecodeFile(path string, lim Limits) (image.Image, Info, error) {
	data, err := readFile(path, lim)
	if err != nil {
		return nil, Info{}, err
	}
	img, info, err := decodeBytes(data, lim)
	if err != nil {
		return nil, info, fmt.Errorf("decode image %s: %w", path, err)
	}
	return img, info, nil
}

// Decode decodes an image from r like DecodeFile.
func Decode(r io.Reader, lim Limits) (image.Image, Info, error) {
	data, err := readAll(r, lim.maxBytes())
	if err != nil {
		return nil, Info{}, fmt.Errorf("decode image: %w", err)
	}
	img, info, err := decodeBytes(data, lim)
	if err != nil {
		return nil, info, fmt.Errorf("decode image: %w", err)
	}
	return img, info, nil
}

// DecodeBytes decodes an image held in memory like DecodeFile.
func DecodeBytes(data []byte, lim Limits) (image.Image, Info, error) {
	img, info, err := decodeBytes(data, lim)
	if err != nil {
		return nil, info, fmt.Errorf("decode image: %w", err)
	}
	return img, info, nil
}

// ReadInfoFile reads the format, size and orientation of an image file from
// its header, without decoding pixels. Width and Height are as displayed
// (swapped for orientations 5..8).
func ReadInfoFile(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("read image header %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("read image header %s: %w", path, err)
	}
	if st.IsDir() {
		return Info{}, fmt.Errorf("read image header %s: is a directory", path)
	}
	if st.Size() == 0 {
		return Info{}, fmt.Errorf("read image header %s: %w", path, ErrEmpty)
	}
	// Headers (with EXIF, ICC profiles and thumbnails before a JPEG's
	// frame header) nearly always fit in the first 512 KiB; read the whole
	// file only when they do not.
	head, err := io.ReadAll(io.LimitReader(f, headerProbeBytes))
	if err != nil {
		return Info{}, fmt.Errorf("read image header %s: %w", path, err)
	}
	info, err := readInfo(head)
	if err != nil && int64(len(head)) < st.Size() && errors.Is(err, ErrTruncated) {
		var data []byte
		if data, err = readFile(path, Limits{}); err != nil {
			return Info{}, err
		}
		info, err = readInfo(data)
	}
	if err != nil {
		return info, fmt.Errorf("read image header %s: %w", path, err)
	}
	return info, nil
}

// headerProbeBytes is how much of a file ReadInfoFile reads first.
const headerProbeBytes = 512 << 10

func readFile(path string, lim Limits) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("decode image %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("decode image %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("decode image %s: is a directory", path)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("decode image %s: %w", path, ErrEmpty)
	}
	if st.Size() > lim.maxBytes() {
		return nil, fmt.Errorf("decode image %s: %w: file is %d bytes, limit %d", path, ErrTooLarge, st.Size(), lim.maxBytes())
	}
	data, err := readAll(f, lim.maxBytes())
	if err != nil {
		return nil, fmt.Errorf("decode image %s: %w", path, err)
	}
	return data, nil
}

func readAll(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return data, nil
}

// sniff names the format from the leading bytes; ok is false for formats
// this package cannot decode (name then says what it looks like, if known).
func sniff(b []byte) (name string, ok bool) {
	has := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig
	}
	switch {
	case has(0, "\xff\xd8\xff"):
		return "jpeg", true
	case has(0, "\x89PNG\r\n\x1a\n"):
		return "png", true
	case has(0, "GIF87a"), has(0, "GIF89a"):
		return "gif", true
	case has(0, "BM"):
		return "bmp", true
	case has(0, "RIFF") && has(8, "WEBP"):
		return "webp", true
	case has(0, "II*\x00"), has(0, "MM\x00*"):
		return "TIFF", false
	case has(4, "ftypheic"), has(4, "ftypheix"), has(4, "ftypmif1"), has(4, "ftyphevc"):
		return "HEIF/HEIC", false
	case has(4, "ftypavif"), has(4, "ftypavis"):
		return "AVIF", false
	case has(0, "\x00\x00\x00\x0cjP  "), has(0, "\xff\x4f\xff\x51"):
		return "JPEG 2000", false
	case has(0, "\xff\x0a"), has(0, "\x00\x00\x00\x0cJXL "):
		return "JPEG XL", false
	case has(0, "8BPS"):
		return "Photoshop PSD", false
	case has(0, "\x00\x00\x01\x00"):
		return "ICO", false
	case has(0, "%PDF"):
		return "PDF", false
	case has(0, "P1"), has(0, "P2"), has(0, "P3"), has(0, "P4"), has(0, "P5"), has(0, "P6"):
		return "Netpbm", false
	}
	head := strings.TrimSpace(strings.ToLower(string(b[:min(len(b), 256)])))
	if strings.HasPrefix(head, "<svg") || strings.HasPrefix(head, "<?xml") && strings.Contains(head, "<svg") {
		return "SVG", false
	}
	return "", false
}

func decodeConfig(format string, data []byte) (cfg image.Config, err error) {
	defer recoverDecoder(&err)
	c, ok := codecFor(format)
	if !ok {
		return image.Config{}, ErrUnsupported
	}
	return c.config(bytes.NewReader(data))
}

func decodePixels(format string, data []byte) (img image.Image, err error) {
	defer recoverDecoder(&err)
	c, ok := codecFor(format)
	if !ok {
		return nil, ErrUnsupported
	}
	return c.decode(bytes.NewReader(data))
}

// codec is a format's header and pixel decoders.
type codec struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// codecFor returns the decoders of a supported format (the names sniff
// gives).
func codecFor(format string) (codec, bool) {
	switch format {
	case "jpeg":
		return codec{jpeg.DecodeConfig, jpeg.Decode}, true
	case "png":
		return codec{png.DecodeConfig, png.Decode}, true
	case "gif":
		return codec{gif.DecodeConfig, gif.Decode}, true
	case "bmp":
		return codec{bmp.DecodeConfig, bmp.Decode}, true
	case "webp":
		return codec{webp.DecodeConfig, webp.Decode}, true
	}
	return codec{}, false
}

// recoverDecoder turns a panic inside a third-party decoder (malformed
// input it did not anticipate) into an error.
func recoverDecoder(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("decoder failed: %v", r)
	}
}

// classify wraps a decoder error with the matching sentinel: truncation
// when the decoder ran out of data or the file lacks its format's end.
func classify(err error, what, format string, data []byte) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "unexpected EOF") ||
		looksTruncated(format, data) {
		return fmt.Errorf("%w while reading the %s (%v)", ErrTruncated, what, err)
	}
	return fmt.Errorf("%w in the %s: %v", ErrCorrupt, what, err)
}

func readInfo(data []byte) (Info, error) {
	if len(data) == 0 {
		return Info{}, ErrEmpty
	}
	format, ok := sniff(data)
	if !ok {
		if format != "" {
			return Info{}, fmt.Errorf("%w: %s (supported: JPEG, PNG, GIF, BMP, WebP)", ErrUnsupported, format)
		}
		return Info{}, fmt.Errorf("%w: unrecognised content starting % x (supported: JPEG, PNG, GIF, BMP, WebP)", ErrUnsupported, data[:min(len(data), 8)])
	}
	info := Info{Format: format, Orientation: 1}
	cfg, err := decodeConfig(format, data)
	if err != nil {
		return info, classify(err, format+" header", format, data)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return info, fmt.Errorf("%w: %s header gives size %dx%d", ErrCorrupt, format, cfg.Width, cfg.Height)
	}
	info.Width, info.Height = cfg.Width, cfg.Height
	info.Orientation = exifOrientation(format, data)
	if info.Orientation >= 5 {
		info.Width, info.Height = info.Height, info.Width
	}
	return info, nil
}

func decodeBytes(data []byte, lim Limits) (image.Image, Info, error) {
	info, err := readInfo(data)
	if err != nil {
		return nil, info, err
	}
	if px := int64(info.Width) * int64(info.Height); px > lim.maxPixels() {
		return nil, info, fmt.Errorf("%w: %dx%d = %d pixels, limit %d", ErrTooLarge, info.Width, info.Height, px, lim.maxPixels())
	}
	img, err := decodePixels(info.Format, data)
	if err != nil {
		return nil, info, classify(err, info.Format+" data", info.Format, data)
	}
	switch info.Format {
	case "gif":
		restoreGIFTransparentColor(img, data)
	case "webp":
		img = webpToImage(img)
	}
	b := img.Bounds()
	if info.Orientation != 1 && !lim.IgnoreOrientation {
		img = Orient(ToRGB(img), info.Orientation)
		info.Oriented = true
		b = img.Bounds()
	}
	info.Width, info.Height = b.Dx(), b.Dy()
	return img, info, nil
}

// restoreGIFTransparentColor puts back the stored colour of the transparent
// palette entry, which Go's GIF decoder replaces with transparent black;
// PIL's convert("RGB") shows the stored colour.
func restoreGIFTransparentColor(img image.Image, data []byte) {
	m, ok := img.(*image.Paletted)
	if !ok {
		return
	}
	table := gifFirstColorTable(data)
	for i, c := range m.Palette {
		if i >= len(table) {
			break
		}
		if c == (color.RGBA{}) && table[i] != ([3]uint8{}) {
			m.Palette[i] = color.NRGBA{table[i][0], table[i][1], table[i][2], 0}
		}
	}
}

// gifFirstColorTable returns the colour table of the first frame (its local
// table, else the global one), or nil when the stream cannot be walked.
func gifFirstColorTable(b []byte) [][3]uint8 {
	readTable := func(off, flags int) ([][3]uint8, int) {
		if flags&0x80 == 0 {
			return nil, off
		}
		n := 1 << (flags&7 + 1)
		if off+3*n > len(b) {
			return nil, -1
		}
		t := make([][3]uint8, n)
		for i := range t {
			t[i] = [3]uint8{b[off+3*i], b[off+3*i+1], b[off+3*i+2]}
		}
		return t, off + 3*n
	}
	if len(b) < 13 {
		return nil
	}
	global, off := readTable(13, int(b[10]))
	for off >= 0 && off < len(b) {
		switch b[off] {
		case 0x21: // extension: label, then sub-blocks
			off += 2
			for off < len(b) && b[off] != 0 {
				off += int(b[off]) + 1
			}
			off++
		case 0x2c: // image descriptor
			if off+10 > len(b) {
				return global
			}
			local, _ := readTable(off+10, int(b[off+9]))
			if local != nil {
				return local
			}
			return global
		default:
			return global
		}
	}
	return global
}

// looksTruncated reports whether data lacks the end its format requires:
// JPEG's EOI marker, PNG's IEND chunk, GIF's trailer, the size a RIFF (WebP)
// or BMP header announces. Trailing zero padding is allowed.
func looksTruncated(format string, b []byte) bool {
	t := bytes.TrimRight(b, "\x00")
	switch format {
	case "jpeg":
		return !bytes.HasSuffix(t, []byte{0xff, 0xd9})
	case "png":
		return !bytes.Contains(b[max(0, len(b)-64):], []byte("IEND"))
	case "gif":
		return !bytes.HasSuffix(t, []byte{0x3b})
	case "webp":
		return len(b) < 8 || int64(len(b)) < 8+int64(binary.LittleEndian.Uint32(b[4:8]))
	case "bmp":
		return len(b) < 6 || int64(len(b)) < int64(binary.LittleEndian.Uint32(b[2:6]))
	}
	return false
}
