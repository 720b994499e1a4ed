package clip

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/imagescope/imagescope/internal/half"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// tensorInfo is one entry of a safetensors header.
type tensorInfo struct {
	Name    string
	DType   string
	Shape   []int
	Begin   int64 // absolute file offset of the first byte
	End     int64 // absolute file offset one past the last byte
	Elemsz  int
	NumElem int
}

// safetensorsFile is an open safetensors file whose header has been parsed.
// Tensors are read on demand so that a large checkpoint never sits in memory
// twice.
type safetensorsFile struct {
	path    string
	f       *os.File
	tensors map[string]*tensorInfo
}

// dtypeSize is the byte size of a safetensors dtype (0: unknown).
func dtypeSize(dt string) int {
	switch dt {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// maxHeader bounds the JSON header (the reference implementation uses 100 MB).
const maxHeader = 100 << 20

// openSafetensors opens path and validates its header: known dtypes, offsets
// inside the data section, sizes matching shapes, no overlaps.
func openSafetensors(path string) (*safetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := parseSafetensors(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return st, nil
}

func parseSafetensors(f *os.File, path string) (*safetensorsFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	var hdr [8]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("safetensors %s: reading header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(hdr[:])
	if n > maxHeader || int64(n) > size-8 {
		return nil, fmt.Errorf("safetensors %s: header length %d invalid for a %d-byte file", path, n, size)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("safetensors %s: reading header: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf, &raw); err != nil {
		return nil, fmt.Errorf("safetensors %s: header is not a JSON object: %w", path, err)
	}
	base := int64(8 + n)
	dataLen := size - base
	st := &safetensorsFile{path: path, f: f, tensors: map[string]*tensorInfo{}}
	type span struct {
		b, e int64
		name string
	}
	var spans []span
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int   `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("safetensors %s: tensor %q: bad header entry: %w", path, name, err)
		}
		sz := dtypeSize(e.DType)
		if sz == 0 {
			return nil, fmt.Errorf("safetensors %s: tensor %q: unknown dtype %q", path, name, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] < 0 || e.Offsets[1] < e.Offsets[0] || e.Offsets[1] > dataLen {
			return nil, fmt.Errorf("safetensors %s: tensor %q: data_offsets %v outside the %d-byte data section", path, name, e.Offsets, dataLen)
		}
		numel := 1
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && numel > math.MaxInt32/d) {
				return nil, fmt.Errorf("safetensors %s: tensor %q: bad shape %v", path, name, e.Shape)
			}
			numel *= d
		}
		if int64(numel)*int64(sz) != e.Offsets[1]-e.Offsets[0] {
			return nil, fmt.Errorf("safetensors %s: tensor %q: shape %v %s needs %d bytes, offsets give %d", path, name, e.Shape, e.DType, numel*sz, e.Offsets[1]-e.Offsets[0])
		}
		st.tensors[name] = &tensorInfo{Name: name, DType: e.DType, Shape: e.Shape,
			Begin: base + e.Offsets[0], End: base + e.Offsets[1], Elemsz: sz, NumElem: numel}
		spans = append(spans, span{e.Offsets[0], e.Offsets[1], name})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].b < spans[j].b })
	for i := 1; i < len(spans); i++ {
		if spans[i].b < spans[i-1].e {
			return nil, fmt.Errorf("safetensors %s: tensors %q and %q overlap", path, spans[i-1].name, spans[i].name)
		}
	}
	return st, nil
}

func (s *safetensorsFile) Close() error { return s.f.Close() }

// names returns the tensor names, sorted.
func (s *safetensorsFile) names() []string {
	out := make([]string, 0, len(s.tensors))
	for n := range s.tensors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// float32s reads a floating-point tensor and converts it to float32.
func (s *safetensorsFile) float32s(name string) ([]float32, []int, error) {
	t, ok := s.tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q not found", name)
	}
	raw := make([]byte, t.End-t.Begin)
	if _, err := s.f.ReadAt(raw, t.Begin); err != nil {
		return nil, nil, fmt.Errorf("tensor %q: reading %s: %w", name, s.path, err)
	}
	out := make([]float32, t.NumElem)
	switch t.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case "F16":
		for i := range out {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case "BF16":
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	case "F64":
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	default:
		return nil, nil, fmt.Errorf("tensor %q: dtype %s is not a floating-point type", name, t.DType)
	}
	return out, t.Shape, nil
}

// Tensor is one named tensor for WriteSafetensors (checkpoint tools, tests).
type Tensor struct {
	Name  string
	DType string // F32, F16 or BF16
	Shape []int
	Data  []float32
}

// writeSafetensors writes tensors (converted to their dtype) in the standard
// layout: 8-byte header length, JSON header padded with spaces to a multiple
// of 8, then the data in the given order.
func WriteSafetensors(w io.Writer, tensors []Tensor) error {
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range tensors {
		var sz int64
		switch t.DType {
		case "F32":
			sz = 4
		case "F16", "BF16":
			sz = 2
		default:
			return fmt.Errorf("write safetensors: tensor %q: unsupported dtype %q", t.Name, t.DType)
		}
		n := int64(len(t.Data)) * sz
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		hdr[t.Name] = map[string]any{"dtype": t.DType, "shape": shape, "data_offsets": []int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, []byte(strings.Repeat(" ", pad))...)
	}
	var lenb [8]byte
	binary.LittleEndian.PutUint64(lenb[:], uint64(len(js)))
	if _, err := w.Write(lenb[:]); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	for _, t := range tensors {
		var buf []byte
		switch t.DType {
		case "F32":
			buf = make([]byte, 4*len(t.Data))
			for i, v := range t.Data {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
		case "F16":
			buf = make([]byte, 2*len(t.Data))
			for i, v := range t.Data {
				binary.LittleEndian.PutUint16(buf[2*i:], half.FromFloat32(v))
			}
		case "BF16":
			buf = make([]byte, 2*len(t.Data))
			for i, v := range t.Data {
				b := math.Float32bits(v)
				b += 0x7fff + (b>>16)&1 // round to nearest even
				binary.LittleEndian.PutUint16(buf[2*i:], uint16(b>>16))
			}
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// ReadSafetensorsFloat32 reads every floating-point tensor of a safetensors
// file as float32 (checkpoint tools; the model loader reads lazily).
func ReadSafetensorsFloat32(path string) (map[string][]float32, error) {
	st, err := openSafetensors(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	out := map[string][]float32{}
	for _, n := range st.names() {
		switch st.tensors[n].DType {
		case "F32", "F16", "BF16", "F64":
			d, _, err := st.float32s(n)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			out[n] = d
		}
	}
	return out, nil
}
