package vindex

import "unsafe"

// kernel is a register-blocked multiply of mr gallery rows by a panel of w
// queries. fn adds to c (mr rows of w lanes, row-major) the products over
// kdim consecutive dimensions:
//
//	c[r*w+l] += sum_{k<kdim} g[r*stride+k] * a[k*w+l]
//
// where a is the panel (kdim rows of w query values) and stride is the
// distance between gallery rows in bytes. Each lane is one running sum
// updated in dimension order, so results do not depend on how the caller
// blocks the dimensions.
type kernel struct {
	name string
	mr   int // gallery rows per call
	w    int // queries per panel
	kc   int // dimensions per block (keeps a panel slice in L1)
	nb   int // gallery rows per block (keeps the block in L2)
	fn   func(kdim int, a, g *float32, stride int, c *float32)
	// mask sets bit l of out[r] when row r, lane l of tile c is >= thr[l].
	mask func(c, thr *float32, out *uint32)
}

// goKernel is the portable kernel (used when no assembly kernel fits the CPU).
var goKernel = kernel{name: "go", mr: 4, w: 8, kc: 256, nb: 64, fn: kernGo4x8, mask: tileMaskGo4x8}

func kernGo4x8(kdim int, a, g *float32, stride int, c *float32) {
	const mr, w = 4, 8
	cs := unsafe.Slice(c, mr*w)
	as := unsafe.Slice(a, kdim*w)
	st := stride / 4
	gs := unsafe.Slice(g, (mr-1)*st+kdim)
	for r := 0; r < mr; r++ {
		row := gs[r*st : r*st+kdim]
		var acc [w]float32
		copy(acc[:], cs[r*w:r*w+w])
		for k, gv := range row {
			ak := as[k*w : k*w+w : k*w+w]
			acc[0] += gv * ak[0]
			acc[1] += gv * ak[1]
			acc[2] += gv * ak[2]
			acc[3] += gv * ak[3]
			acc[4] += gv * ak[4]
			acc[5] += gv * ak[5]
			acc[6] += gv * ak[6]
			acc[7] += gv * ak[7]
		}
		copy(cs[r*w:r*w+w], acc[:])
	}
}

func tileMaskGo4x8(c, thr *float32, out *uint32) {
	const mr, w = 4, 8
	cs := unsafe.Slice(c, mr*w)
	ts := unsafe.Slice(thr, w)
	os := unsafe.Slice(out, mr)
	for r := 0; r < mr; r++ {
		var m uint32
		for l := 0; l < w; l++ {
			if cs[r*w+l] >= ts[l] {
				m |= 1 << l
			}
		}
		os[r] = m
	}
}
