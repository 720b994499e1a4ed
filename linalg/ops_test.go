package linalg

import (
	"math"
	"testing"
)

func TestExp(t *testing.T) {
	worst := 0.0
	for x := float32(-87); x < 88; x += 0.0137 {
		got := float64(Exp(x))
		want := math.Exp(float64(x))
		rel := math.Abs(got-want) / want
		if rel > worst {
			worst = rel
		}
	}
	if worst > 3e-7 {
		t.Fatalf("Exp max relative error %g", worst)
	}
	if Exp(-100) != 0 || !math.IsInf(float64(Exp(100)), 1) || Exp(0) != 1 {
		t.Fatalf("Exp limits: %v %v %v", Exp(-100), Exp(100), Exp(0))
	}
}

func TestActivations(t *testing.T) {
	xs := []float32{-100, -60, -6, -3, -1.5, -0.3, 0, 0.01, 0.7, 2, 5, 60, 100}
	for x := float32(-12); x < 12; x += 0.0123 {
		xs = append(xs, x)
	}
	q := append([]float32(nil), xs...)
	g := append([]float32(nil), xs...)
	QuickGELU(q)
	GELU(g)
	for i, x := range xs {
		wq := float64(x) / (1 + math.Exp(-1.702*float64(x)))
		wg := 0.5 * float64(x) * (1 + math.Erf(float64(x)/math.Sqrt2))
		tol := 1e-6 * math.Max(1, math.Abs(float64(x)))
		if math.Abs(float64(q[i])-wq) > tol || math.Abs(float64(g[i])-wg) > tol {
			t.Errorf("x=%v quick %v want %v, gelu %v want %v", x, q[i], wq, g[i], wg)
		}
	}
}

func TestLayerNormSoftmax(t *testing.T) {
	x := []float32{1, 2, 3, 4, -1, -1, -1, -1}
	gamma := []float32{1, 2, 1, 1}
	beta := []float32{0, 0, 0, 1}
	out := make([]float32, 8)
	LayerNorm(out, x, 2, 4, gamma, beta, 1e-5)
	// row 0: mean 2.5, var 1.25
	inv := 1 / math.Sqrt(1.25+1e-5)
	want := []float64{-1.5 * inv, -0.5 * inv * 2, 0.5 * inv, 1.5*inv + 1, 0, 0, 0, 1}
	for i := range want {
		if math.Abs(float64(out[i])-want[i]) > 1e-6 {
			t.Fatalf("layernorm[%d]=%v want %v", i, out[i], want[i])
		}
	}
	row := []float32{1, 2, 3, float32(math.Inf(-1))}
	SoftmaxRow(row)
	den := math.Exp(1) + math.Exp(2) + math.Exp(3)
	for i, w := range []float64{math.Exp(1) / den, math.Exp(2) / den, math.Exp(3) / den, 0} {
		if math.Abs(float64(row[i])-w) > 1e-6 {
			t.Fatalf("softmax[%d]=%v want %v", i, row[i], w)
		}
	}
}

func BenchmarkGELU(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%200-100) / 30
	}
	b.SetBytes(4 * 4096)
	for b.Loop() {
		GELU(x)
	}
}

func BenchmarkQuickGELU(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%200-100) / 30
	}
	b.SetBytes(4 * 4096)
	for b.Loop() {
		QuickGELU(x)
	}
}
