package vindex

import (
	"math"
	"testing"
)

func BenchmarkKernel(b *testing.B) {
	for _, kern := range kernels() {
		b.Run(kern.name, func(b *testing.B) {
			kd := 256
			d := 768
			a := make([]float32, kd*kern.w)
			g := make([]float32, kern.mr*d)
			c := make([]float32, kern.mr*kern.w)
			for b.Loop() {
				kern.fn(kd, &a[0], &g[0], d*4, &c[0])
			}
			flops := float64(2 * kd * kern.mr * kern.w)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func TestTileMask(t *testing.T) {
	for _, kern := range kernels() {
		mr, w := kern.mr, kern.w
		c := make([]float32, mr*w)
		thr := make([]float32, w)
		for i := range c {
			c[i] = float32((i*7919)%13) - 6
		}
		for l := range thr {
			thr[l] = float32(l%9) - 4
		}
		thr[1] = float32(math.Inf(1))
		thr[2] = float32(math.Inf(-1))
		out := make([]uint32, mr)
		kern.mask(&c[0], &thr[0], &out[0])
		for r := 0; r < mr; r++ {
			for l := 0; l < w; l++ {
				want := c[r*w+l] >= thr[l]
				if got := out[r]>>l&1 == 1; got != want {
					t.Fatalf("%s row %d lane %d: %v >= %v gave %v", kern.name, r, l, c[r*w+l], thr[l], got)
				}
			}
		}
	}
}
