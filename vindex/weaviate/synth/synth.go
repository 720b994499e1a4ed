// Package synth generates clustered synthetic galleries and queries for
// fidelity tests and benchmarks of approximate search.
//
// I.i.d. random vectors are a worst case for graph indexes (every point is
// nearly equidistant from every other); real CLIP embeddings form clusters.
// Here image embeddings are unit vectors scattered around random unit
// centres, caption embeddings are noisy copies of their image's embedding,
// and a query's descriptions lie near one centre, as a reasoner's
// descriptions of one target do.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/vindex"
)

// Params shape a synthetic gallery.
type Params struct {
	N, Dim     int
	Centres    int     // clusters (default N/100)
	Noise      float64 // norm of the offset of an image from its centre, relative (default 0.6)
	CapNoise   float64 // norm of the offset of a caption from its image (default 0.8)
	QueryNoise float64 // norm of the offset of a description from its centre (default 0.7)
	// Uniform makes every image, caption and description an independent
	// uniformly random unit vector (no clusters): the worst case for graph
	// indexes.
	Uniform bool
	Seed    uint64
}

func (p *Params) defaults() {
	if p.Centres <= 0 {
		p.Centres = max(1, p.N/100)
	}
	if p.Noise == 0 {
		p.Noise = 0.6
	}
	if p.CapNoise == 0 {
		p.CapNoise = 0.8
	}
	if p.QueryNoise == 0 {
		p.QueryNoise = 0.7
	}
}

// Gen holds the generator state (centres) so queries match the gallery.
type Gen struct {
	p       Params
	rng     *rand.Rand
	centres [][]float32
}

// New makes a generator.
func New(p Params) *Gen {
	p.defaults()
	g := &Gen{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}
	g.centres = make([][]float32, p.Centres)
	for i := range g.centres {
		g.centres[i] = g.unit(nil, 0)
	}
	return g
}

// unit returns normalize(base + noise * gaussian/sqrt(d)) (base nil: a random unit vector).
func (g *Gen) unit(base []float32, noise float64) []float32 {
	d := g.p.Dim
	v := make([]float32, d)
	s := 1 / math.Sqrt(float64(d))
	for j := range v {
		x := g.rng.NormFloat64() * s
		if base != nil {
			x = float64(base[j]) + noise*x
		}
		v[j] = float32(x)
	}
	l2.Normalize(v)
	return v
}

// Gallery makes the gallery (names img000000.jpg...).
func (g *Gen) Gallery() *vindex.Index {
	n, d := g.p.N, g.p.Dim
	ix := &vindex.Index{Names: make([]string, n), Dim: d, Image: make([]float32, 0, n*d), Caption: make([]float32, 0, n*d), HasCaption: true}
	for i := range n {
		ix.Names[i] = fmt.Sprintf("img%06d.jpg", i)
		if g.p.Uniform {
			ix.Image = append(ix.Image, g.unit(nil, 0)...)
			ix.Caption = append(ix.Caption, g.unit(nil, 0)...)
			continue
		}
		c := g.centres[g.rng.IntN(len(g.centres))]
		v := g.unit(c, g.p.Noise)
		ix.Image = append(ix.Image, v...)
		ix.Caption = append(ix.Caption, g.unit(v, g.p.CapNoise)...)
	}
	return ix
}

// Queries makes nq queries with ndesc descriptions each and the given tau.
func (g *Gen) Queries(nq, ndesc int, tau float32) []vindex.Query {
	qs := make([]vindex.Query, nq)
	for i := range qs {
		c := g.centres[g.rng.IntN(len(g.centres))]
		q := vindex.Query{Tau: tau}
		for range ndesc {
			if g.p.Uniform {
				q.Descriptions = append(q.Descriptions, g.unit(nil, 0))
				continue
			}
			q.Descriptions = append(q.Descriptions, g.unit(c, g.p.QueryNoise))
		}
		qs[i] = q
	}
	return qs
}

// Overlap is |top-k of a ∩ top-k of b| / k over names (k capped at len(b)).
func Overlap(a, b []vindex.Hit, k int) float64 {
	k = min(k, len(b))
	if k == 0 {
		return 1
	}
	set := make(map[string]bool, k)
	for _, h := range b[:k] {
		set[h.Name] = true
	}
	n := 0
	for _, h := range a[:min(k, len(a))] {
		if set[h.Name] {
			n++
		}
	}
	return float64(n) / float64(k)
}
