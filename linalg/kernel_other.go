//go:build !amd64

package linalg

func kernels() []*kernelSpec { return []*kernelSpec{genericKernel} }

var bestKernel = genericKernel
