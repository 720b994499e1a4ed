//go:build !openblas

package linalg

// Backend names the matrix-multiply implementation compiled in.
const Backend = "go"

func packBackend(p *Packed, at func(row, col int) float32, _ []float32) {
	packPanels(p, at)
}

// gemmAcc accumulates dst += a·B.
func gemmAcc(dst, a []float32, m int, b *Packed, threads int, s *Scratch) {
	gemmPure(dst, a, m, b, threads, s)
}
