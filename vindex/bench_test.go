package vindex

import (
	"context"
	"fmt"
	"math/rand/v2"
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
