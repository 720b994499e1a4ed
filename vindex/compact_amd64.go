package vindex

import "golang.org/x/sys/cpu"

// dotsVNNI is the AVX-512 VNNI form of dotsGo.
//
//go:noescape
func dotsVNNI(q *int8, codes *uint8, blocks, groups int, out *int32)

func hasVNNI() bool { return cpu.X86.HasAVX512VNNI && hasAVX512() }

// pickDots returns the fastest compact-scan kernel the CPU supports.
func pickDots() dotsKernel {
	if hasVNNI() {
		return dotsKernel{name: "avx512-vnni", fn: func(q []int8, codes []uint8, blocks, groups int, out []int32) {
			if blocks > 0 {
				dotsVNNI(&q[0], &codes[0], blocks, groups, &out[0])
			}
		}}
	}
	return goDots
}

// dotsKernels lists every compact-scan kernel the CPU can run (for tests).
func dotsKernels() []dotsKernel {
	ks := []dotsKernel{goDots}
	if hasVNNI() {
		ks = append(ks, pickDots())
	}
	return ks
}
