package app_test

import (
	"context"
	"slices"
	"testing"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/pipeline"
)

// A gallery opened with its vectors left in the search cache ranks exactly
// as the gallery in memory, for text and for more-like-this searches,
// and closing it releases the file.
func TestOpenGalleryVectorsOnDisk(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default(func(string) string { return "" })
	cfg.Home, cfg.Cache.Disabled = t.TempDir(), true
	cfg.CLIP.Model = testutil.CLIP(t, "tiny-clip-quickgelu")
	a, err := app.Open(ctx, cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	folder := testutil.Data(t, "datasets", "CIRCO", "unlabeled2017")
	rank := func(spec app.GallerySpec) (names []string, onDisk bool) {
		t.Helper()
		spec.Folder = folder
		src, err := app.Resolve(ctx, cfg.Home, spec)
		if err != nil {
			t.Fatal(err)
		}
		g, err := a.OpenGallery(ctx, src, "general")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		eng, err := a.Engine(g, pipeline.DefaultOptions(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []pipeline.Request{
			{Instruction: "a red circle", Depth: 1},
			{Reference: g.Index.Names[2], Depth: 1},
		} {
			res, err := eng.Search(ctx, req, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range res.Ranking {
				names = append(names, c.Name)
			}
		}
		return names, g.Index.VectorsOnDisk()
	}
	want, _ := rank(app.GallerySpec{})
	for load := 1; load <= 2; load++ {
		got, onDisk := rank(app.GallerySpec{Compact: true, Cache: true, VectorsOnDisk: true, Tau: 0.15})
		if !onDisk {
			t.Fatalf("load %d: the vectors were loaded into memory", load)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("load %d: on disk %v, in memory %v", load, got, want)
		}
	}
}
