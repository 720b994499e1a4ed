// Package linalg holds the float32 kernels the CLIP encoder needs: a blocked,
// parallel matrix multiply against pre-packed weights, and the row-wise
// operations of a transformer (layer norm, softmax, GELU, quick GELU).
//
// The default build is pure Go with an AVX2/FMA micro-kernel on amd64. Build
// with the "openblas" tag to route the matrix multiply through OpenBLAS
// (cblas_sgemm via cgo; needs libopenblas-dev).
package linalg
