//go:build openblas

package linalg

import "github.com/imagescope/imagescope/linalg/internal/openblas"

// Backend names the matrix-multiply implementation compiled in.
const Backend = "openblas"

// packBackend keeps B as an N x K row-major matrix for cblas_sgemm.
func packBackend(p *Packed, at func(row, col int) float32, wt []float32) {
	p.wt = transposedCopy(p, at, wt)
}

// gemmAcc accumulates dst += a·B with cblas_sgemm (beta = 1).
func gemmAcc(dst, a []float32, m int, b *Packed, threads int, _ *Scratch) {
	openblas.SgemmNTAcc(dst, a, b.wt, m, b.N, b.K, threads)
}
