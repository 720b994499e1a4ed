package vindex

import "golang.org/x/sys/cpu"

// kern6x16 is the AVX2+FMA kernel: 6 gallery rows by 16 queries, 12 YMM
// accumulators.
//
//go:noescape
func kern6x16(kdim int, a, rows *float32, stride int, c *float32)

// kern12x32 is the AVX-512 kernel: 12 gallery rows by 32 queries, 24 ZMM
// accumulators.
//
//go:noescape
func kern12x32(kdim int, a, rows *float32, stride int, c *float32)

//go:noescape
func tileMask6x16(c, thr *float32, out *uint32)

//go:noescape
func tileMask12x32(c, thr *float32, out *uint32)

var (
	avx2Kernel   = kernel{name: "avx2", mr: 6, w: 16, kc: 128, nb: 192, fn: kern6x16, mask: tileMask6x16}
	avx512Kernel = kernel{name: "avx512", mr: 12, w: 32, kc: 128, nb: 192, fn: kern12x32, mask: tileMask12x32}
)

func hasAVX2() bool   { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }
func hasAVX512() bool { return cpu.X86.HasAVX512F && hasAVX2() }

// pickKernel returns the fastest kernel the CPU supports.
func pickKernel() kernel {
	switch {
	case hasAVX512():
		return avx512Kernel
	case hasAVX2():
		return avx2Kernel
	}
	return goKernel
}

// kernels lists every kernel the CPU can run (for tests).
func kernels() []kernel {
	ks := []kernel{goKernel}
	if hasAVX2() {
		ks = append(ks, avx2Kernel)
	}
	if hasAVX512() {
		ks = append(ks, avx512Kernel)
	}
	return ks
}
