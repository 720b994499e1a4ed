package linalg

import (
	"fmt"

	"github.com/imagescope/imagescope/internal/parallel"
)

// kernelSpec is a micro-kernel and its tile and cache block sizes.
type kernelSpec struct {
	name string
	mr   int // rows of A per micro-kernel call
	nr   int // columns of B per micro-kernel call (panel width)
	kc   int // depth of one cache block
	// mcPanels is how many mr-row panels of A one task sweeps while a
	// kc x nr slice of B stays in L1.
	mcPanels int
	// fn computes c[r*ldc+j] += Σ_p a[p*mr+r]·b[p*nr+j] for r < mr, j < nr.
	fn func(k int, a, b, c []float32, ldc int)
}

// maxTile bounds mr*nr over all kernels (edge tiles use a buffer this big).
const maxTile = 16 * 32

// Packed is the right-hand matrix B (K rows, N columns) of C = A·B, stored
// for fast repeated multiplication: in nr-column panels, each panel k-major
// and zero-padded to a multiple of nr columns. Weights are packed once at
// load time.
type Packed struct {
	K, N   int
	spec   *kernelSpec
	panels []float32 // ceil(N/nr) panels of K*nr values (Go kernels)
	//lint:ignore U1000 read by the openblas build (backend_openblas.go)
	wt []float32 // N x K row-major copy (BLAS backend)
}

// PackTransposed packs a weight stored as PyTorch's Linear does: w is N x K
// row-major (out features x in features), so C = A·wᵀ.
func PackTransposed(w []float32, n, k int) *Packed {
	if len(w) != n*k {
		panic(fmt.Sprintf("linalg: PackTransposed: len %d != %d x %d", len(w), n, k))
	}
	p := &Packed{K: k, N: n, spec: bestKernel}
	packBackend(p, func(row, col int) float32 { return w[col*k+row] }, w)
	return p
}

// Pack packs b stored K x N row-major (C = A·b).
func Pack(b []float32, k, n int) *Packed {
	if len(b) != n*k {
		panic(fmt.Sprintf("linalg: Pack: len %d != %d x %d", len(b), k, n))
	}
	p := &Packed{K: k, N: n, spec: bestKernel}
	packBackend(p, func(row, col int) float32 { return b[row*n+col] }, nil)
	return p
}

// packPanels fills p.panels from an element accessor at(k, n).
func packPanels(p *Packed, at func(row, col int) float32) {
	nr := p.spec.nr
	np := (p.N + nr - 1) / nr
	packPanelsInto(make([]float32, np*p.K*nr), p, at)
}

// packPanelsInto packs into buf (np*K*nr values), blocked by the kernel's
// kc: for each depth block, the kc x nr slices of all panels lie one after
// another, so a task sweeping the panels of one block reads memory
// sequentially (and the hardware prefetcher keeps up).
func packPanelsInto(buf []float32, p *Packed, at func(row, col int) float32) {
	nr, kc := p.spec.nr, p.spec.kc
	np := (p.N + nr - 1) / nr
	p.panels = buf[:np*p.K*nr]
	for k0 := 0; k0 < p.K; k0 += kc {
		kk := min(kc, p.K-k0)
		for j := 0; j < np; j++ {
			dst := p.panels[k0*np*nr+j*kk*nr : k0*np*nr+(j+1)*kk*nr]
			for c := 0; c < nr; c++ {
				col := j*nr + c
				if col >= p.N {
					for r := 0; r < kk; r++ {
						dst[r*nr+c] = 0
					}
					continue
				}
				for r := 0; r < kk; r++ {
					dst[r*nr+c] = at(k0+r, col)
				}
			}
		}
	}
}

// Scratch holds buffers reused across matrix multiplies so that a forward
// pass does not allocate per call. The zero value is ready; a Scratch must
// not be used by two goroutines at once.
type Scratch struct {
	apack, bpack, sbuf, obuf []float32
}

func (s *Scratch) grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// Linear computes dst = a·B + bias for a with m rows of B.K columns
// (row-major), writing m x B.N values to dst. bias may be nil. It uses up to
// threads goroutines.
func Linear(dst, a []float32, m int, b *Packed, bias []float32, threads int) {
	new(Scratch).Linear(dst, a, m, b, bias, threads)
}

// LinearAdd computes dst += a·B + bias (bias may be nil): a residual
// connection fused into the matrix multiply.
func LinearAdd(dst, a []float32, m int, b *Packed, bias []float32, threads int) {
	new(Scratch).LinearAdd(dst, a, m, b, bias, threads)
}

// Linear is the package-level Linear reusing s's buffers.
func (s *Scratch) Linear(dst, a []float32, m int, b *Packed, bias []float32, threads int) {
	if len(a) < m*b.K || len(dst) < m*b.N || (bias != nil && len(bias) != b.N) {
		panic(fmt.Sprintf("linalg: Linear: bad sizes a=%d dst=%d bias=%d for m=%d k=%d n=%d",
			len(a), len(dst), len(bias), m, b.K, b.N))
	}
	if m == 0 {
		return
	}
	for i := 0; i < m; i++ {
		row := dst[i*b.N : (i+1)*b.N]
		if bias != nil {
			copy(row, bias)
		} else {
			clear(row)
		}
	}
	gemmAcc(dst, a, m, b, parallel.Workers(threads), s)
}

// LinearAdd is the package-level LinearAdd reusing s's buffers.
func (s *Scratch) LinearAdd(dst, a []float32, m int, b *Packed, bias []float32, threads int) {
	if len(a) < m*b.K || len(dst) < m*b.N || (bias != nil && len(bias) != b.N) {
		panic(fmt.Sprintf("linalg: LinearAdd: bad sizes a=%d dst=%d bias=%d for m=%d k=%d n=%d",
			len(a), len(dst), len(bias), m, b.K, b.N))
	}
	if m == 0 {
		return
	}
	if bias != nil {
		for i := 0; i < m; i++ {
			row := dst[i*b.N : (i+1)*b.N]
			for j, v := range bias {
				row[j] += v
			}
		}
	}
	gemmAcc(dst, a, m, b, parallel.Workers(threads), s)
}

// MatMulNT computes dst (m x n) = a (m x k) · bᵀ where b is n x k, on the
// calling goroutine, with the Go kernels (no BLAS call): for the small
// per-head attention products.
func (s *Scratch) MatMulNT(dst, a []float32, m, k int, b []float32, n int) {
	p := Packed{K: k, N: n, spec: bestKernel}
	np := (n + p.spec.nr - 1) / p.spec.nr
	packPanelsInto(s.grow(&s.bpack, np*k*p.spec.nr), &p, func(row, col int) float32 { return b[col*k+row] })
	clear(dst[:m*n])
	gemmPure(dst, a, m, &p, 1, s)
}

// MatMulNN computes dst (m x n) = a (m x k) · b (k x n) on the calling
// goroutine with the Go kernels.
func (s *Scratch) MatMulNN(dst, a []float32, m, k int, b []float32, n int) {
	p := Packed{K: k, N: n, spec: bestKernel}
	np := (n + p.spec.nr - 1) / p.spec.nr
	packPanelsInto(s.grow(&s.bpack, np*k*p.spec.nr), &p, func(row, col int) float32 { return b[row*n+col] })
	clear(dst[:m*n])
	gemmPure(dst, a, m, &p, 1, s)
}

// gemmPure accumulates dst += a·B with the packed panels.
func gemmPure(dst, a []float32, m int, b *Packed, threads int, s *Scratch) {
	K, N := b.K, b.N
	sp := b.spec
	mr, nr, kc, mcPanels := sp.mr, sp.nr, sp.kc, sp.mcPanels
	mp := (m + mr - 1) / mr
	np := (N + nr - 1) / nr
	// Pack A into mr-row panels, k-major, zero-padded.
	apBuf := s.grow(&s.apack, mp*K*mr)
	ap := &apBuf
	packA := func(i0, i1 int) {
		for i := i0; i < i1; i++ {
			dstp := (*ap)[i*K*mr : (i+1)*K*mr]
			rows := min(mr, m-i*mr)
			if rows < mr {
				clear(dstp)
			}
			src := a[i*mr*K:]
			switch {
			case rows == 12 && mr == 12:
				pack12(dstp, src, K)
				continue
			case rows == 6 && mr == 6:
				pack6(dstp, src, K)
				continue
			}
			// k outer, rows inner: sequential writes, mr sequential read
			// streams.
			for k := 0; k < K; k++ {
				d := dstp[k*mr : k*mr+rows]
				for r := range d {
					d[r] = src[r*K+k]
				}
			}
		}
	}
	mBlocks := (mp + mcPanels - 1) / mcPanels
	// Split the N panels so that there are a few tasks per thread.
	want := threads * 4
	nSplit := (want + mBlocks - 1) / mBlocks
	if nSplit > np {
		nSplit = np
	}
	if nSplit < 1 {
		nSplit = 1
	}
	nbPanels := (np + nSplit - 1) / nSplit
	nSplit = (np + nbPanels - 1) / nbPanels
	tasks := mBlocks * nSplit

	task := func(t int, tmp *[maxTile]float32) {
		mb, nb := t/nSplit, t%nSplit
		i0, i1 := mb*mcPanels, min((mb+1)*mcPanels, mp)
		j0, j1 := nb*nbPanels, min((nb+1)*nbPanels, np)
		for k0 := 0; k0 < K; k0 += kc {
			kk := min(kc, K-k0)
			for j := j0; j < j1; j++ {
				bp := b.panels[k0*np*nr+j*kk*nr:]
				col := j * nr
				fullN := col+nr <= N
				for i := i0; i < i1; i++ {
					apan := (*ap)[i*K*mr+k0*mr:]
					row := i * mr
					if fullN && row+mr <= m {
						sp.fn(kk, apan, bp, dst[row*N+col:], N)
						continue
					}
					clear(tmp[:])
					sp.fn(kk, apan, bp, tmp[:], nr)
					for r := 0; r < mr && row+r < m; r++ {
						d := dst[(row+r)*N+col : (row+r)*N+min(col+nr, N)]
						for c := range d {
							d[c] += tmp[r*nr+c]
						}
					}
				}
			}
		}
	}
	if threads <= 1 || tasks == 1 && mp < 4 {
		packA(0, mp)
		var tmp [maxTile]float32
		for t := 0; t < tasks; t++ {
			task(t, &tmp)
		}
		return
	}
	parallel.Chunks(min(threads, mp), mp, packA)
	workers := max(1, min(threads, tasks))
	tmps := make([][maxTile]float32, workers)
	parallel.For(workers, tasks, func(w, t int) { task(t, &tmps[w]) })
}

// kernelGo is the portable micro-kernel for any tile shape.
func kernelGo(mr, nr int) func(k int, a, b, c []float32, ldc int) {
	return func(k int, a, b, c []float32, ldc int) {
		var acc [maxTile]float32
		for p := 0; p < k; p++ {
			bv := b[p*nr : p*nr+nr]
			av := a[p*mr : p*mr+mr]
			for r, x := range av {
				row := acc[r*nr : r*nr+nr]
				for j, y := range bv {
					row[j] += x * y
				}
			}
		}
		for r := 0; r < mr; r++ {
			row := c[r*ldc : r*ldc+nr]
			for j := range row {
				row[j] += acc[r*nr+j]
			}
		}
	}
}

// genericKernel is the pure-Go kernel used where no assembly applies.
var genericKernel = &kernelSpec{name: "go", mr: 4, nr: 16, kc: 256, mcPanels: 24, fn: kernelGo(4, 16)}

// MatMulNT computes dst (m x n) = a (m x k) · bᵀ where b is n x k, on the
// calling goroutine.
func MatMulNT(dst, a []float32, m, k int, b []float32, n int) {
	new(Scratch).MatMulNT(dst, a, m, k, b, n)
}

// MatMulNN computes dst (m x n) = a (m x k) · b (k x n) on the calling
// goroutine.
func MatMulNN(dst, a []float32, m, k int, b []float32, n int) {
	new(Scratch).MatMulNN(dst, a, m, k, b, n)
}

// pack12 packs 12 full rows of a (row stride K) into a k-major 12-row panel.
func pack12(dst, src []float32, K int) {
	r0 := src[0*K : 1*K]
	r1 := src[1*K : 2*K][:len(r0)]
	r2 := src[2*K : 3*K][:len(r0)]
	r3 := src[3*K : 4*K][:len(r0)]
	r4 := src[4*K : 5*K][:len(r0)]
	r5 := src[5*K : 6*K][:len(r0)]
	r6 := src[6*K : 7*K][:len(r0)]
	r7 := src[7*K : 8*K][:len(r0)]
	r8 := src[8*K : 9*K][:len(r0)]
	r9 := src[9*K : 10*K][:len(r0)]
	r10 := src[10*K : 11*K][:len(r0)]
	r11 := src[11*K : 12*K][:len(r0)]
	dst = dst[:12*len(r0)]
	for k := range r0 {
		d := dst[k*12 : k*12+12 : k*12+12]
		d[0], d[1], d[2], d[3] = r0[k], r1[k], r2[k], r3[k]
		d[4], d[5], d[6], d[7] = r4[k], r5[k], r6[k], r7[k]
		d[8], d[9], d[10], d[11] = r8[k], r9[k], r10[k], r11[k]
	}
}

// pack6 packs 6 full rows of a (row stride K) into a k-major 6-row panel.
func pack6(dst, src []float32, K int) {
	r0 := src[0*K : 1*K]
	r1 := src[1*K : 2*K][:len(r0)]
	r2 := src[2*K : 3*K][:len(r0)]
	r3 := src[3*K : 4*K][:len(r0)]
	r4 := src[4*K : 5*K][:len(r0)]
	r5 := src[5*K : 6*K][:len(r0)]
	dst = dst[:6*len(r0)]
	for k := range r0 {
		d := dst[k*6 : k*6+6 : k*6+6]
		d[0], d[1], d[2], d[3], d[4], d[5] = r0[k], r1[k], r2[k], r3[k], r4[k], r5[k]
	}
}
