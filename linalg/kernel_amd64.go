package linalg

import "golang.org/x/sys/cpu"

// hasAVX2FMA reports whether the assembly micro-kernel can run.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func kernel6x16AVX2(k int, a, b, c *float32, ldc int)

func kernel(k int, a, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	if !hasAVX2FMA {
		kernelGo(k, a, b, c, ldc)
		return
	}
	// Bounds the assembly relies on.
	_ = a[k*mr-1]
	_ = b[k*nr-1]
	_ = c[(mr-1)*ldc+nr-1]
	kernel6x16AVX2(k, &a[0], &b[0], &c[0], ldc)
}
