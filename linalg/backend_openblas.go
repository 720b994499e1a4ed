//go:build openblas

package linalg

import "github.com/imagescope/imagescope/linalg/internal/openblas"

// Backend names the matrix-multiply implementation compiled in.
const Backend = "openblas"

// packBackend keeps B as an N x K row-major matrix for cblas_sgemm.
func packBackend(p *Packed, at func(row, col int) float32, wt []float32) {
	p.wt = transposedCopy(p, at, wt)
}

// transposedCopy returns the N x K row-major form of B.
func transposedCopy(p *Packed, at func(row, col int) float32, wt []float32) []float32 {
	if wt != nil {
		return append([]float32(nil), wt...)
	}
	out := make([]float32, p.N*p.K)
	for n := 0; n < p.N; n++ {
		for k := 0; k < p.K; k++ {
			out[n*p.K+k] = at(k, n)
		}
	}
	return out
}

// gemmAcc accumulates dst += a·B with cblas_sgemm (beta = 1).
func gemmAcc(dst, a []float32, m int, b *Packed, threads int, _ *Scratch) {
	openblas.SgemmNTAcc(dst, a, b.wt, m, b.N, b.K, threads)
}
