//go:build !amd64

package vindex

func pickKernel() kernel { return goKernel }

func kernels() []kernel { return []kernel{goKernel} }

func pickDots() dotsKernel { return goDots }

func dotsKernels() []dotsKernel { return []dotsKernel{goDots} }
