package vindex

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// clustered fills m with n unit vectors drawn around nc random centres
// (noise sigma per dimension relative to the centre's unit length).
func clustered(rng *rand.Rand, m []float32, n, d, nc int, sigma float64) {
	centres := make([]float32, nc*d)
	for c := 0; c < nc; c++ {
		normal(rng, centres[c*d:(c+1)*d])
	}
	s := float32(sigma / math.Sqrt(float64(d)))
	for i := 0; i < n; i++ {
		c := centres[rng.IntN(nc)*d:]
		row := m[i*d : (i+1)*d]
		var ss float64
		for j := range row {
			row[j] = c[j] + s*float32(rng.NormFloat64())
			ss += float64(row[j]) * float64(row[j])
		}
		inv := float32(1 / math.Sqrt(ss))
		for j := range row {
			row[j] *= inv
		}
	}
}

// shallow returns an index sharing ix's vectors.
func shallow(ix *Index) *Index {
	return &Index{Names: ix.Names, Dim: ix.Dim, Image: ix.Image, Caption: ix.Caption, HasCaption: ix.HasCaption, Threads: ix.Threads}
}

func newIndex(n, d int, caption bool) *Index {
	ix := &Index{Dim: d, HasCaption: caption, Image: make([]float32, n*d)}
	if caption {
		ix.Caption = make([]float32, n*d)
	}
	for i := 0; i < n; i++ {
		ix.Names = append(ix.Names, fmt.Sprintf("img%06d", i))
	}
	return ix
}

// The compact scan only picks candidates: its results must equal the exact
// path's bit for bit (same positions, same scores, same tie order), for
// every compact kernel, on random, clustered and tie-heavy data, with
// exclusions, for small and large k and row counts that are not a multiple
// of the code block.
func TestCompactEqualsExact(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	type data struct {
		name string
		ix   *Index
	}
	var sets []data
	{
		n, d := 3001, 100
		ix := newIndex(n, d, false)
		for i := 0; i < n; i++ {
			normal(rng, ix.Image[i*d:(i+1)*d])
		}
		sets = append(sets, data{"uniform", ix})
	}
	{
		n, d := 4000, 64
		ix := newIndex(n, d, false)
		clustered(rng, ix.Image, n, d, 20, 0.3)
		sets = append(sets, data{"clustered", ix})
	}
	{
		n, d := 2500, 72
		ix := newIndex(n, d, true)
		clustered(rng, ix.Image, n, d, 15, 0.4)
		clustered(rng, ix.Caption, n, d, 15, 0.4)
		clear(ix.Caption[30*d : 40*d]) // images without a caption
		sets = append(sets, data{"captions", ix})
	}
	{
		ix := dyadicIndex(rng, 1500, 48, false)
		for i := 0; i < 20; i++ { // duplicated rows: exact ties
			copy(ix.Image[(100+i)*48:(101+i)*48], ix.Image[7*48:8*48])
		}
		sets = append(sets, data{"dyadic-ties", ix})
	}
	for _, set := range sets {
		ix := set.ix
		n, d := ix.Len(), ix.Dim
		qs := randomQueries(rng, ix, 12)
		for i := range qs {
			switch set.name {
			case "dyadic-ties":
				if i == 0 {
					qs[i].Descriptions = [][]float32{slices.Clone(ix.Image[7*d : 8*d])}
				}
			case "clustered":
				// A query near a gallery row, as real queries are.
				v := slices.Clone(ix.Image[rng.IntN(n)*d:][:d])
				for j := range v {
					v[j] += float32(rng.NormFloat64()) * 0.01
				}
				qs[i].Descriptions = [][]float32{v}
			}
			qs[i].Restrict = nil
			qs[i].Tau = 0.15
			if set.name == "captions" && i%4 == 3 {
				qs[i].Tau = 0.3 // not the compact copy's tau: exact path
			}
			if i%3 == 1 {
				qs[i].Exclude = []int{0, 5, 7, 100, 101, n - 1}
			}
		}
		qs = append(qs, Query{Descriptions: [][]float32{make([]float32, d)}, Tau: 0.15}) // all scores 0
		for _, k := range []int{1, 10, 100, n + 5} {
			want, err := ix.search(ctx, pickKernel(), qs, k)
			if err != nil {
				t.Fatal(err)
			}
			for _, dk := range dotsKernels() {
				cx := shallow(ix)
				if err := cx.compactWith(ctx, 0.15, dk); err != nil {
					t.Fatal(err)
				}
				for qi := range qs {
					got, err := cx.search(ctx, pickKernel(), qs[qi:qi+1], k)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got[0], want[qi]) {
						t.Fatalf("%s, kernel %s, k=%d, query %d: compact result differs from exact\n got %v\nwant %v",
							set.name, dk.name, k, qi, head(got[0]), head(want[qi]))
					}
				}
			}
		}
	}
}

// The kernels must produce the same integer sums.
func TestDotsKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	groups, blocks := 24, 9
	q := make([]int8, groups*4)
	for i := range q {
		q[i] = int8(rng.IntN(255) - 127)
	}
	codes := make([]uint8, blocks*groups*compactRows*4)
	for i := range codes {
		codes[i] = uint8(rng.IntN(256))
	}
	// The extremes, where an intermediate sum could overflow or saturate.
	for i := 0; i < groups*compactRows*4; i++ {
		codes[i] = 255
	}
	q[0], q[1] = -127, 127
	want := make([]int32, blocks*compactRows)
	for b := 0; b < blocks; b++ {
		for r := 0; r < compactRows; r++ {
			var s int32
			for g := 0; g < groups; g++ {
				for j := 0; j < 4; j++ {
					s += int32(codes[(b*groups+g)*compactRows*4+r*4+j]) * int32(q[g*4+j])
				}
			}
			want[b*compactRows+r] = s
		}
	}
	for _, k := range dotsKernels() {
		got := make([]int32, blocks*compactRows)
		k.fn(q, codes, blocks, groups, got)
		if !slices.Equal(got, want) {
			t.Errorf("kernel %s: sums differ", k.name)
		}
	}
}

// A fused index answers the method's fused score: its top k equals the
// unfused exact search except where neighbours' exact scores differ by
// less than 1e-6 (float32 rounding of the fused rows), with and without
// the compact copy, on uniform and clustered data.
func TestFusedMatchesUnfused(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	const tau = 0.15
	for _, kind := range []string{"uniform", "clustered"} {
		n, d := 5000, 64
		ix := newIndex(n, d, true)
		if kind == "uniform" {
			for i := 0; i < n; i++ {
				normal(rng, ix.Image[i*d:(i+1)*d])
				normal(rng, ix.Caption[i*d:(i+1)*d])
			}
		} else {
			clustered(rng, ix.Image, n, d, 30, 0.4)
			clustered(rng, ix.Caption, n, d, 30, 0.4)
		}
		clear(ix.Caption[10*d : 20*d]) // images without a caption
		qs := randomQueries(rng, ix, 40)
		for i := range qs {
			qs[i].Tau, qs[i].Restrict = tau, nil
		}
		want, err := ix.Search(ctx, qs, 100)
		if err != nil {
			t.Fatal(err)
		}
		fx := shallow(ix)
		fx.Image = slices.Clone(ix.Image)
		if err := fx.Fuse(tau); err != nil {
			t.Fatal(err)
		}
		if fx.HasCaption || !fx.HasCaptions() || fx.Caption != nil {
			t.Fatal("fused index still holds caption vectors or reports none")
		}
		for _, compactOn := range []bool{false, true} {
			if compactOn {
				if err := fx.Compact(ctx, tau); err != nil {
					t.Fatal(err)
				}
			}
			for qi := range qs {
				got, err := fx.Search(ctx, qs[qi:qi+1], 100)
				if err != nil {
					t.Fatal(err)
				}
				exact := func(i int) float32 {
					r, err := ix.Search(ctx, []Query{{Descriptions: qs[qi].Descriptions, Tau: tau, Restrict: []int{i}}}, 1)
					if err != nil || len(r[0]) != 1 {
						t.Fatal(err)
					}
					return r[0][0].Score
				}
				if err := sameRanking(got[0], want[qi], exact, 1e-6); err != nil {
					t.Fatalf("%s, compact=%v, query %d: %v", kind, compactOn, qi, err)
				}
			}
		}
		if _, err := fx.Search(ctx, []Query{{Descriptions: qs[0].Descriptions, Tau: 0.3}}, 5); err == nil {
			t.Error("a fused index accepted a query with another tau")
		}
		if err := fx.Fuse(0.3); err == nil {
			t.Error("fusing twice with different tau was accepted")
		}
	}
}

// sameRanking checks got against want position by position: the same
// image, or two images whose exact scores differ by less than tol.
func sameRanking(got, want []Hit, exact func(i int) float32, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d hits, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Index == want[i].Index {
			continue
		}
		a, b := exact(got[i].Index), exact(want[i].Index)
		if math.Abs(float64(a)-float64(b)) >= tol {
			return fmt.Errorf("rank %d: %s (exact %v), want %s (exact %v)", i, got[i].Name, a, want[i].Name, b)
		}
	}
	return nil
}

func TestCompactRefusals(t *testing.T) {
	ctx := context.Background()
	ix := newIndex(10, 8, true)
	if err := ix.Compact(ctx, 1.5); err == nil {
		t.Error("Compact accepted tau 1.5")
	}
	if err := ix.Fuse(0.15); err != nil {
		t.Fatal(err)
	}
	if err := ix.Compact(ctx, 0.2); err == nil {
		t.Error("Compact accepted a tau other than the fused one")
	}
	ix.Image[3] = float32(math.NaN())
	if err := ix.Compact(ctx, 0.15); err == nil {
		t.Error("Compact accepted a non-finite value")
	}
}
