package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

func naive(a []float32, m, k int, w []float32, n int, bias []float32) []float32 {
	out := make([]float32, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			if bias != nil {
				s = float64(bias[j])
			}
			for p := 0; p < k; p++ {
				s += float64(a[i*k+p]) * float64(w[j*k+p])
			}
			out[i*n+j] = float32(s)
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func TestLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ m, k, n, threads int }{
		{1, 1, 1, 1}, {5, 3, 7, 2}, {6, 16, 16, 1}, {50, 32, 96, 2}, {13, 300, 17, 3},
		{77, 8, 24, 2}, {100, 513, 40, 4}, {7, 257, 33, 1}, {200, 64, 130, 8},
	} {
		a := randSlice(r, tc.m*tc.k)
		w := randSlice(r, tc.n*tc.k)
		bias := randSlice(r, tc.n)
		want := naive(a, tc.m, tc.k, w, tc.n, bias)
		for _, withBias := range []bool{true, false} {
			bb := bias
			if !withBias {
				bb = nil
				want = naive(a, tc.m, tc.k, w, tc.n, nil)
			}
			got := make([]float32, tc.m*tc.n)
			for i := range got {
				got[i] = float32(math.NaN()) // must be overwritten
			}
			Linear(got, a, tc.m, PackTransposed(w, tc.n, tc.k), bb, tc.threads)
			tol := 1e-4 * math.Sqrt(float64(tc.k))
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); !(d <= tol) {
					t.Fatalf("%+v bias=%v: [%d] got %v want %v", tc, withBias, i, got[i], want[i])
				}
			}
			// Pack (K x N layout) gives the same result.
			wt := make([]float32, tc.k*tc.n)
			for j := 0; j < tc.n; j++ {
				for p := 0; p < tc.k; p++ {
					wt[p*tc.n+j] = w[j*tc.k+p]
				}
			}
			got2 := make([]float32, tc.m*tc.n)
			Linear(got2, a, tc.m, Pack(wt, tc.k, tc.n), bb, tc.threads)
			for i := range got {
				if got[i] != got2[i] {
					t.Fatalf("%+v: Pack and PackTransposed differ at %d: %v %v", tc, i, got[i], got2[i])
				}
			}
		}
	}
}

func TestKernelsMatchGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, ks := range kernels() {
		ref := kernelGo(ks.mr, ks.nr)
		for _, k := range []int{1, 2, 3, 4, 5, 17, 256} {
			a := randSlice(r, k*ks.mr)
			b := randSlice(r, k*ks.nr)
			ldc := ks.nr + 3
			c1 := randSlice(r, ks.mr*ldc)
			c2 := append([]float32(nil), c1...)
			ks.fn(k, a, b, c1, ldc)
			ref(k, a, b, c2, ldc)
			for i := range c1 {
				if math.Abs(float64(c1[i]-c2[i])) > 1e-4 {
					t.Fatalf("%s k=%d [%d]: %v vs %v", ks.name, k, i, c1[i], c2[i])
				}
			}
		}
		// The whole blocked multiply with this kernel.
		for _, tc := range []struct{ m, k, n, threads int }{{50, 300, 70, 2}, {13, 7, 33, 1}, {100, 513, 64, 3}} {
			a := randSlice(r, tc.m*tc.k)
			w := randSlice(r, tc.n*tc.k)
			p := &Packed{K: tc.k, N: tc.n, spec: ks}
			packPanels(p, func(row, col int) float32 { return w[col*tc.k+row] })
			got := make([]float32, tc.m*tc.n)
			gemmPure(got, a, tc.m, p, tc.threads, new(Scratch))
			want := naive(a, tc.m, tc.k, w, tc.n, nil)
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-3 {
					t.Fatalf("%s %+v [%d]: %v vs %v", ks.name, tc, i, got[i], want[i])
				}
			}
		}
	}
}

func benchLinear(b *testing.B, m, k, n, threads int) {
	r := rand.New(rand.NewPCG(1, 2))
	a := randSlice(r, m*k)
	p := PackTransposed(randSlice(r, n*k), n, k)
	dst := make([]float32, m*n)
	for b.Loop() {
		Linear(dst, a, m, p, nil, threads)
	}
	b.ReportMetric(float64(2*m*k*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkLinear400x768x3072T1(b *testing.B) { benchLinear(b, 400, 768, 3072, 1) }
func BenchmarkLinear400x768x3072T2(b *testing.B) { benchLinear(b, 400, 768, 3072, 2) }
func BenchmarkLinear50x768x2304T1(b *testing.B)  { benchLinear(b, 50, 768, 2304, 1) }
func BenchmarkLinear400x3072x768T1(b *testing.B) { benchLinear(b, 400, 3072, 768, 1) }

func TestMatMulSmall(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var s Scratch
	for _, tc := range []struct{ m, k, n int }{{50, 64, 50}, {7, 3, 40}, {77, 77, 64}, {1, 1, 1}} {
		a := randSlice(r, tc.m*tc.k)
		bt := randSlice(r, tc.n*tc.k) // n x k
		want := naive(a, tc.m, tc.k, bt, tc.n, nil)
		got := randSlice(r, tc.m*tc.n) // garbage must be overwritten
		s.MatMulNT(got, a, tc.m, tc.k, bt, tc.n)
		if d := maxDiff(got, want); d > 1e-4 {
			t.Fatalf("MatMulNT %+v: diff %v", tc, d)
		}
		b := make([]float32, tc.k*tc.n) // k x n
		for i := 0; i < tc.n; i++ {
			for j := 0; j < tc.k; j++ {
				b[j*tc.n+i] = bt[i*tc.k+j]
			}
		}
		got = randSlice(r, tc.m*tc.n)
		s.MatMulNN(got, a, tc.m, tc.k, b, tc.n)
		if d := maxDiff(got, want); d > 1e-4 {
			t.Fatalf("MatMulNN %+v: diff %v", tc, d)
		}
	}
}

func maxDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}
