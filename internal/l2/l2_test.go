package l2

import (
	"math"
	"testing"
)

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestNormalize(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		in   []float32
		ok   bool
	}{
		{"unit already", []float32{1, 0, 0}, true},
		{"3-4-5", []float32{3, 4}, true},
		{"tiny", []float32{1e-20, 1e-20}, true},
		{"zero", []float32{0, 0, 0}, false},
		{"empty", nil, false},
		{"nan", []float32{1, nan}, false},
		{"inf", []float32{inf, 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]float32(nil), tc.in...)
			cp := Normalized(tc.in)
			v := append([]float32(nil), tc.in...)
			if ok := Normalize(v); ok != tc.ok {
				t.Fatalf("Normalize reported %v, want %v", ok, tc.ok)
			}
			for i := range v {
				if math.Float32bits(v[i]) != math.Float32bits(cp[i]) {
					t.Fatalf("Normalize and Normalized differ at %d: %v vs %v", i, v, cp)
				}
				if math.Float32bits(tc.in[i]) != math.Float32bits(orig[i]) {
					t.Fatal("Normalized changed its input")
				}
			}
			if tc.ok {
				if n := norm(v); math.Abs(n-1) > 1e-6 {
					t.Errorf("norm %v", n)
				}
			} else {
				for i := range v {
					if math.Float32bits(v[i]) != math.Float32bits(orig[i]) {
						t.Errorf("unscalable vector changed: %v -> %v", orig, v)
					}
				}
			}
		})
	}
	if got := Normalized([]float32{3, 4}); got[0] != 0.6 || got[1] != 0.8 {
		t.Errorf("Normalized(3,4) = %v", got)
	}
}
