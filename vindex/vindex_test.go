package vindex

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// dyadicIndex builds a gallery whose values are small multiples of 1/4, so
// every dot product (and the fused, averaged score with tau = 1/4 and
// 1, 2 or 4 descriptions) is exact in float32 whatever the summation
// order, and many scores tie.
func dyadicIndex(rng *rand.Rand, n, d int, caption bool) *Index {
	ix := &Index{Dim: d, HasCaption: caption}
	val := func() float32 { return float32(rng.IntN(5)-2) / 4 }
	for i := 0; i < n; i++ {
		ix.Names = append(ix.Names, fmt.Sprintf("img%05d", i))
	}
	ix.Image = make([]float32, n*d)
	for i := range ix.Image {
		ix.Image[i] = val()
	}
	if caption {
		ix.Caption = make([]float32, n*d)
		for i := range ix.Caption {
			ix.Caption[i] = val()
		}
	}
	return ix
}

// bruteForce ranks with the method's formula written out literally, in
// float64: mean over descriptions of (1-tau) t.v + tau t.c.
func bruteForce(ix *Index, q Query, k int) []Hit {
	d := ix.Dim
	tau := float64(q.Tau)
	if !ix.HasCaption {
		tau = 0
	}
	excluded := map[int]bool{}
	for _, e := range q.Exclude {
		excluded[e] = true
	}
	var cand []int
	if q.Restrict != nil {
		seen := map[int]bool{}
		for _, r := range q.Restrict {
			if !seen[r] {
				seen[r] = true
				cand = append(cand, r)
			}
		}
		slices.Sort(cand)
	} else {
		for i := range ix.Names {
			cand = append(cand, i)
		}
	}
	var hits []Hit
	for _, j := range cand {
		if excluded[j] {
			continue
		}
		var total float64
		for _, t := range q.Descriptions {
			var si, sc float64
			for x := 0; x < d; x++ {
				si += float64(t[x]) * float64(ix.Image[j*d+x])
				if tau != 0 {
					sc += float64(t[x]) * float64(ix.Caption[j*d+x])
				}
			}
			total += (1-tau)*si + tau*sc
		}
		hits = append(hits, Hit{Index: j, Name: ix.Names[j], Score: float32(total / float64(len(q.Descriptions)))})
	}
	slices.SortStableFunc(hits, func(a, b Hit) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return a.Index - b.Index
	})
	if k > 0 && len(hits) > k {
		hits = hits[:k]
	}
	return hits
}

func randomQueries(rng *rand.Rand, ix *Index, nq int) []Query {
	d, n := ix.Dim, ix.Len()
	qs := make([]Query, nq)
	for i := range qs {
		nd := []int{1, 2, 4}[rng.IntN(3)]
		for range nd {
			t := make([]float32, d)
			for x := range t {
				t[x] = float32(rng.IntN(5)-2) / 4
			}
			qs[i].Descriptions = append(qs[i].Descriptions, t)
		}
		qs[i].Tau = []float32{0, 0.25, 0.5}[rng.IntN(3)]
		switch rng.IntN(4) {
		case 0:
			for range rng.IntN(20) {
				qs[i].Restrict = append(qs[i].Restrict, rng.IntN(n))
			}
			if qs[i].Restrict == nil {
				qs[i].Restrict = []int{}
			}
		case 1:
			for range rng.IntN(30) {
				qs[i].Exclude = append(qs[i].Exclude, rng.IntN(n))
			}
		}
		if rng.IntN(5) == 0 && len(qs[i].Restrict) > 0 {
			qs[i].Exclude = append(qs[i].Exclude, qs[i].Restrict[0])
		}
	}
	return qs
}

func TestSearchEqualsBruteForce(t *testing.T) {
	ctx := context.Background()
	for _, kern := range kernels() {
		for _, tc := range []struct {
			n, d, nq, k, threads int
			caption              bool
		}{
			{n: 1, d: 3, nq: 2, k: 5, threads: 1, caption: true},
			{n: 37, d: 5, nq: 3, k: 0, threads: 2, caption: false},
			{n: 500, d: 33, nq: 40, k: 10, threads: 3, caption: true},
			{n: 1001, d: 300, nq: 37, k: 25, threads: 4, caption: true},
			{n: 257, d: 16, nq: 70, k: 0, threads: 2, caption: true},
			{n: 300, d: 8, nq: 5, k: 1000, threads: 1, caption: false},
		} {
			name := fmt.Sprintf("%s/n%d_d%d_q%d_k%d_t%d_cap%v", kern.name, tc.n, tc.d, tc.nq, tc.k, tc.threads, tc.caption)
			t.Run(name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.d)))
				ix := dyadicIndex(rng, tc.n, tc.d, tc.caption)
				ix.Threads = tc.threads
				qs := randomQueries(rng, ix, tc.nq)
				got, err := ix.search(ctx, kern, qs, tc.k)
				if err != nil {
					t.Fatal(err)
				}
				ties := 0
				for qi, q := range qs {
					want := bruteForce(ix, q, tc.k)
					if !slices.Equal(got[qi], want) {
						t.Fatalf("query %d (tau %v, %d descriptions, restrict %v, exclude %v):\n got %v\nwant %v",
							qi, q.Tau, len(q.Descriptions), q.Restrict, q.Exclude, head(got[qi]), head(want))
					}
					for i := 1; i < len(want); i++ {
						if want[i].Score == want[i-1].Score {
							ties++
						}
					}
				}
				if tc.n > 100 && ties == 0 {
					t.Fatalf("test data produced no ties; it should exercise tie order")
				}
			})
		}
	}
}

func head(h []Hit) []Hit {
	if len(h) > 8 {
		return h[:8]
	}
	return h
}

// normalized random data: results must agree with a float64 reference up
// to float32 rounding (ranks may only swap between near-equal scores).
func TestSearchNormalizedData(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	n, d := 2000, 512
	ix := &Index{Dim: d, HasCaption: true, Image: make([]float32, n*d), Caption: make([]float32, n*d)}
	for i := 0; i < n; i++ {
		ix.Names = append(ix.Names, fmt.Sprint(i))
		normal(rng, ix.Image[i*d:(i+1)*d])
		normal(rng, ix.Caption[i*d:(i+1)*d])
	}
	var qs []Query
	for range 20 {
		var ds [][]float32
		for range 3 {
			v := make([]float32, d)
			normal(rng, v)
			ds = append(ds, v)
		}
		qs = append(qs, Query{Descriptions: ds, Tau: 0.15})
	}
	for _, kern := range kernels() {
		got, err := ix.search(ctx, kern, qs, 50)
		if err != nil {
			t.Fatal(err)
		}
		for qi, q := range qs {
			want := bruteForce(ix, q, 0)
			for r, h := range got[qi] {
				if math.Abs(float64(h.Score-scoreOf(want, h.Index))) > 1e-5 {
					t.Fatalf("%s query %d rank %d: score %v, reference %v", kern.name, qi, r, h.Score, scoreOf(want, h.Index))
				}
				if math.Abs(float64(h.Score-want[r].Score)) > 2e-5 {
					t.Fatalf("%s query %d rank %d: score %v, reference rank score %v", kern.name, qi, r, h.Score, want[r].Score)
				}
			}
		}
	}
}

func scoreOf(hs []Hit, i int) float32 {
	for _, h := range hs {
		if h.Index == i {
			return h.Score
		}
	}
	return float32(math.NaN())
}

func normal(rng *rand.Rand, v []float32) {
	var s float64
	for i := range v {
		x := rng.NormFloat64()
		v[i] = float32(x)
		s += x * x
	}
	inv := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= inv
	}
}

// The kernels must agree bit for bit with each other on dyadic data, and a
// score must not depend on the batch it was computed in.
func TestScoresIndependentOfBatch(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	n, d := 700, 96
	ix := &Index{Dim: d, HasCaption: true, Image: make([]float32, n*d), Caption: make([]float32, n*d)}
	for i := 0; i < n; i++ {
		ix.Names = append(ix.Names, fmt.Sprint(i))
		normal(rng, ix.Image[i*d:(i+1)*d])
		normal(rng, ix.Caption[i*d:(i+1)*d])
	}
	qs := randomQueries(rng, ix, 50)
	for i := range qs {
		for _, t := range qs[i].Descriptions {
			normal(rng, t)
		}
	}
	kern := pickKernel()
	all, err := ix.search(ctx, kern, qs, 0)
	if err != nil {
		t.Fatal(err)
	}
	for qi := range qs {
		ix.Threads = 1 + qi%3
		one, err := ix.search(ctx, kern, qs[qi:qi+1], 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(one[0], all[qi]) {
			t.Fatalf("query %d alone differs from the batch", qi)
		}
		top, err := ix.search(ctx, kern, qs[qi:qi+1], 7)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(top[0], all[qi][:min(7, len(all[qi]))]) {
			t.Fatalf("query %d top-7 is not the head of its full ranking", qi)
		}
	}
	// Restricted to everything equals unrestricted.
	q := qs[0]
	q.Restrict = nil
	q.Exclude = nil
	full, _ := ix.search(ctx, kern, []Query{q}, 0)
	q.Restrict = make([]int, n)
	for i := range q.Restrict {
		q.Restrict[i] = n - 1 - i
	}
	res, _ := ix.search(ctx, kern, []Query{q}, 0)
	if !slices.Equal(full[0], res[0]) {
		t.Fatalf("restricting to the whole gallery changed the ranking")
	}
}

func TestSearchBadInput(t *testing.T) {
	ctx := context.Background()
	ix := &Index{Names: []string{"a", "b"}, Dim: 2, Image: []float32{1, 0, 0, 1}}
	for _, tc := range []struct {
		name string
		q    Query
	}{
		{"no descriptions", Query{}},
		{"wrong dim", Query{Descriptions: [][]float32{{1, 0, 0}}}},
		{"restrict out of range", Query{Descriptions: [][]float32{{1, 0}}, Restrict: []int{2}}},
		{"exclude negative", Query{Descriptions: [][]float32{{1, 0}}, Exclude: []int{-1}}},
		{"nan", Query{Descriptions: [][]float32{{float32(math.NaN()), 0}}}},
	} {
		if _, err := ix.Search(ctx, []Query{{Descriptions: [][]float32{{1, 0}}}, tc.q}, 1); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	bad := &Index{Names: []string{"a"}, Dim: 2, Image: []float32{1}}
	if _, err := bad.Search(ctx, []Query{{Descriptions: [][]float32{{1, 0}}}}, 1); err == nil {
		t.Error("inconsistent index: no error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ix.Search(cctx, []Query{{Descriptions: [][]float32{{1, 0}}}}, 1); err == nil {
		t.Error("cancelled context: no error")
	}
}

func TestPosition(t *testing.T) {
	ix := &Index{Names: []string{"a", "b", "c"}}
	if i, ok := ix.Position("c"); !ok || i != 2 {
		t.Fatalf("Position(c) = %d, %v", i, ok)
	}
	if _, ok := ix.Position("z"); ok {
		t.Fatal("Position(z) found")
	}
	pos, missing := ix.Positions([]string{"b", "x"})
	if !slices.Equal(pos, []int{1}) || !slices.Equal(missing, []string{"x"}) {
		t.Fatalf("Positions = %v, %v", pos, missing)
	}
}

func TestRankKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.5, -0.5, 1e-30, -1e-30, float32(math.Inf(1)), float32(math.Inf(-1)), 3.4e38}
	for range 200 {
		vals = append(vals, float32(rng.NormFloat64()))
	}
	for _, s1 := range vals {
		for _, i1 := range []int32{0, 1, 7, 1 << 30} {
			if s, i := unKey(rankKey(s1, i1)); s != s1 || i != i1 {
				t.Fatalf("unKey(rankKey(%v, %d)) = %v, %d", s1, i1, s, i)
			}
			for _, s2 := range vals[:20] {
				for _, i2 := range []int32{0, 3, 1 << 30} {
					if got, want := rankKey(s1, i1) > rankKey(s2, i2), better(s1, i1, s2, i2); got != want {
						t.Fatalf("key order of (%v,%d) vs (%v,%d) = %v, want %v", s1, i1, s2, i2, got, want)
					}
				}
			}
		}
	}
}
