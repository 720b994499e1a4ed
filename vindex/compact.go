package vindex

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync/atomic"

	"github.com/imagescope/imagescope/internal/parallel"
)

// A compact copy of the searched matrix makes a single query's scan cheap:
// each gallery row r is stored as 8-bit codes g_r with a scale alpha_r
// (alpha_r g_r is the row rounded to the nearest multiple of
// alpha_r = max|row|/127), a quarter of the float32 bytes. A query m is
// rounded the same way to beta q. Then, exactly,
//
//	m . row_r = alpha_r beta (q . g_r) + alpha_r (m - beta q) . g_r + m . (row_r - alpha_r g_r)
//
// and by Cauchy-Schwarz the last two terms are at most
// ||m - beta q|| ||alpha_r g_r|| + ||m|| ||row_r - alpha_r g_r|| in size;
// both row norms are stored per row (rounded up). Adding the largest error
// of the float32 score itself (sequential fused multiply-adds over d
// dimensions: at most 1.01 d 2^-24 ||m|| ||row_r||) gives, for every row, an
// interval [lo_r, hi_r] that provably holds the float32 score the exact
// path computes.
//
// The scan keeps the k largest lo_r seen so far; their smallest, T, is a
// lower bound of the k-th best exact score, so a row with hi_r < T cannot
// be in the top k. The rows that survive (a few thousand of a million on
// typical data) are re-scored with the exact float32 kernel, and the top k
// of those is the exact result, scores and tie order included.

const compactRows = 16 // gallery rows per code block (one 512-bit lane each)

// dotsKernel computes, for blocks of compactRows rows, the integer dot
// products of a query's codes with each row's codes (offset by 128).
type dotsKernel struct {
	name string
	fn   func(q []int8, codes []uint8, blocks, groups int, out []int32)
}

var goDots = dotsKernel{name: "go", fn: dotsGo}

// dotsGo is the portable compact-scan kernel. The codes of a block are
// laid out as groups x compactRows rows x 4 bytes (4 dimensions per group),
// each code stored as code+128; out receives sum_i (code+128) * q[i].
func dotsGo(q []int8, codes []uint8, blocks, groups int, out []int32) {
	const bs = compactRows * 4
	for b := 0; b < blocks; b++ {
		blk := codes[b*groups*bs : (b+1)*groups*bs]
		var acc [compactRows]int32
		for g := 0; g < groups; g++ {
			q0, q1, q2, q3 := int32(q[4*g]), int32(q[4*g+1]), int32(q[4*g+2]), int32(q[4*g+3])
			s := blk[g*bs : g*bs+bs : g*bs+bs]
			for r := 0; r < compactRows; r++ {
				acc[r] += int32(s[4*r])*q0 + int32(s[4*r+1])*q1 + int32(s[4*r+2])*q2 + int32(s[4*r+3])*q3
			}
		}
		copy(out[b*compactRows:], acc[:])
	}
}

// compact is the 8-bit copy of an index's searched matrix.
type compact struct {
	groups int // padded dimension / 4 (a multiple of 4)
	blocks int
	codes  []uint8
	scale  []float32 // alpha_r
	qnorm  []float32 // >= ||alpha_r g_r||
	enorm  []float32 // >= ||row_r - alpha_r g_r||
	dots   dotsKernel
	// pair: the codes are of the fused rows (1-tau) v + tau c computed from
	// separate image and caption matrices, whose exact scores are then
	// computed from v and c; snorm[r] >= ||v_r|| + ||c_r||.
	pair  bool
	tau   float32
	snorm []float32
}

// bytes is the memory the compact copy holds.
func (c *compact) bytes() int64 {
	return int64(len(c.codes)) + 4*int64(len(c.scale)+len(c.qnorm)+len(c.enorm)+len(c.snorm))
}

// up returns a float32 not below x (x >= 0).
func up(x float64) float32 {
	f := float32(x * (1 + 1e-9))
	if float64(f) < x {
		f = math.Nextafter32(f, float32(math.Inf(1)))
	}
	return f
}

// buildCompact quantises the rows of src, or, with cap, the fused rows
// (1-tau) src + tau cap.
func buildCompact(ctx context.Context, src, cap []float32, tau float32, n, d, threads int, dots dotsKernel) (*compact, error) {
	groups := (d + 15) / 16 * 4
	blocks := (n + compactRows - 1) / compactRows
	bs := groups * compactRows * 4
	c := &compact{
		groups: groups, blocks: blocks, dots: dots,
		codes: make([]uint8, blocks*bs),
		scale: make([]float32, n), qnorm: make([]float32, n), enorm: make([]float32, n),
	}
	if cap != nil {
		c.pair, c.tau, c.snorm = true, tau, make([]float32, n)
	}
	var bad atomic.Int64
	bad.Store(-1)
	err := forQueries(ctx, threads, blocks, func(b int) {
		var fused []float32
		if cap != nil {
			fused = make([]float32, d)
		}
		blk := c.codes[b*bs : (b+1)*bs]
		for i := range blk {
			blk[i] = 128 // code 0: padding dimensions and rows add nothing
		}
		for r := 0; r < compactRows; r++ {
			row := b*compactRows + r
			if row >= n {
				break
			}
			v := src[row*d : (row+1)*d]
			if cap != nil {
				cv := cap[row*d : (row+1)*d]
				var vn, cn float64
				for i := range v {
					vn += float64(v[i]) * float64(v[i])
					cn += float64(cv[i]) * float64(cv[i])
				}
				c.snorm[row] = up(math.Sqrt(vn) + math.Sqrt(cn))
				copy(fused, v)
				FuseRows(fused, cv, tau)
				v = fused
			}
			var mx float64
			for _, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					bad.Store(int64(row))
					return
				}
				mx = max(mx, math.Abs(float64(x)))
			}
			if mx == 0 {
				continue
			}
			alpha := float32(mx / 127)
			a := float64(alpha)
			inv := 1 / a
			var qn, en float64
			for i, x := range v {
				// Any rounding works (the bound uses the actual error);
				// nearest keeps it small.
				q := math.Max(-127, math.Min(127, math.RoundToEven(float64(x)*inv)))
				blk[(i/4)*compactRows*4+r*4+i%4] = uint8(int(q) + 128)
				deq := a * q
				qn += deq * deq
				e := float64(x) - deq
				en += e * e
			}
			c.scale[row] = alpha
			c.qnorm[row] = up(math.Sqrt(qn))
			c.enorm[row] = up(math.Sqrt(en))
		}
	})
	if err != nil {
		return nil, err
	}
	if r := bad.Load(); r >= 0 {
		return nil, fmt.Errorf("vindex: image %d holds a non-finite value", r)
	}
	return c, nil
}

// compactQuery is one query vector rounded for the compact scan.
type compactQuery struct {
	q     []int8
	corr  int64   // 128 * sum q (the codes' offset)
	beta  float64 // q's unit
	mnorm float64 // ||m||
	qerr  float64 // >= ||m - beta q||
	rerr  float64 // float32 score error per unit of ||row||: 1.01 d 2^-24 ||m||
	// perr: with separate image and caption matrices, the error per unit
	// of ||v_r|| + ||c_r|| between m . fused_r and the float32 score of
	// the two passes (2d products, rounded weights, rounded fused rows).
	perr float64
}

func (c *compact) query(m []float32) compactQuery {
	cq := compactQuery{q: make([]int8, c.groups*4)}
	var mx, mn float64
	for _, x := range m {
		mx = max(mx, math.Abs(float64(x)))
		mn += float64(x) * float64(x)
	}
	cq.mnorm = math.Sqrt(mn) * (1 + 1e-9)
	if c.pair {
		cq.perr = 1.01 * float64(2*len(m)+8) * 0x1p-24 * cq.mnorm
	} else {
		cq.rerr = 1.01 * float64(len(m)) * 0x1p-24 * cq.mnorm
	}
	if mx == 0 {
		return cq
	}
	cq.beta = mx / 127
	var e2 float64
	for i, x := range m {
		q := math.Max(-127, math.Min(127, math.Round(float64(x)/cq.beta)))
		cq.q[i] = int8(q)
		cq.corr += 128 * int64(q)
		e := float64(x) - cq.beta*q
		e2 += e * e
	}
	cq.qerr = math.Sqrt(e2) * (1 + 1e-9)
	return cq
}

// compactChunk is the number of code blocks one scan step covers.
const compactChunk = 64

// lowHeap keeps the k largest lower bounds (a min-heap; root = k-th largest).
type lowHeap struct {
	k int
	v []float64
}

func (h *lowHeap) threshold() float64 {
	if len(h.v) < h.k {
		return math.Inf(-1)
	}
	return h.v[0]
}

func (h *lowHeap) push(x float64) {
	v := h.v
	if len(v) < h.k {
		v = append(v, x)
		for c := len(v) - 1; c > 0; {
			p := (c - 1) / 2
			if v[p] <= v[c] {
				break
			}
			v[p], v[c] = v[c], v[p]
			c = p
		}
		h.v = v
		return
	}
	if x <= v[0] {
		return
	}
	v[0] = x
	for p := 0; ; {
		l := 2*p + 1
		if l >= len(v) {
			break
		}
		w := l
		if r := l + 1; r < len(v) && v[r] < v[l] {
			w = r
		}
		if v[p] <= v[w] {
			break
		}
		v[p], v[w] = v[w], v[p]
		p = w
	}
}

// candidates scans the compact copy for one query and returns, sorted, the
// gallery positions whose score may be among the k best (excluded
// positions never are).
func (c *compact) candidates(ctx context.Context, m []float32, exclude []int32, n, k, threads int) ([]int32, error) {
	cq := c.query(m)
	type part struct {
		low  lowHeap
		pos  []int32
		high []float64
	}
	chunks := (c.blocks + compactChunk - 1) / compactChunk
	t := max(1, min(threads, chunks))
	parts := make([]*part, t)
	dots := make([][]int32, t)
	for wi := range parts {
		parts[wi] = &part{low: lowHeap{k: k, v: make([]float64, 0, k)}}
		dots[wi] = make([]int32, compactChunk*compactRows)
	}
	bs := c.groups * compactRows * 4
	if err := parallel.ForCtx(ctx, t, chunks, func(wi, ch int) {
		p, dots := parts[wi], dots[wi]
		b0 := ch * compactChunk
		nb := min(compactChunk, c.blocks-b0)
		c.dots.fn(cq.q, c.codes[b0*bs:(b0+nb)*bs], nb, c.groups, dots)
		r0 := b0 * compactRows
		r1 := min(n, r0+nb*compactRows)
		thr := p.low.threshold()
		for r := r0; r < r1; r++ {
			x := float64(int64(dots[r-r0])-cq.corr) * cq.beta * float64(c.scale[r])
			qn, en := float64(c.qnorm[r]), float64(c.enorm[r])
			bound := cq.qerr*qn + cq.mnorm*en + cq.rerr*(qn+en)
			if c.pair {
				bound += cq.perr * float64(c.snorm[r])
			}
			hi := x + bound
			if hi < thr {
				continue
			}
			if len(exclude) > 0 {
				if _, found := slices.BinarySearch(exclude, int32(r)); found {
					continue
				}
			}
			p.pos = append(p.pos, int32(r))
			p.high = append(p.high, hi)
			p.low.push(x - bound)
			thr = p.low.threshold()
		}
	}); err != nil {
		return nil, fmt.Errorf("vindex: search: %w", err)
	}
	// T: the k-th largest lower bound over all rows (every row's lower
	// bound that could be among the k largest is in some part's heap).
	all := lowHeap{k: k}
	for _, p := range parts {
		for _, x := range p.low.v {
			all.push(x)
		}
	}
	thr := all.threshold()
	var out []int32
	for _, p := range parts {
		for i, hi := range p.high {
			if hi >= thr {
				out = append(out, p.pos[i])
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Compact builds the 8-bit copy of the fused gallery rows
// (1-tau) v + tau c that single queries with caption weight tau scan to
// pick candidates before exact re-scoring (see the package documentation);
// results do not change, bit for bit. Queries with another tau, batches
// and full rankings take the exact path as before. On a fused index tau
// must be its FusedTau; without caption vectors tau is ignored (the rows
// are the image vectors). Call it once the vectors are final; it adds a
// quarter of the float32 image vectors' memory.
func (ix *Index) Compact(ctx context.Context, tau float32) error {
	return ix.compactWith(ctx, tau, pickDots())
}

func (ix *Index) compactWith(ctx context.Context, tau float32, dots dotsKernel) error {
	if err := ix.Validate(); err != nil {
		return err
	}
	if math.IsNaN(float64(tau)) || tau < 0 || tau > 1 {
		return fmt.Errorf("vindex: compact: tau %v is outside [0, 1]", tau)
	}
	if ix.Fused && tau != ix.FusedTau {
		return fmt.Errorf("vindex: compact: tau %v, but the index is fused at tau %v", tau, ix.FusedTau)
	}
	var cap []float32
	if ix.HasCaption {
		cap = ix.Caption
	}
	if c := ix.compact; c != nil && c.pair == (cap != nil) && (!c.pair || c.tau == tau) && c.dots.name == dots.name {
		return nil // already built for this tau
	}
	if ix.disk != nil {
		if c := ix.compact; c != nil && c.pair == ix.HasCaption && (!c.pair || c.tau == tau) {
			c.dots = dots
			return nil
		}
		return fmt.Errorf("vindex: compact: the vectors are on disk (in %s); load the index into memory to build a compact copy for tau %v", ix.disk.name, tau)
	}
	c, err := buildCompact(ctx, ix.Image, cap, tau, ix.Len(), ix.Dim, ix.threads(), dots)
	if err != nil {
		return err
	}
	ix.compact = c
	return nil
}

// compactServes reports whether the compact copy answers a prepared
// unrestricted query.
func (ix *Index) compactServes(p *prepared) bool {
	c := ix.compact
	if c == nil {
		return false
	}
	if c.pair {
		return p.b != nil && p.tau == c.tau
	}
	return p.b == nil
}

// CompactBytes is the memory held by the compact copy (0 without one).
func (ix *Index) CompactBytes() int64 {
	if ix.compact == nil {
		return 0
	}
	return ix.compact.bytes()
}

// CompactKernelName names the kernel the compact scan uses on this CPU.
func CompactKernelName() string { return pickDots().name }

// Fuse replaces the image and caption vectors by one matrix of fused rows
// (1-tau) v + tau c for a fixed tau, halving the memory and the bytes a
// query reads. Afterwards queries must ask for that tau (others get an
// error, since the separate vectors are gone); their scores are the fused
// score evaluated as m . ((1-tau) v + tau c), equal to the unfused form up
// to float32 rounding (a different summation order: about 1e-7 at small
// scores, a few 1e-6 at scores near 0.6 over 768 dimensions, so near-ties
// can swap). Images without a caption vector keep
// (1-tau) v, as in the unfused score. Without caption vectors there is
// nothing to fuse (tau is then treated as 0) and Fuse does nothing.
func (ix *Index) Fuse(tau float32) error {
	if err := ix.Validate(); err != nil {
		return err
	}
	if math.IsNaN(float64(tau)) || tau < 0 || tau > 1 {
		return fmt.Errorf("vindex: fuse: tau %v is outside [0, 1]", tau)
	}
	if ix.Fused {
		if tau == ix.FusedTau {
			return nil
		}
		return fmt.Errorf("vindex: fuse: index is already fused at tau %v", ix.FusedTau)
	}
	if !ix.HasCaption {
		return nil
	}
	if ix.disk != nil {
		return fmt.Errorf("vindex: fuse: the vectors are on disk (in %s)", ix.disk.name)
	}
	FuseRows(ix.Image, ix.Caption, tau)
	ix.Fused, ix.FusedTau = true, tau
	ix.HasCaption, ix.Caption = false, nil
	ix.compact = nil
	return nil
}

// FuseRows overwrites img with (1-tau) img + tau cap, element by element;
// a loader that reads vectors in pieces applies it per row.
func FuseRows(img, cap []float32, tau float32) {
	a := 1 - tau
	for i, c := range cap {
		img[i] = a*img[i] + tau*c
	}
}

// searchCompact answers one unrestricted query: compact scan for the
// candidates, then the exact kernel on those only.
func (ix *Index) searchCompact(ctx context.Context, kern kernel, p *prepared, k, threads int) ([]Hit, error) {
	cand, err := ix.compact.candidates(ctx, p.m, p.exclude, ix.Len(), k, threads)
	if err != nil {
		return nil, err
	}
	if c := ix.Counters; c != nil {
		c.CompactQueries.Add(1)
		c.Rescored.Add(int64(len(cand)))
	}
	// Re-score in parallel: each thread takes a contiguous share of the
	// candidates and keeps its top k; merged by (score, position), the
	// shares give exactly the top k of all candidates.
	parts := max(1, min(threads, len(cand)/rescoreShare))
	exact := make([]prepared, parts)
	qis := make([]int, parts)
	for i := range exact {
		exact[i] = prepared{a: p.a, b: p.b, restrict: cand[len(cand)*i/parts : len(cand)*(i+1)/parts]}
		qis[i] = i
	}
	out := make([][]Hit, parts)
	if err := ix.searchRestricted(ctx, kern, exact, qis, k, parts, out); err != nil {
		return nil, err
	}
	if parts == 1 {
		return out[0], nil
	}
	var scores []float32
	var idx []int32
	for _, hs := range out {
		for _, h := range hs {
			scores = append(scores, h.Score)
			idx = append(idx, int32(h.Index))
		}
	}
	return ix.hits(scores, idx, k), nil
}

// rescoreShare is the fewest candidates worth a thread of their own.
const rescoreShare = 256
