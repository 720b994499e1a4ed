package npy

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestMatrixRoundTrip(t *testing.T) {
	data := []float32{1, -2.5, 3.25, 0, float32(math.Inf(1)), 1e-3}
	var buf bytes.Buffer
	if err := WriteMatrix(&buf, data, 2, 3); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%64 != (6*4)%64 && (buf.Len()-24)%64 != 0 {
		t.Fatalf("header not padded to 64 bytes: total %d", buf.Len())
	}
	got, r, c, err := ReadMatrix(bytes.NewReader(buf.Bytes()))
	if err != nil || r != 2 || c != 3 || !slices.Equal(got, data) {
		t.Fatalf("got %v %dx%d %v", got, r, c, err)
	}
	buf.Reset()
	if err := WriteMatrix16(&buf, data, 3, 2); err != nil {
		t.Fatal(err)
	}
	got, r, c, err = ReadMatrix(&buf)
	if err != nil || r != 3 || c != 2 {
		t.Fatalf("f16: %v %dx%d %v", got, r, c, err)
	}
	for i := range data {
		if d := math.Abs(float64(got[i] - data[i])); d > 1e-3*math.Abs(float64(data[i])) && !math.IsInf(float64(data[i]), 0) {
			t.Fatalf("f16 value %d: %v vs %v", i, got[i], data[i])
		}
	}
}

// numpyBytes is what numpy 1.24 writes for np.save(f, np.array([[1,2],[3,4]], dtype='<f2'))
// with the version 1.0 header layout; we build it by hand from the spec.
func rawNpy(dict string, data []byte) []byte {
	hdr := dict
	for (10+len(hdr)+1)%64 != 0 {
		hdr += " "
	}
	hdr += "\n"
	b := []byte("\x93NUMPY\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(len(hdr)))
	return append(append(b, hdr...), data...)
}

func TestReadVariants(t *testing.T) {
	// float64, Fortran order 2x3: columns stored first.
	var d []byte
	for _, v := range []float64{1, 4, 2, 5, 3, 6} {
		d = binary.LittleEndian.AppendUint64(d, math.Float64bits(v))
	}
	got, r, c, err := ReadMatrix(bytes.NewReader(rawNpy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", d)))
	if err != nil || r != 2 || c != 3 || !slices.Equal(got, []float32{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("fortran f8: %v %dx%d %v", got, r, c, err)
	}
	// big-endian float32
	d = nil
	for _, v := range []float32{1.5, -2} {
		d = binary.BigEndian.AppendUint32(d, math.Float32bits(v))
	}
	got, _, _, err = ReadMatrix(bytes.NewReader(rawNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }", d)))
	if err != nil || !slices.Equal(got, []float32{1.5, -2}) {
		t.Fatalf("big-endian: %v %v", got, err)
	}
}

func TestStringsRoundTrip(t *testing.T) {
	in := []string{"dev_0001", "", "ünïcødé ✓", "000000001001.jpg"}
	var buf bytes.Buffer
	if err := WriteStrings(&buf, in); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "'descr': '<U16'") {
		t.Fatalf("header: %q", buf.String()[:80])
	}
	got, err := ReadStrings(&buf)
	if err != nil || !slices.Equal(got, in) {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestRefusals(t *testing.T) {
	f4 := func(shape string, n int) []byte {
		return rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': "+shape+", }", make([]byte, 4*n))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		str  bool
		want string
	}{
		{"bad magic", []byte("PK\x03\x04garbage...."), false, "magic"},
		{"int dtype", rawNpy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", make([]byte, 32)), false, "not a float"},
		{"1-D matrix", f4("(4,)", 4), false, "2-D"},
		{"3-D matrix", f4("(1, 2, 2)", 4), false, "2-D"},
		{"truncated", f4("(3, 4)", 5), false, "read matrix data"},
		{"object array", rawNpy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", nil), true, "unicode"},
		{"float as strings", f4("(4,)", 4), true, "unicode"},
		{"2-D strings", rawNpy("{'descr': '<U3', 'fortran_order': False, 'shape': (1, 1), }", make([]byte, 12)), true, "1-D"},
		{"bad header", rawNpy("{'descr': '<f4', 'shape': (2, 2)", nil), false, "malformed"},
		{"truncated strings", rawNpy("{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", make([]byte, 13)), true, "read string 1"},
	} {
		var err error
		if tc.str {
			_, err = ReadStrings(bytes.NewReader(tc.b))
		} else {
			_, _, _, err = ReadMatrix(bytes.NewReader(tc.b))
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
