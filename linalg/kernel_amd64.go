package linalg

import "golang.org/x/sys/cpu"

//go:noescape
func kernel6x16AVX2(k int, a, b, c *float32, ldc int)

//go:noescape
func kernel12x32AVX512(k int, a, b, c *float32, ldc int)

var avx2Kernel = &kernelSpec{name: "avx2", mr: 6, nr: 16, kc: 256, mcPanels: 16,
	fn: func(k int, a, b, c []float32, ldc int) {
		if k <= 0 {
			return
		}
		// Bounds the assembly relies on.
		_ = a[k*6-1]
		_ = b[k*16-1]
		_ = c[5*ldc+15]
		kernel6x16AVX2(k, &a[0], &b[0], &c[0], ldc)
	}}

var avx512Kernel = &kernelSpec{name: "avx512", mr: 12, nr: 32, kc: 384, mcPanels: 16,
	fn: func(k int, a, b, c []float32, ldc int) {
		if k <= 0 {
			return
		}
		_ = a[k*12-1]
		_ = b[k*32-1]
		_ = c[11*ldc+31]
		kernel12x32AVX512(k, &a[0], &b[0], &c[0], ldc)
	}}

// kernels lists the micro-kernels this CPU can run, best first.
func kernels() []*kernelSpec {
	var ks []*kernelSpec
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL {
		ks = append(ks, avx512Kernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2Kernel)
	}
	return append(ks, genericKernel)
}

// bestKernel is the kernel weights are packed for.
var bestKernel = kernels()[0]
