package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/metrics"
)

// Score a CIRR-style composed query: the reference image is removed from
// the ranking before Recall@K, and Recall_subset@K looks only at the
// query's subset candidates.
func ExampleScore() {
	ds := &dataset.Dataset{
		Name: dataset.CIRR, Split: "val", Task: dataset.Composed,
		Gallery: []dataset.Image{{Name: "ref"}, {Name: "a"}, {Name: "target"}, {Name: "b"}},
		Queries: []dataset.Query{{ID: "7", Reference: "ref", Targets: []string{"target"}, Subset: []string{"b", "target"}}},
	}
	rep, err := metrics.Score(ds, metrics.Rankings{Lists: map[string][]string{
		"7": {"ref", "a", "target", "b"},
	}}, metrics.Options{RecallKs: []int{1, 2}, SubsetKs: []int{1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	// Output:
	// {"dataset":"CIRR","split":"val","queries":1,"missing":0,"labelled":true,"recall@1":0,"recall@2":1,"recall_subset@1":1}
}

// Score a ranking file (query id -> ranked gallery names) against a
// benchmark split: here the CIRR miniature in testdata/ and a bundled
// sample ranking.
func ExampleReadRankingFile() {
	ctx := context.Background()
	ds, err := dataset.Load(ctx, "cirr", "../testdata/datasets", "val")
	if err != nil {
		fmt.Println(err)
		return
	}
	rf, err := metrics.ReadRankingFile("../testdata/sample/cirr_val_ranking.json", ds)
	if err != nil {
		fmt.Println(err)
		return
	}
	rep, err := metrics.Score(ds, rf.Rankings, metrics.Options{RecallKs: []int{1, 5}, SubsetKs: []int{1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.Marshal(rep)
	fmt.Println(rf.Format, string(b))
	// Output:
	// ranking {"dataset":"CIRR","split":"val","queries":3,"missing":0,"labelled":true,"recall@1":0.3333333333333333,"recall@5":1,"recall_subset@1":0.3333333333333333}
}
