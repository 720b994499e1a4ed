package vindex

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// BenchmarkSearch reports queries per second for a 100k x 768 gallery
// (image embeddings only), 1000 queries, k = 100. The headline comparison
// against FAISS lives in bench/vindex.
func BenchmarkSearch(b *testing.B) {
	n, d, nq := 100_000, 768, 1000
	if testing.Short() {
		n = 20_000
	}
	rng := rand.New(rand.NewPCG(1, 1))
	ix := &Index{Dim: d, Image: make([]float32, n*d), Names: make([]string, n)}
	for i := 0; i < n; i++ {
		ix.Names[i] = fmt.Sprint(i)
		normal(rng, ix.Image[i*d:(i+1)*d])
	}
	qs := make([]Query, nq)
	for i := range qs {
		v := make([]float32, d)
		normal(rng, v)
		qs[i] = Query{Descriptions: [][]float32{v}}
	}
	for _, kern := range kernels() {
		if kern.name == "go" {
			continue
		}
		b.Run(kern.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := ix.search(context.Background(), kern, qs, 100); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(nq*b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
}

// BenchmarkFusedSearch is the product's fused score (image and caption
// vectors, tau 0.15) on a 100k x 768 gallery, k = 100: one query and 1000
// queries, on the unfused index (two matrices, blocked multiply), the
// fused one (one matrix), and each with the compact copy (single queries
// then scan 8-bit codes and re-score candidates exactly).
func BenchmarkFusedSearch(b *testing.B) {
	n, d := 100_000, 768
	if testing.Short() {
		n = 20_000
	}
	rng := rand.New(rand.NewPCG(2, 2))
	unfused := newIndex(n, d, true)
	clustered(rng, unfused.Image, n, d, 1000, 0.35)
	clustered(rng, unfused.Caption, n, d, 1000, 0.35)
	qs := make([]Query, 1000)
	for i := range qs {
		t := make([]float32, d)
		copy(t, unfused.Image[rng.IntN(n)*d:][:d])
		for j := range t {
			t[j] += float32(rng.NormFloat64() * 0.03)
		}
		qs[i] = Query{Descriptions: [][]float32{t}, Tau: 0.15}
	}
	fused := shallow(unfused)
	fused.Image = slices.Clone(unfused.Image)
	if err := fused.Fuse(0.15); err != nil {
		b.Fatal(err)
	}
	compacted := shallow(fused)
	compacted.Fused, compacted.FusedTau = true, 0.15
	if err := compacted.Compact(context.Background(), 0.15); err != nil {
		b.Fatal(err)
	}
	pair := shallow(unfused)
	if err := pair.Compact(context.Background(), 0.15); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ix   *Index
	}{{"unfused", unfused}, {"unfused+compact", pair}, {"fused", fused}, {"fused+compact", compacted}} {
		for _, nq := range []int{1, 1000} {
			b.Run(fmt.Sprintf("%s/queries=%d", c.name, nq), func(b *testing.B) {
				i := 0
				for b.Loop() {
					batch := qs[:nq]
					if nq == 1 {
						batch = qs[i%len(qs) : i%len(qs)+1]
						i++
					}
					if _, err := c.ix.Search(context.Background(), batch, 100); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(nq*b.N)/b.Elapsed().Seconds(), "queries/s")
				b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/search")
			})
		}
	}
}
