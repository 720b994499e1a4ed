//go:build !amd64

package linalg

func kernel(k int, a, b, c []float32, ldc int) {
	if k <= 0 {
		return
	}
	kernelGo(k, a, b, c, ldc)
}
