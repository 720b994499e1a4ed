package vindex

import "testing"

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
