package half

import (
	"math"
	"testing"
)

func TestF16(t *testing.T) {
	for _, tc := range []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08}, {0x0400, 6.103515625e-05},
		{0x3555, 0.333251953125}, {0x0000, 0}, {0x7c00, float32(math.Inf(1))},
	} {
		if got := ToFloat32(tc.h); got != tc.f {
			t.Errorf("ToFloat32(%#x) = %v, want %v", tc.h, got, tc.f)
		}
		if got := FromFloat32(tc.f); got != tc.h {
			t.Errorf("FromFloat32(%v) = %#x, want %#x", tc.f, got, tc.h)
		}
	}
	// Every finite half value round-trips.
	for h := 0; h < 0x10000; h++ {
		if (h>>10)&0x1f == 0x1f {
			continue
		}
		if got := FromFloat32(ToFloat32(uint16(h))); got != uint16(h) {
			t.Fatalf("round trip %#x -> %#x", h, got)
		}
	}
	if got := FromFloat32(1e6); got != 0x7c00 {
		t.Errorf("overflow: %#x", got)
	}
	if got := FromFloat32(float32(1 + 1.0/2048)); got != 0x3c00 { // tie to even
		t.Errorf("tie: %#x", got)
	}
}
