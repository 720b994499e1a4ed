// Package vindex is exact in-memory search for ImageScope's fused score.
//
// Every gallery image j has an L2-normalised image embedding v_j and,
// when the gallery was captioned, an L2-normalised caption embedding c_j.
// A query is one or more L2-normalised description embeddings t_d and a
// fusion weight tau; its score for image j is
//
//	s_j = mean_d [ (1-tau) * (t_d . v_j) + tau * (t_d . c_j) ]
//
// which Search computes as (1-tau) * (m . v_j) + tau * (m . c_j) with
// m = mean_d t_d. The two forms are equal in exact arithmetic (the mean is
// linear) and differ only by float32 rounding; the second needs one dot
// product per gallery vector instead of one per description.
//
// Many queries are answered together: their (weighted) mean vectors are
// packed into panels and multiplied against the gallery in cache-sized
// blocks by a register-blocked kernel (AVX-512 or AVX2+FMA assembly on
// amd64, portable Go elsewhere), in parallel over gallery blocks. Each
// query keeps a bounded top-k heap per worker; nothing of the gallery is
// copied. Every score is accumulated in the same order (one running sum per
// query and image, over the dimensions in order, image part first), so a
// score does not depend on the batch, the block size or the thread count,
// and ranking ties are broken by gallery order.
package vindex

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Index is a gallery held in memory for search.
type Index struct {
	// Names are the gallery image names in gallery order.
	Names []string
	// Dim is the embedding dimension.
	Dim int
	// Image holds len(Names) L2-normalised image embeddings, row-major.
	Image []float32
	// Caption holds the caption embeddings in the same layout; it is only
	// read when HasCaption is true.
	Caption []float32
	// HasCaption reports whether caption embeddings are present. Without
	// them every query's tau is treated as 0.
	HasCaption bool

	// Optional per-image metadata (same order as Names); nil when unknown.
	Paths    []string // image file paths
	Captions []string // caption texts ("" where an image has none)

	// Threads bounds the goroutines one Search uses (0: GOMAXPROCS).
	Threads int

	// Fused reports that Image holds the fused rows (1-FusedTau) v + FusedTau c
	// (see Fuse); queries must then ask for tau FusedTau.
	Fused    bool
	FusedTau float32

	// Counters, when set, counts the work of the searches.
	Counters *Counters

	compact *compact  // 8-bit copy for single-query scans (see Compact)
	disk    *diskRows // the vectors, when they stay on disk (OpenFile)
	scratch sync.Pool // *restrictScratch for restricted searches

	posOnce sync.Once
	pos     map[string]int
}

// Counters count what searches did; safe for concurrent searches.
type Counters struct {
	// CompactQueries are the queries answered by a compact scan, and
	// Rescored the candidate rows those scans re-scored exactly.
	CompactQueries, Rescored atomic.Int64
	// RowsRead are the rows read from disk (VectorsOnDisk).
	RowsRead atomic.Int64
}

// Query is one search request.
type Query struct {
	// Descriptions are L2-normalised text embeddings; the score is their
	// mean. At least one is required.
	Descriptions [][]float32
	// Tau weights the caption similarity (the method uses 0.15).
	Tau float32
	// Restrict limits the candidates to these gallery positions (nil: the
	// whole gallery). Duplicates are ignored.
	Restrict []int
	// Exclude removes these gallery positions from the result.
	Exclude []int
}

// Hit is one ranked gallery image.
type Hit struct {
	Index int
	Name  string
	Score float32
}

// Len returns the number of gallery images.
func (ix *Index) Len() int { return len(ix.Names) }

// Position returns the gallery position of an image name.
func (ix *Index) Position(name string) (int, bool) {
	ix.posOnce.Do(func() {
		ix.pos = make(map[string]int, len(ix.Names))
		for i, n := range ix.Names {
			if _, dup := ix.pos[n]; !dup {
				ix.pos[n] = i
			}
		}
	})
	i, ok := ix.pos[name]
	return i, ok
}

// Positions maps image names to gallery positions; unknown names are
// returned in missing.
func (ix *Index) Positions(names []string) (pos []int, missing []string) {
	pos = make([]int, 0, len(names))
	for _, n := range names {
		if i, ok := ix.Position(n); ok {
			pos = append(pos, i)
		} else {
			missing = append(missing, n)
		}
	}
	return pos, missing
}

// Vector returns image i's image embedding (a view, not a copy). An index
// whose vectors stay on disk returns nil (see RowVectors).
func (ix *Index) Vector(i int) []float32 {
	if ix.disk != nil {
		return nil
	}
	return ix.Image[i*ix.Dim : (i+1)*ix.Dim]
}

// VectorsOnDisk reports whether the vectors stay in the index's file
// (OpenFile with VectorsOnDisk).
func (ix *Index) VectorsOnDisk() bool { return ix.disk != nil }

// RowVectors returns copies of image i's image vector (the fused row on a
// fused index) and caption vector (nil without separate captions), read
// from the file when the vectors stay on disk.
func (ix *Index) RowVectors(i int) (img, cap []float32, err error) {
	if i < 0 || i >= ix.Len() {
		return nil, nil, fmt.Errorf("vindex: image %d is outside the gallery (0..%d)", i, ix.Len()-1)
	}
	d := ix.Dim
	if ix.disk != nil {
		row := make([]float32, ix.disk.rowFloats)
		if err := ix.disk.read(i, i+1, row, ix.Counters); err != nil {
			return nil, nil, err
		}
		if ix.HasCaption {
			return row[:d:d], row[d:], nil
		}
		return row, nil, nil
	}
	img = slices.Clone(ix.Image[i*d : (i+1)*d])
	if ix.HasCaption {
		cap = slices.Clone(ix.Caption[i*d : (i+1)*d])
	}
	return img, cap, nil
}

// Validate checks that the index's slices agree with each other.
func (ix *Index) Validate() error {
	n := len(ix.Names)
	if ix.Dim <= 0 {
		return fmt.Errorf("vindex: dimension %d must be positive", ix.Dim)
	}
	if ix.disk != nil {
		if len(ix.Image) != 0 || len(ix.Caption) != 0 || len(ix.disk.crcs) != n {
			return errors.New("vindex: an index whose vectors are on disk holds none in memory")
		}
	} else if len(ix.Image) != n*ix.Dim {
		return fmt.Errorf("vindex: %d image values for %d images of dimension %d", len(ix.Image), n, ix.Dim)
	}
	if ix.Fused && ix.HasCaption {
		return errors.New("vindex: a fused index holds no separate caption vectors")
	}
	if ix.HasCaption && ix.disk == nil && len(ix.Caption) != n*ix.Dim {
		return fmt.Errorf("vindex: %d caption values for %d images of dimension %d", len(ix.Caption), n, ix.Dim)
	}
	if ix.Paths != nil && len(ix.Paths) != n {
		return fmt.Errorf("vindex: %d paths for %d images", len(ix.Paths), n)
	}
	if ix.Captions != nil && len(ix.Captions) != n {
		return fmt.Errorf("vindex: %d captions for %d images", len(ix.Captions), n)
	}
	return nil
}

// prepared is one query reduced to what the kernels need.
type prepared struct {
	m        []float32 // the mean description vector
	tau      float32   // the caption weight in effect (0 when b is nil)
	a, b     []float32 // (1-tau)*m and tau*m; b nil when the caption term is off
	restrict []int32   // sorted, unique, exclusions removed; nil = all
	exclude  []int32   // sorted, unique (only used when restrict is nil)
}

// Search ranks the gallery for every query. With k > 0 each result holds
// the best min(k, candidates) hits; with k <= 0 it holds the full ranking
// of the candidates. Hits are ordered by score, descending; equal scores
// keep gallery order.
func (ix *Index) Search(ctx context.Context, qs []Query, k int) ([][]Hit, error) {
	return ix.search(ctx, pickKernel(), qs, k)
}

// KernelName names the multiply kernel Search uses on this CPU.
func KernelName() string { return pickKernel().name }

// threads is the goroutine bound of one Search.
func (ix *Index) threads() int {
	if ix.Threads > 0 {
		return ix.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// compactMaxQueries is the largest number of unrestricted queries of one
// Search answered by compact scans; more go through the blocked multiply,
// which reads the gallery once for a whole panel of queries.
const compactMaxQueries = 4

// compactMaxK bounds k for compact scans (their candidate sets grow with k).
const compactMaxK = 4096

func (ix *Index) search(ctx context.Context, kern kernel, qs []Query, k int) ([][]Hit, error) {
	if err := ix.Validate(); err != nil {
		return nil, err
	}
	n := ix.Len()
	preps := make([]prepared, len(qs))
	for qi := range qs {
		p, err := ix.prepare(&qs[qi])
		if err != nil {
			return nil, fmt.Errorf("vindex: query %d: %w", qi, err)
		}
		preps[qi] = p
	}
	if k > n {
		k = n // also bounds the per-query heaps
	}
	threads := ix.threads()
	out := make([][]Hit, len(qs))
	if n == 0 || len(qs) == 0 {
		for i := range out {
			out[i] = []Hit{}
		}
		return out, ctx.Err()
	}
	var full, restricted []int
	for qi := range preps {
		if preps[qi].restrict != nil {
			restricted = append(restricted, qi)
		} else {
			full = append(full, qi)
		}
	}
	if len(restricted) > 0 {
		if err := ix.searchRestricted(ctx, kern, preps, restricted, k, threads, out); err != nil {
			return nil, err
		}
	}
	if ix.compact != nil && k > 0 && k <= compactMaxK && len(full) > 0 && len(full) <= compactMaxQueries {
		rest := full[:0:0]
		for _, qi := range full {
			if !ix.compactServes(&preps[qi]) {
				rest = append(rest, qi)
				continue
			}
			hits, err := ix.searchCompact(ctx, kern, &preps[qi], k, threads)
			if err != nil {
				return nil, err
			}
			out[qi] = hits
		}
		full = rest
	}
	// Queries with a caption term first, so panels of tau = 0 queries can
	// skip the caption pass entirely.
	slices.SortStableFunc(full, func(x, y int) int {
		bx, by := preps[x].b != nil, preps[y].b != nil
		switch {
		case bx == by:
			return 0
		case bx:
			return -1
		}
		return 1
	})
	for start := 0; start < len(full); start += maxBatch {
		batch := full[start:min(start+maxBatch, len(full))]
		if err := ix.searchFull(ctx, kern, preps, batch, k, threads, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// maxBatch bounds the queries multiplied against the gallery at once (their
// packed vectors and per-block scores stay cache-sized).
const maxBatch = 1024

func (ix *Index) prepare(q *Query) (prepared, error) {
	d := ix.Dim
	n := ix.Len()
	if len(q.Descriptions) == 0 {
		return prepared{}, errors.New("no description vectors")
	}
	if math.IsNaN(float64(q.Tau)) || math.IsInf(float64(q.Tau), 0) {
		return prepared{}, fmt.Errorf("tau %v is not a number", q.Tau)
	}
	m := make([]float32, d)
	for di, t := range q.Descriptions {
		if len(t) != d {
			return prepared{}, fmt.Errorf("description %d has dimension %d, index has %d", di, len(t), d)
		}
		for j, v := range t {
			m[j] += v
		}
	}
	inv := float32(len(q.Descriptions))
	tau := q.Tau
	if ix.Fused {
		if tau != ix.FusedTau {
			return prepared{}, fmt.Errorf("tau %v: the gallery was loaded fused for tau %v (load it unfused to search with other weights)", tau, ix.FusedTau)
		}
		tau = 0 // the fused rows already weigh the caption
	}
	if !ix.HasCaption {
		tau = 0
	}
	var p prepared
	p.a = make([]float32, d)
	for j := range m {
		mj := m[j] / inv
		if math.IsNaN(float64(mj)) || math.IsInf(float64(mj), 0) {
			return prepared{}, fmt.Errorf("description vectors hold a non-finite value at dimension %d", j)
		}
		m[j] = mj
		p.a[j] = (1 - tau) * mj
	}
	p.m = m
	if tau != 0 {
		p.tau = tau
		p.b = make([]float32, d)
		for j := range m {
			p.b[j] = tau * m[j]
		}
	}
	ex, err := sortedUnique(q.Exclude, n, "exclude")
	if err != nil {
		return prepared{}, err
	}
	if q.Restrict != nil {
		r, err := sortedUnique(q.Restrict, n, "restrict")
		if err != nil {
			return prepared{}, err
		}
		kept := r[:0]
		for _, i := range r {
			if _, found := slices.BinarySearch(ex, i); !found {
				kept = append(kept, i)
			}
		}
		p.restrict = kept
		if p.restrict == nil {
			p.restrict = []int32{}
		}
	} else {
		p.exclude = ex
	}
	return p, nil
}

func sortedUnique(xs []int, n int, what string) ([]int32, error) {
	if xs == nil {
		return nil, nil
	}
	out := make([]int32, 0, len(xs))
	for _, x := range xs {
		if x < 0 || x >= n {
			return nil, fmt.Errorf("%s position %d is outside the gallery (0..%d)", what, x, n-1)
		}
		out = append(out, int32(x))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// better reports whether (s1, i1) ranks before (s2, i2).
func better(s1 float32, i1 int32, s2 float32, i2 int32) bool {
	return s1 > s2 || (s1 == s2 && i1 < i2)
}

// rankKey packs a hit into one integer that orders like the ranking:
// higher score first, then lower gallery position. Comparing keys is one
// integer comparison, which keeps the top-k heaps cheap.
func rankKey(s float32, i int32) uint64 {
	if s == 0 {
		s = 0 // -0 ranks as +0
	}
	b := math.Float32bits(s)
	if b&0x80000000 != 0 {
		b = ^b
	} else {
		b |= 0x80000000
	}
	return uint64(b)<<32 | uint64(^uint32(i))
}

// unKey inverts rankKey.
func unKey(k uint64) (float32, int32) {
	b := uint32(k >> 32)
	if b&0x80000000 != 0 {
		b &^= 0x80000000
	} else {
		b = ^b
	}
	return math.Float32frombits(b), int32(^uint32(k))
}

// topK is a bounded min-heap of rank keys (root = worst kept hit).
type topK struct {
	k    int
	keys []uint64
	// thr is the root's score once the heap is full (-Inf before): a score
	// below it cannot enter.
	thr float32
}

func newTopK(k int) *topK {
	return &topK{k: k, keys: make([]uint64, 0, k), thr: float32(math.Inf(-1))}
}

func (h *topK) push(s float32, i int32) {
	key := rankKey(s, i)
	ks := h.keys
	if len(ks) < h.k {
		ks = append(ks, key)
		c := len(ks) - 1
		for c > 0 {
			p := (c - 1) / 2
			if ks[p] <= ks[c] {
				break
			}
			ks[p], ks[c] = ks[c], ks[p]
			c = p
		}
		h.keys = ks
		if len(ks) == h.k {
			h.thr, _ = unKey(ks[0])
		}
		return
	}
	if key <= ks[0] {
		return
	}
	ks[0] = key
	p, n := 0, len(ks)
	for {
		l := 2*p + 1
		if l >= n {
			break
		}
		w := l
		if r := l + 1; r < n && ks[r] < ks[l] {
			w = r
		}
		if ks[p] <= ks[w] {
			break
		}
		ks[p], ks[w] = ks[w], ks[p]
		p = w
	}
	h.thr, _ = unKey(ks[0])
}

// hitsFromKeys sorts rank keys best first and returns at most k hits.
func (ix *Index) hitsFromKeys(keys []uint64, k int) []Hit {
	slices.Sort(keys)
	slices.Reverse(keys)
	if k > 0 && len(keys) > k {
		keys = keys[:k]
	}
	out := make([]Hit, len(keys))
	for i, key := range keys {
		s, j := unKey(key)
		out[i] = Hit{Index: int(j), Name: ix.Names[j], Score: s}
	}
	return out
}

// hits turns scored positions into sorted hits, best first, at most k (k <= 0: all).
func (ix *Index) hits(score []float32, idx []int32, k int) []Hit {
	order := make([]int, len(idx))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case better(score[a], idx[a], score[b], idx[b]):
			return -1
		case better(score[b], idx[b], score[a], idx[a]):
			return 1
		}
		return 0
	})
	if k > 0 && len(order) > k {
		order = order[:k]
	}
	out := make([]Hit, len(order))
	for i, o := range order {
		j := int(idx[o])
		out[i] = Hit{Index: j, Name: ix.Names[j], Score: score[o]}
	}
	return out
}

// Lookup is Position (the index then serves as the pipeline's gallery).
func (ix *Index) Lookup(name string) (int, bool) { return ix.Position(name) }

// CaptionText returns an image's caption text, when captions were loaded.
func (ix *Index) CaptionText(name string) (string, bool) {
	i, ok := ix.Position(name)
	if !ok || ix.Captions == nil || ix.Captions[i] == "" {
		return "", false
	}
	return ix.Captions[i], true
}

// HasCaptions reports whether caption embeddings are present, separately
// or fused (otherwise tau is treated as 0).
func (ix *Index) HasCaptions() bool { return ix.HasCaption || ix.Fused }
