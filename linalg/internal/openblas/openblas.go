//go:build openblas

package openblas

/*
#cgo CFLAGS: -I/usr/include/x86_64-linux-gnu/openblas-pthread
#cgo LDFLAGS: -L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas
#include <cblas.h>
*/
import "C"

import "unsafe"

// SgemmNTAcc computes c (m x n) += a (m x k) · bᵀ (b is n x k), all
// row-major, on up to threads OpenBLAS threads.
func SgemmNTAcc(c, a, b []float32, m, n, k, threads int) {
	if m == 0 || n == 0 || k == 0 {
		return
	}
	_ = a[m*k-1]
	_ = b[n*k-1]
	_ = c[m*n-1]
	C.openblas_set_num_threads(C.int(threads))
	C.cblas_sgemm(C.CblasRowMajor, C.CblasNoTrans, C.CblasTrans,
		C.blasint(m), C.blasint(n), C.blasint(k), 1,
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(k),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(k), 1,
		(*C.float)(unsafe.Pointer(&c[0])), C.blasint(n))
}
