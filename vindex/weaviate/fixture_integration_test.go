//go:build integration

package weaviate

import (
	"context"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate/synth"
)

// TestIntegrationFixtureGallery: the miniature benchmarks' images in
// testdata/datasets (all benchmarks together), embedded by the tiny CLIP in
// testdata/clip, searched through
// Weaviate and exactly. The galleries are small, so the test runs with a
// candidate set smaller than k to exercise the approximate path.
func TestIntegrationFixtureGallery(t *testing.T) {
	urls := envList("IMAGESCOPE_WEAVIATE_URL")
	if urls == nil {
		t.Skip("IMAGESCOPE_WEAVIATE_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root := testutil.Datasets(t)
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(p))
		if !d.IsDir() && (ext == ".jpg" || ext == ".png" || ext == ".jpeg") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := clip.Load(ctx, testutil.CLIP(t, "tiny-clip-gelu"), clip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.EmbedImageFiles(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Dim()
	ix := &vindex.Index{Dim: d}
	for i, r := range res {
		if r.Err != nil {
			t.Logf("skip %s: %v", paths[i], r.Err)
			continue
		}
		clip.Normalize(r.Vector)
		rel, _ := filepath.Rel(root, paths[i])
		ix.Names = append(ix.Names, rel)
		ix.Image = append(ix.Image, r.Vector...)
	}
	n := ix.Len()
	if n < 20 {
		t.Fatalf("only %d fixture images embedded", n)
	}
	st, err := Open(ctx, Config{URLs: urls, Collection: uniqueName("ItestFixtures")}, Meta{CLIPModel: m.ID(), Dim: d, Gallery: "fixtures"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Drop(context.Background()) }()
	objs := make([]Object, n)
	for i := range objs {
		objs[i] = Object{Name: ix.Names[i], Ord: i, Image: ix.Vector(i)}
	}
	if err := st.Upsert(ctx, objs); err != nil {
		t.Fatal(err)
	}
	// Queries: each image's embedding moved towards a random other image
	// (a composed-retrieval-like target), two descriptions each.
	rng := rand.New(rand.NewPCG(3, 4))
	var qs []vindex.Query
	for i := range n {
		var q vindex.Query
		for range 2 {
			j := rng.IntN(n)
			v := make([]float32, d)
			for k := range v {
				v[k] = ix.Vector(i)[k] + 0.5*ix.Vector(j)[k]
			}
			clip.Normalize(v)
			q.Descriptions = append(q.Descriptions, v)
		}
		qs = append(qs, q)
	}
	k := min(20, n)
	want, err := ix.Search(ctx, qs, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{5, DefaultCandidates} {
		cst, err := Open(ctx, Config{URLs: urls, Collection: st.Collection(), Candidates: c}, Meta{CLIPModel: m.ID(), Dim: d}, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cst.Search(ctx, qs, k)
		if err != nil {
			t.Fatal(err)
		}
		var ov float64
		for i := range qs {
			ov += synth.Overlap(got[i], want[i], k)
		}
		ov /= float64(len(qs))
		t.Logf("fixture gallery: %d images, %d queries, candidates %d: overlap@%d = %.4f", n, len(qs), c, k, ov)
		if ov < 0.99 {
			t.Errorf("overlap@%d = %.4f at %d candidates", k, ov, c)
		}
	}
}
