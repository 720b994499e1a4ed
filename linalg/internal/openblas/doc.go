// Package openblas calls OpenBLAS's cblas_sgemm through cgo. It is compiled
// only with the "openblas" build tag (needs libopenblas-dev); without it the
// package is empty.
package openblas
