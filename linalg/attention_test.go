package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAttentionHead(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	var s Scratch
	for _, tc := range []struct {
		L, dh  int
		causal bool
	}{{1, 4, false}, {50, 64, false}, {17, 8, true}, {77, 64, true}, {13, 40, false}, {40, 33, true}} {
		W := 3 * tc.dh
		ld := 3*W + 5
		qkv := randSlice(r, tc.L*ld)
		qo, ko, vo := 2, W+1, 2*W+3
		scale := float32(1 / math.Sqrt(float64(tc.dh)))
		ldo := tc.dh + 7
		out := randSlice(r, tc.L*ldo)
		keep := append([]float32(nil), out...)
		s.AttentionHead(out, ldo, qkv, ld, qo, ko, vo, tc.L, tc.dh, scale, tc.causal)
		for i := 0; i < tc.L; i++ {
			n := tc.L
			if tc.causal {
				n = i + 1
			}
			w := make([]float64, n)
			mx := math.Inf(-1)
			for j := 0; j < n; j++ {
				for d := 0; d < tc.dh; d++ {
					w[j] += float64(qkv[i*ld+qo+d]) * float64(qkv[j*ld+ko+d])
				}
				w[j] *= float64(scale)
				mx = math.Max(mx, w[j])
			}
			var sum float64
			for j := range w {
				w[j] = math.Exp(w[j] - mx)
				sum += w[j]
			}
			for d := 0; d < tc.dh; d++ {
				var o float64
				for j := range w {
					o += w[j] / sum * float64(qkv[j*ld+vo+d])
				}
				if got := out[i*ldo+d]; math.Abs(float64(got)-o) > 1e-5 {
					t.Fatalf("%+v: out[%d][%d] = %v, want %v", tc, i, d, got, o)
				}
			}
			for d := tc.dh; d < ldo && i*ldo+d < len(out); d++ {
				if out[i*ldo+d] != keep[i*ldo+d] {
					t.Fatalf("%+v: wrote outside the head at [%d][%d]", tc, i, d)
				}
			}
		}
	}
}
