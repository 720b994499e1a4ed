package vindex_test

import (
	"context"
	"fmt"

	"github.com/imagescope/imagescope/vindex"
)

// Fused search: each image scores (1-tau)*text.image + tau*text.caption
// against the mean of the query's description vectors.
func ExampleIndex_Search() {
	ix := &vindex.Index{
		Dim:   2,
		Names: []string{"red-circle.png", "blue-square.png", "red-square.png"},
		// Image and caption vectors, one row of Dim values per image,
		// L2-normalised.
		Image:      []float32{1, 0, 0, 1, 0.6, 0.8},
		Caption:    []float32{1, 0, 0, 1, 0.8, 0.6},
		HasCaption: true,
	}
	q := vindex.Query{Descriptions: [][]float32{{1, 0}}, Tau: 0.15}
	res, err := ix.Search(context.Background(), []vindex.Query{q}, 2)
	if err != nil {
		panic(err)
	}
	for _, h := range res[0] {
		fmt.Printf("%s %.3f\n", h.Name, h.Score)
	}
	// Output:
	// red-circle.png 1.000
	// red-square.png 0.630
}
