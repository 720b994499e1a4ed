package app_test

import (
	"context"
	"fmt"
	"os"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/pipeline"
)

// Open a folder of images as a gallery (indexed into an image DB under the
// home folder on first use) and search it with the pipeline engine. With
// no model roles configured only stage 1 runs: CLIP text-to-image search.
func Example() {
	ctx := context.Background()
	home, _ := os.MkdirTemp("", "imagescope-example")
	defer os.RemoveAll(home)
	cfg := config.Default(func(string) string { return "" })
	cfg.Home, cfg.Cache.Disabled = home, true
	cfg.CLIP.Model = "../testdata/clip/tiny-clip-quickgelu" // a tiny test checkpoint

	src, err := app.Resolve(ctx, cfg.Home, app.GallerySpec{Folder: "../testdata/datasets/CIRCO/unlabeled2017"})
	if err != nil {
		panic(err)
	}
	a, err := app.Open(ctx, cfg, app.Options{})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	g, err := a.OpenGallery(ctx, src, "general")
	if err != nil {
		panic(err)
	}
	defer g.Close()
	eng, err := a.Engine(g, pipeline.DefaultOptions(), nil)
	if err != nil {
		panic(err)
	}
	res, err := eng.Search(ctx, pipeline.Request{Instruction: "a red circle", Depth: 3}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(g.Index.Names), "images;", len(res.Ranking), "results")
	fmt.Println("stage 2:", res.Skipped["stage2"] != "")
	// Output:
	// 10 images; 3 results
	// stage 2: true
}

// Search a folder in one call: OpenSearch indexes it on first use, loads
// CLIP and the configured model roles, and turns a reference given as a
// gallery file into that gallery image.
func ExampleOpenSearch() {
	ctx := context.Background()
	home, _ := os.MkdirTemp("", "imagescope-example")
	defer os.RemoveAll(home)
	cfg := config.Default(func(string) string { return "" })
	cfg.Home, cfg.Cache.Disabled = home, true
	cfg.CLIP.Model = "../testdata/clip/tiny-clip-quickgelu" // a tiny test checkpoint

	s, err := app.OpenSearch(ctx, cfg, app.SearchSpec{
		Gallery: app.GallerySpec{Folder: "../testdata/datasets/CIRCO/unlabeled2017"},
		Text:    "the same scene at night",
		Ref:     "../testdata/datasets/CIRCO/unlabeled2017/000000001001.jpg",
		Tau:     0.15, TopK: 5, Alpha: 1, MaxStage: 3, Depth: 3,
	}, app.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	res, err := s.Run(ctx, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println("reference:", s.Request.Reference)
	left := true
	for _, c := range res.Ranking {
		left = left && c.Name != s.Request.Reference
	}
	fmt.Println(len(res.Ranking), "results; reference left out:", left)
	// Output:
	// reference: 000000001001.jpg
	// 3 results; reference left out: true
}
