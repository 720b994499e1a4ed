package vindex

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"github.com/imagescope/imagescope/internal/parallel"
)

// panels packs the batch's query vectors into kernel panels: panel p holds
// dimension k of lane l at [p*d*w + k*w + l]. The second result tells,
// per panel, whether any of its queries has a caption term.
func packPanels(preps []prepared, batch []int, d, w int, caption bool) ([]float32, []bool) {
	np := (len(batch) + w - 1) / w
	out := make([]float32, np*d*w)
	any := make([]bool, np)
	for bi, qi := range batch {
		v := preps[qi].a
		if caption {
			v = preps[qi].b
			if v == nil {
				continue
			}
		}
		p, l := bi/w, bi%w
		any[p] = true
		base := out[p*d*w:]
		for k, x := range v {
			base[k*w+l] = x
		}
	}
	return out, any
}

// worker holds one goroutine's scratch space.
type worker struct {
	c       []float32 // block scores: [panel][group][row][lane]
	tailImg []float32 // zero-padded copies of a partial group of rows
	tailCap []float32
	heaps   []*topK // per query of the batch (top-k mode)
	thr     []float32
	masks   []uint32
	groups  [][]float32
	// Scratch for vectors read from disk: rows as stored, then split.
	raw, bimg, bcap []float32
	err             error // the first read error
}

// block returns the image and caption vectors of gallery rows [r0, r1)
// (caption nil without separate captions): views of the matrices, or, when
// the vectors stay on disk, copies read into the worker's scratch.
func (ix *Index) block(wk *worker, r0, r1 int) (img, cap []float32, err error) {
	d := ix.Dim
	if ix.disk == nil {
		if ix.HasCaption {
			cap = ix.Caption[r0*d : r1*d]
		}
		return ix.Image[r0*d : r1*d], cap, nil
	}
	rf := ix.disk.rowFloats
	m := r1 - r0
	if len(wk.raw) < m*rf {
		wk.raw = make([]float32, m*rf)
		wk.bimg = make([]float32, m*d)
		if ix.HasCaption {
			wk.bcap = make([]float32, m*d)
		}
	}
	if err := ix.disk.read(r0, r1, wk.raw, ix.Counters); err != nil {
		return nil, nil, err
	}
	for i := 0; i < m; i++ {
		copy(wk.bimg[i*d:(i+1)*d], wk.raw[i*rf:i*rf+d])
		if ix.HasCaption {
			copy(wk.bcap[i*d:(i+1)*d], wk.raw[i*rf+d:(i+1)*rf])
		}
	}
	if ix.HasCaption {
		cap = wk.bcap[:m*d]
	}
	return wk.bimg[:m*d], cap, nil
}

// multiplyBlock computes the scores of gallery rows [r0, r1) for every
// panel into wk.c; groups is the number of mr-row groups.
func (ix *Index) multiplyBlock(kern kernel, wk *worker, apan, bpan []float32, hasB []bool, np, r0, r1 int) (int, error) {
	d, mr, w := ix.Dim, kern.mr, kern.w
	bimg, bcap, err := ix.block(wk, r0, r1)
	if err != nil {
		return 0, err
	}
	groups := (r1 - r0 + mr - 1) / mr
	tile := mr * w
	c := wk.c[:np*groups*tile]
	clear(c)
	stride := d * 4
	// rows returns the row group's first value (a tail group is copied into
	// zero-padded scratch so the kernel can read mr rows).
	rows := func(src, tail []float32, g int) []float32 {
		start := g * mr
		if r0+start+mr <= r1 {
			return src[start*d:]
		}
		clear(tail)
		copy(tail, src[start*d:(r1-r0)*d])
		return tail
	}
	// Loop order: a panel's dimension slice stays in L1 while the block's
	// row groups (in L2) stream past it.
	pass := func(src, tail, pan []float32, only []bool) {
		grs := wk.groups[:groups]
		for g := range grs {
			grs[g] = rows(src, tail, g)
		}
		for kb := 0; kb < d; kb += kern.kc {
			kl := min(kern.kc, d-kb)
			for p := 0; p < np; p++ {
				if only != nil && !only[p] {
					continue
				}
				a := &pan[p*d*w+kb*w]
				cp := c[p*groups*tile:]
				for g, gr := range grs {
					kern.fn(kl, a, &gr[kb], stride, &cp[g*tile])
				}
			}
		}
	}
	pass(bimg, wk.tailImg, apan, nil)
	if bpan != nil {
		pass(bcap, wk.tailCap, bpan, hasB)
	}
	return groups, nil
}

// searchFull answers queries without a candidate restriction by
// multiplying them against the whole gallery, block by block.
func (ix *Index) searchFull(ctx context.Context, kern kernel, preps []prepared, batch []int, k, threads int, out [][]Hit) error {
	if k <= 0 {
		// Full rankings need every score; bound the scratch by going in
		// small batches.
		const fullBatch = 64
		for s := 0; s < len(batch); s += fullBatch {
			if err := ix.rankAll(ctx, kern, preps, batch[s:min(s+fullBatch, len(batch))], threads, out); err != nil {
				return err
			}
		}
		return nil
	}
	d, n, w, mr := ix.Dim, ix.Len(), kern.w, kern.mr
	nq := len(batch)
	np := (nq + w - 1) / w
	apan, _ := packPanels(preps, batch, d, w, false)
	var bpan []float32
	var hasB []bool
	if ix.HasCaption {
		bpan, hasB = packPanels(preps, batch, d, w, true)
		anyB := false
		for _, h := range hasB {
			anyB = anyB || h
		}
		if !anyB {
			bpan = nil
		}
	}
	nb := kern.nb
	blocks := (n + nb - 1) / nb
	t := max(1, min(threads, blocks))
	workers := make([]*worker, t)
	for wi := range workers {
		wk := &worker{
			c:       make([]float32, np*((nb+mr-1)/mr)*mr*w),
			tailImg: make([]float32, mr*d),
			tailCap: make([]float32, mr*d),
			heaps:   make([]*topK, nq),
			thr:     make([]float32, w),
			masks:   make([]uint32, mr),
			groups:  make([][]float32, (nb+mr-1)/mr),
		}
		for i := range wk.heaps {
			wk.heaps[i] = newTopK(k)
		}
		workers[wi] = wk
	}
	if err := ix.eachBlock(ctx, kern, workers, apan, bpan, hasB, np, nb, func(wk *worker, groups, r0, r1 int) {
		ix.collect(kern, wk, preps, batch, groups, r0, r1)
	}); err != nil {
		return err
	}
	// Merge the workers' heaps.
	for bi, qi := range batch {
		var keys []uint64
		for _, wk := range workers {
			keys = append(keys, wk.heaps[bi].keys...)
		}
		out[qi] = ix.hitsFromKeys(keys, k)
	}
	return nil
}

// collect pushes a block's scores into the worker's per-query heaps. A
// vector compare against each lane's current threshold (its k-th best
// score) marks the few scores that can enter; only those are looked at.
func (ix *Index) collect(kern kernel, wk *worker, preps []prepared, batch []int, groups, r0, r1 int) {
	mr, w := kern.mr, kern.w
	tile := mr * w
	nq := len(batch)
	np := (nq + w - 1) / w
	thr, masks := wk.thr, wk.masks
	for p := 0; p < np; p++ {
		for g := 0; g < groups; g++ {
			for l := 0; l < w; l++ {
				if bi := p*w + l; bi < nq {
					thr[l] = wk.heaps[bi].thr
				} else {
					thr[l] = float32(math.Inf(1))
				}
			}
			t := wk.c[(p*groups+g)*tile:]
			kern.mask(&t[0], &thr[0], &masks[0])
			for i, m := range masks {
				r := r0 + g*mr + i
				if r >= r1 {
					break
				}
				for m != 0 {
					l := bits.TrailingZeros32(m)
					m &= m - 1
					bi := p*w + l
					if ex := preps[batch[bi]].exclude; len(ex) > 0 {
						if _, found := slices.BinarySearch(ex, int32(r)); found {
							continue
						}
					}
					wk.heaps[bi].push(t[i*w+l], int32(r))
				}
			}
		}
	}
}

// rankAll computes every score of a small batch and sorts them.
func (ix *Index) rankAll(ctx context.Context, kern kernel, preps []prepared, batch []int, threads int, out [][]Hit) error {
	d, n, w, mr := ix.Dim, ix.Len(), kern.w, kern.mr
	nq := len(batch)
	np := (nq + w - 1) / w
	apan, _ := packPanels(preps, batch, d, w, false)
	var bpan []float32
	var hasB []bool
	if ix.HasCaption {
		bpan, hasB = packPanels(preps, batch, d, w, true)
	}
	scores := make([][]float32, nq)
	for i := range scores {
		scores[i] = make([]float32, n)
	}
	nb := kern.nb
	blocks := (n + nb - 1) / nb
	t := max(1, min(threads, blocks))
	workers := make([]*worker, t)
	for wi := range workers {
		workers[wi] = &worker{
			c:       make([]float32, np*((nb+mr-1)/mr)*mr*w),
			tailImg: make([]float32, mr*d),
			tailCap: make([]float32, mr*d),
			groups:  make([][]float32, (nb+mr-1)/mr),
		}
	}
	tile := mr * w
	if err := ix.eachBlock(ctx, kern, workers, apan, bpan, hasB, np, nb, func(wk *worker, groups, r0, r1 int) {
		for bi := range batch {
			p, l := bi/w, bi%w
			dst := scores[bi]
			for r := r0; r < r1; r++ {
				g, i := (r-r0)/mr, (r-r0)%mr
				dst[r] = wk.c[(p*groups+g)*tile+i*w+l]
			}
		}
	}); err != nil {
		return err
	}
	return forQueries(ctx, threads, len(batch), func(bi int) {
		qi := batch[bi]
		ex := preps[qi].exclude
		idx := make([]int32, 0, n-len(ex))
		sc := make([]float32, 0, n-len(ex))
		e := 0
		for r := 0; r < n; r++ {
			if e < len(ex) && int(ex[e]) == r {
				e++
				continue
			}
			idx = append(idx, int32(r))
			sc = append(sc, scores[bi][r])
		}
		scores[bi] = nil
		out[qi] = ix.hits(sc, idx, 0)
	})
}

// searchRestricted scores each restricted query on its own candidates only,
// through the same kernel (so scores equal the unrestricted path's bit for
// bit).
func (ix *Index) searchRestricted(ctx context.Context, kern kernel, preps []prepared, qis []int, k, threads int, out [][]Hit) error {
	d, mr, w := ix.Dim, kern.mr, kern.w
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		readErr error
	)
	err := forQueries(ctx, threads, len(qis), func(i int) {
		qi := qis[i]
		p := &preps[qi]
		// Scratch is kept on the index across searches: single queries at
		// scale would otherwise leave a few hundred KB of garbage each.
		sc, _ := ix.scratch.Get().(*restrictScratch)
		if sc == nil || sc.mr != mr || sc.w != w || len(sc.img) != mr*d {
			sc = &restrictScratch{mr: mr, w: w,
				apan: make([]float32, d*w), bpan: make([]float32, d*w),
				img: make([]float32, mr*d), cap: make([]float32, mr*d), c: make([]float32, mr*w),
			}
		}
		defer ix.scratch.Put(sc)
		clear(sc.apan)
		for k, x := range p.a {
			sc.apan[k*w] = x
		}
		useB := p.b != nil && ix.HasCaption
		if useB {
			clear(sc.bpan)
			for k, x := range p.b {
				sc.bpan[k*w] = x
			}
		}
		cand := p.restrict
		scores := make([]float32, len(cand))
		for g := 0; g < len(cand); g += mr {
			clear(sc.img)
			clear(sc.cap)
			clear(sc.c)
			m := min(mr, len(cand)-g)
			if ix.disk != nil {
				if err := ix.readRows(sc, cand[g:g+m]); err != nil {
					mu.Lock()
					readErr = cmp.Or(readErr, err)
					mu.Unlock()
					cancel()
					return
				}
			} else {
				for i := 0; i < m; i++ {
					r := int(cand[g+i])
					copy(sc.img[i*d:(i+1)*d], ix.Image[r*d:(r+1)*d])
					if useB {
						copy(sc.cap[i*d:(i+1)*d], ix.Caption[r*d:(r+1)*d])
					}
				}
			}
			for kb := 0; kb < d; kb += kern.kc {
				kern.fn(min(kern.kc, d-kb), &sc.apan[kb*w], &sc.img[kb], d*4, &sc.c[0])
			}
			if useB {
				for kb := 0; kb < d; kb += kern.kc {
					kern.fn(min(kern.kc, d-kb), &sc.bpan[kb*w], &sc.cap[kb], d*4, &sc.c[0])
				}
			}
			for i := 0; i < m; i++ {
				scores[g+i] = sc.c[i*w]
			}
		}
		out[qi] = ix.hits(scores, cand, k)
	})
	if readErr != nil {
		return readErr
	}
	return err
}

type restrictScratch struct {
	mr, w                   int // the kernel's tile it was made for
	apan, bpan, img, cap, c []float32
	row                     []float32 // one row as stored on disk
}

// readRows reads the stored rows of a group of candidates into the
// scratch's image and caption tiles (rows in a run are read at once).
func (ix *Index) readRows(sc *restrictScratch, rows []int32) error {
	d, rf := ix.Dim, ix.disk.rowFloats
	if len(sc.row) < len(rows)*rf {
		sc.row = make([]float32, len(rows)*rf)
	}
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j] == rows[j-1]+1 {
			j++
		}
		buf := sc.row[:(j-i)*rf]
		if err := ix.disk.read(int(rows[i]), int(rows[j-1])+1, buf, ix.Counters); err != nil {
			return err
		}
		for x := i; x < j; x++ {
			row := buf[(x-i)*rf : (x-i+1)*rf]
			copy(sc.img[x*d:(x+1)*d], row[:d])
			if ix.HasCaption {
				copy(sc.cap[x*d:(x+1)*d], row[d:])
			}
		}
		i = j
	}
	return nil
}

// eachBlock multiplies the panels against the gallery, nb rows at a time
// on the workers (one goroutine each), and hands each block's scores to
// use. A failed read of vectors on disk stops the loop and is returned.
func (ix *Index) eachBlock(ctx context.Context, kern kernel, workers []*worker, apan, bpan []float32, hasB []bool, np, nb int, use func(wk *worker, groups, r0, r1 int)) error {
	n := ix.Len()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := parallel.ForCtx(ctx, len(workers), (n+nb-1)/nb, func(wi, b int) {
		wk := workers[wi]
		r0 := b * nb
		r1 := min(r0+nb, n)
		groups, err := ix.multiplyBlock(kern, wk, apan, bpan, hasB, np, r0, r1)
		if err != nil {
			wk.err = err
			cancel()
			return
		}
		use(wk, groups, r0, r1)
	})
	if err == nil {
		return nil
	}
	for _, wk := range workers {
		if wk.err != nil {
			return wk.err
		}
	}
	return err
}

// forQueries runs f(0..n-1) on up to threads goroutines and names the
// search in the error when ctx ends the loop early.
func forQueries(ctx context.Context, threads, n int, f func(i int)) error {
	if err := parallel.ForCtx(ctx, max(1, min(threads, n)), n, func(_, i int) { f(i) }); err != nil {
		return fmt.Errorf("vindex: search: %w", err)
	}
	return nil
}
