// Package l2 holds the one L2 normalisation of the module: embeddings,
// description vectors and stored rows are all scaled to unit length here,
// with the sum of squares and the scale taken in float64 so that every
// caller gets the same bits for the same vector.
package l2

import "math"

// Normalize scales v in place to unit L2 norm. A zero or non-finite vector
// cannot be scaled: it is left as it is and Normalize reports false.
func Normalize(v []float32) bool {
	inv, ok := invNorm(v)
	if !ok {
		return false
	}
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
	return true
}

// Normalized returns a unit-norm copy of v; a zero or non-finite vector is
// copied unchanged.
func Normalized(v []float32) []float32 {
	out := make([]float32, len(v))
	inv, ok := invNorm(v)
	if !ok {
		copy(out, v)
		return out
	}
	for i, x := range v {
		out[i] = float32(float64(x) * inv)
	}
	return out
}

func invNorm(v []float32) (float64, bool) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return 0, false
	}
	return 1 / math.Sqrt(s), true
}
