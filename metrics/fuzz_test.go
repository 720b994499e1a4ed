package metrics

import (
	"testing"

	"github.com/imagescope/imagescope/dataset"
)

// FuzzParseRankingFile checks that no input makes the ranking reader or
// Score panic, for a composed, a CIRCO and a chat dataset.
func FuzzParseRankingFile(f *testing.F) {
	for _, s := range []string{
		`{"1": ["t", "x"]}`, `{"version": "rc2", "metric": "recall_subset", "1": ["a"]}`,
		`{"0": [1, "2", "000000000003"]}`, `{"0": [["a"],[],[],[],[],[],[],[],[],[],[]]}`,
		`{"1": null}`, `null`, `[]`, `{"1": [[1]]}`, `{"version": 1}`, `{"0": [1e400, -0, 1.5]}`,
	} {
		f.Add([]byte(s))
	}
	n := dataset.COCOName
	sets := []*dataset.Dataset{
		{Name: dataset.CIRR, Split: "val", Task: dataset.Composed, Gallery: gallery("r", "t", "x", "a"),
			Queries: []dataset.Query{{ID: "1", Reference: "r", Targets: []string{"t"}, Subset: []string{"t", "x"}}}},
		{Name: dataset.CIRCO, Split: "val", Task: dataset.Composed, GalleryUnlisted: true,
			Queries: []dataset.Query{{ID: "0", Reference: n(9), Targets: []string{n(1), n(2)}}}},
		{Name: dataset.VisDial, Split: "val", Task: dataset.Chat, Gallery: gallery("a", "b"),
			Queries: []dataset.Query{{ID: "0", Targets: []string{"a"}}}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ds := range sets {
			rf, err := ParseRankingFile("f.json", data, ds)
			if err != nil {
				continue
			}
			rep, err := Score(ds, rf.Rankings, Options{ReferenceCode: true, SoftRecall: true})
			if err != nil {
				t.Fatalf("%s: parsed file fails Score: %v", ds.Name, err)
			}
			for _, m := range rep.Metrics {
				for _, v := range append([]float64{m.Value}, m.Rounds...) {
					if v < 0 || v > 1 {
						t.Fatalf("%s = %v out of [0,1]", m.Key, v)
					}
				}
			}
		}
	})
}
