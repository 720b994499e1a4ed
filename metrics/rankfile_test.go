package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/testutil"
)

// loadFixture loads a miniature benchmark from testdata/datasets.
func loadFixture(t *testing.T, name, split string) *dataset.Dataset {
	t.Helper()
	return loadFrom(t, testutil.Datasets(t), name, split)
}

func loadFrom(t *testing.T, root, name, split string) *dataset.Dataset {
	t.Helper()
	ds, err := dataset.Load(context.Background(), name, root, split)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func sample(t *testing.T, name string) string {
	return filepath.Join(testutil.RepoRoot(t), "testdata", "sample", name)
}

// TestSampleRankings pins the numbers the bundled sample rankings give
// (hand-computed; docs/benchmarks.md lists them) on the miniature benchmarks
// in testdata/datasets and on the independent ones in ../shared/fixtures,
// which share their image keys and answers.
func TestSampleRankings(t *testing.T) {
	t.Run("testdata", func(t *testing.T) { checkSampleRankings(t, testutil.Datasets(t)) })
	t.Run("shared", func(t *testing.T) { checkSampleRankings(t, testutil.Fixtures(t, "datasets")) })
}

func checkSampleRankings(t *testing.T, root string) {
	third, two := 1.0/3, 2.0/3
	ap := (1 + (1+2.0/3+3.0/5)/3 + (1.0/3+2.0/4)/2) / 3
	cases := []struct {
		ds, split string
		files     []string
		opt       Options
		format    Format
		queries   int
		missing   int
		want      map[string]float64
		rounds    map[string][]float64
	}{
		{"CIRR", "val", []string{"cirr_val_ranking.json"}, Options{SoftRecall: true, ReferenceCode: true}, FormatRanking, 3, 0, map[string]float64{
			"recall@1": third, "recall@2": two, "recall@3": 1, "recall@5": 1, "recall@50": 1,
			"recall_subset@1": third, "recall_subset@2": two, "recall_subset@3": 1,
			"soft_recall@1": third, "soft_recall@2": 2.5 / 3, "soft_recall@3": 1,
			"refcode_recall@1": 0, "refcode_recall@2": two, "refcode_recall@3": two, "refcode_recall@5": 1,
		}, nil},
		{"CIRCO", "val", []string{"circo_val_ranking.json"}, Options{}, FormatRanking, 3, 0, map[string]float64{
			"map@5": ap, "map@10": ap, "map@25": ap, "map@50": ap, "recall@1": two, "recall@3": two, "recall@5": 1,
			"recall@10": 1, "recall@25": 1, "recall@50": 1, // CIRCO's official Recall@{5,10,25,50}
			"semantic_map@10/direct_addressing": 1, "semantic_map@10/addition": (1.0/3 + 2.0/4) / 2,
		}, nil},
		{"CIRCO", "val", []string{"circo_val_submission.json"}, Options{}, FormatCIRCO, 3, 0, map[string]float64{"map@5": ap, "map@50": ap, "recall@1": two, "recall@25": 1}, nil},
		{"CIRCO", "test", []string{"circo_test_submission.json"}, Options{}, FormatCIRCO, 2, 0, nil, nil},
		{"FashionIQ-dress", "val", []string{"fashioniq_dress_val_ranking.json"}, Options{}, FormatRanking, 2, 0, map[string]float64{
			"recall@1": 0.5, "recall@10": 0.5, "recall@50": 0.5}, nil},
		{"Flickr30K", "test", []string{"flickr30k_test_ranking.json"}, Options{}, FormatRanking, 15, 0, map[string]float64{
			"recall@1": 10.0 / 15, "recall@2": 13.0 / 15, "recall@3": 1, "recall@5": 1, "recall@10": 1}, nil},
		{"MSCOCO", "test", []string{"mscoco_test_ranking.json"}, Options{}, FormatRanking, 16, 1, map[string]float64{
			"recall@1": 14.0 / 16, "recall@2": 14.0 / 16, "recall@3": 15.0 / 16, "recall@5": 15.0 / 16, "recall@10": 15.0 / 16}, nil},
		{"VisDial", "val", []string{"visdial_val_ranking.json"}, Options{ReferenceCode: true}, FormatRanking, 2, 0, nil, map[string][]float64{
			"hits@1":         {0, 0, 0, 0, .5, .5, .5, .5, .5, .5, .5},
			"hits@2":         {0, 0, .5, 1, 1, 1, 1, 1, 1, 1, 1},
			"hits@3":         {.5, .5, .5, 1, 1, 1, 1, 1, 1, 1, 1},
			"hits@5":         {.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
			"hits@10":        {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
			"round_recall@2": {0, 0, .5, .5, .5, .5, .5, .5, .5, .5, .5},
			"refcode_hits@1": {0, 0, 0, .5, .5, .5, .5, .5, .5, .5},
			"refcode_hits@3": {0, .5, 1, 1, 1, 1, 1, 1, 1, 1},
		}},
	}
	for _, c := range cases {
		t.Run(c.ds+"/"+c.files[0], func(t *testing.T) {
			ds := loadFrom(t, root, c.ds, c.split)
			var files []*RankingFile
			for _, f := range c.files {
				rf, err := ReadRankingFile(sample(t, f), ds)
				if err != nil {
					t.Fatal(err)
				}
				if rf.Format != c.format {
					t.Errorf("format = %s, want %s", rf.Format, c.format)
				}
				files = append(files, rf)
			}
			r, err := CombineRankingFiles(files)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Score(ds, r, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Queries != c.queries || rep.Missing != c.missing || rep.Labelled != (c.want != nil || c.rounds != nil) {
				t.Errorf("queries=%d missing=%d labelled=%v", rep.Queries, rep.Missing, rep.Labelled)
			}
			wantMetrics(t, rep, c.want)
			for k, w := range c.rounds {
				got, _ := rep.GetRounds(k)
				if len(got) != len(w) {
					t.Errorf("%s = %v, want %v", k, got, w)
					continue
				}
				for j := range w {
					if !near(got[j], w[j]) {
						t.Errorf("%s = %v, want %v", k, got, w)
						break
					}
				}
			}
		})
	}
}

func TestFashionIQAverage(t *testing.T) {
	var reps []*Report
	for _, c := range []struct {
		cat   string
		lists map[string][]string
	}{
		{"dress", map[string][]string{"0": {"B00FXDR002"}, "1": {"B00FXDR003"}}},         // 1/2
		{"shirt", map[string][]string{"0": {"B00FXSH002"}, "1": {"B00FXSH004"}}},         // 2/2
		{"toptee", map[string][]string{"0": {"B00FXTT001", "B00FXTT002", "B00FXTT003"}}}, // 1/2, one missing
	} {
		rep, err := Score(loadFixture(t, "FashionIQ-"+c.cat, "val"), Rankings{Lists: c.lists}, Options{RecallKs: []int{1, 10, 50}})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
	}
	avg, err := Average("FashionIQ", "val", reps)
	if err != nil {
		t.Fatal(err)
	}
	wantMetrics(t, avg, map[string]float64{
		"recall@1": (0.5 + 1 + 0) / 3, "recall@10": 2.0 / 3, "recall@50": 2.0 / 3,
		"recall@10/dress": 0.5, "recall@10/shirt": 1, "recall@10/toptee": 0.5,
	})
	if avg.Queries != 6 || avg.Missing != 1 {
		t.Errorf("queries=%d missing=%d", avg.Queries, avg.Missing)
	}
	if _, err := Average("x", "val", nil); err == nil {
		t.Error("empty average accepted")
	}
}

func TestRankingFileErrors(t *testing.T) {
	cirr := loadFixture(t, "CIRR", "val")
	cirrTest := loadFixture(t, "CIRR", "test")
	circo := loadFixture(t, "CIRCO", "val")
	circoTest := loadFixture(t, "CIRCO", "test")
	vis := loadFixture(t, "VisDial", "val")
	ten := "[1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010]"
	full := `["dev-27-1-img0", "dev-27-1-img1", "dev-305-2-img0", "dev-11-0-img1", "dev-305-3-img1"]`
	cirrSub := func(metric, l101 string) string {
		return `{"version": "rc2", "metric": "` + metric + `",` + "\n" + `"101": ` + l101 + `, "102": ["dev-11-0-img0", "dev-305-2-img0", "dev-11-0-img1"], "103": ["dev-27-1-img1", "dev-11-0-img0", "dev-305-2-img0"]}`
	}
	cases := []struct {
		name string
		ds   *dataset.Dataset
		data string
		want []string
	}{
		{"malformed", cirr, "{\n\"101\": [\"a\",\n}", []string{"r.json:2", "malformed JSON"}},
		{"not an object", cirr, `[["a"]]`, []string{"r.json", "want a JSON object"}},
		{"duplicate query id", cirr, "{\"101\": [],\n\"101\": []}", []string{"r.json:2", `key "101"`, "duplicate key"}},
		{"list wrong type", cirr, `{"101": "dev-27-1-img0"}`, []string{"r.json:1", `query "101"`, "want an array of image names, got string"}},
		{"item wrong type", cirr, `{"101": ["dev-27-1-img0", 4]}`, []string{`query "101"`, "item 1: want an image name (string), got number"}},
		{"unknown image", cirr, "{\"102\": [],\n\"101\": [\"dev-27-1-img0\", \"dev-99-0-img0\"]}", []string{"r.json:2", `query "101"`, `item 1: unknown image name "dev-99-0-img0"`}},
		{"duplicate image", cirr, `{"101": ["dev-27-1-img0", "dev-27-1-img0"]}`, []string{`query "101"`, "item 1", "already at item 0"}},
		{"unknown query", cirr, `{"999": []}`, []string{`query "999"`, "unknown query id"}},
		{"visdial one list", vis, `{"0": ["000000002004.jpg"]}`, []string{`query "0"`, "want 11 ranked lists (rounds 0..10), got 1"}},
		{"visdial flat list", vis, `{"0": ["a","a","a","a","a","a","a","a","a","a","a"]}`, []string{`query "0"`, "round 0: want an array of image names, got string"}},
		{"visdial 10 rounds", vis, `{"0": [[],[],[],[],[],[],[],[],[],[]]}`, []string{`query "0"`, "want 11 ranked lists (rounds 0..10), got 10"}},
		{"visdial not a list", vis, `{"0": {}}`, []string{`query "0"`, "want an array of 11 ranked lists"}},
		{"visdial bad name", vis, `{"0": [[],[],[],["x.jpg"],[],[],[],[],[],[],[]]}`, []string{`query "0"`, `round 3: item 0: unknown image name "x.jpg"`}},
		{"cirr bad version", cirr, strings.Replace(cirrSub("recall", full), "rc2", "rc1", 1), []string{`field "version"`, `want "rc2", got "rc1"`}},
		{"cirr version wrong type", cirr, `{"version": 2, "metric": "recall"}`, []string{`field "version"`, "want a string, got number"}},
		{"cirr no metric", cirr, `{"version": "rc2"}`, []string{`field "metric"`, "missing"}},
		{"cirr bad metric", cirr, cirrSub("recall@1", full), []string{`field "metric"`, `got "recall@1"`}},
		{"cirr missing pairid", cirr, `{"version": "rc2", "metric": "recall", "101": ` + full + `}`, []string{"2 of the split's 3 pairids missing (102, 103)"}},
		{"cirr extra pairid", cirr, `{"version": "rc2", "metric": "recall", "7": []}`, []string{`query "7"`, "unknown query id"}},
		{"cirr recall too short", cirr, `{"version": "rc2", "metric": "recall", "101": ["dev-27-1-img0"], "102": [], "103": []}`, []string{`query "101"`, "recall list has 1 images, the server wants exactly 5"}},
		{"cirr reference listed", cirr, `{"version": "rc2", "metric": "recall", "101": ["dev-11-0-img0", "dev-27-1-img1", "dev-305-2-img0", "dev-11-0-img1", "dev-305-3-img1"], "102": [], "103": []}`,
			[]string{`query "101"`, `item 0: the reference image "dev-11-0-img0" must not be listed`}},
		{"cirr subset lists the reference", cirr, cirrSub("recall_subset", `["dev-27-1-img0", "dev-11-0-img0", "dev-27-1-img1"]`), []string{`query "101"`, "reference image"}},
		{"cirr subset too long", cirr, cirrSub("recall_subset", full), []string{`query "101"`, "recall_subset list has 5 images, the server wants exactly 3"}},
		{"cirr submission for CIRCO", circo, `{"version": "rc2", "metric": "recall"}`, []string{"cannot score CIRCO"}},
		{"cirr test missing", cirrTest, `{"version": "rc2", "metric": "recall_subset"}`, []string{"3 of the split's 3 pairids missing"}},
		{"circo missing id", circo, `{"0": [1002], "1": [1005]}`, []string{"1 of the split's 3 query ids missing (2)"}},
		{"circo extra id", circo, `{"0": [1002], "1": [1005], "2": [1004], "3": [1001]}`, []string{`query "3"`, "unknown query id"}},
		{"circo duplicate id", circo, `{"0": [1002, "000000001002"], "1": [1005], "2": [1004]}`, []string{`query "0"`, "item 1", "already at item 0"}},
		{"circo file name among ids", circo, `{"0": [1002, "000000001003.jpg"], "1": [1005], "2": [1004]}`, []string{`query "0"`, `item 1: want a COCO image id`}},
		{"circo negative id", circo, `{"0": [1002, -5], "1": [1005], "2": [1004]}`, []string{`query "0"`, "item 1: want a COCO image id"}},
		{"circo id not in gallery", circo, `{"0": [1002, 77], "1": [1005], "2": [1004]}`, []string{`query "0"`, `item 1: unknown image name "000000000077.jpg"`}},
		{"circo test list short", circoTest, `{"0": ` + ten + `, "1": [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009]}`, []string{`query "1"`, "9 image ids, the CIRCO test server takes exactly 10 per query"}},
		{"circo test duplicate", circoTest, `{"0": ` + ten + `, "1": [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, "1001"]}`, []string{`query "1"`, "item 9", "already at item 0"}},
		{"circo test missing query", circoTest, `{"0": ` + ten + `}`, []string{"1 of the split's 2 query ids missing (1)"}},
		{"circo too long", circo, `{"0": [` + strings.Repeat("1002,", 50) + `1002], "1": [], "2": []}`, []string{`query "0"`, "51 image ids, the server takes at most 50"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRankingFile("r.json", []byte(c.data), c.ds)
			if err == nil {
				t.Fatal("no error")
			}
			var fe *dataset.FormatError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a FormatError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := ReadRankingFile(filepath.Join(t.TempDir(), "none.json"), cirr); err == nil || !strings.Contains(err.Error(), "none.json: not found") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSubmissionRoundTrip(t *testing.T) {
	// CIRR test1: full rankings -> the two server files -> read back.
	ds := loadFixture(t, "CIRR", "test")
	gal := []string{"test1-40-0-img0", "test1-40-0-img1", "test1-41-2-img0", "test1-41-2-img1", "test1-902-1-img0", "test1-902-3-img1"}
	lists := map[string][]string{"201": gal, "202": gal, "203": gal}
	var files []*RankingFile
	for _, metric := range []string{CIRRRecall, CIRRRecallSubset} {
		sub, err := CIRRSubmissionLists(ds, lists, metric)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteCIRRSubmission(&buf, metric, sub, 50); err != nil {
			t.Fatal(err)
		}
		rf, err := ParseRankingFile(metric+".json", buf.Bytes(), ds)
		if err != nil {
			t.Fatalf("%s: %v\n%s", metric, err, buf.String())
		}
		if rf.Format != FormatCIRR || rf.Metric != metric {
			t.Errorf("format %s metric %s", rf.Format, rf.Metric)
		}
		files = append(files, rf)
	}
	if got := files[0].Rankings.Lists["202"]; strings.Join(got, " ") != "test1-40-0-img0 test1-40-0-img1 test1-41-2-img1 test1-902-1-img0 test1-902-3-img1" {
		t.Errorf("recall list for 202 = %v (reference must be dropped)", got)
	}
	if got := files[1].Rankings.Subset["201"]; strings.Join(got, " ") != "test1-40-0-img1 test1-41-2-img0 test1-41-2-img1" {
		t.Errorf("subset list for 201 = %v", got)
	}
	r, err := CombineRankingFiles(files)
	if err != nil || r.Lists == nil || r.Subset == nil {
		t.Fatalf("combine: %v", err)
	}
	if _, err := CombineRankingFiles([]*RankingFile{files[0], files[0]}); err == nil {
		t.Error("two full-ranking files accepted")
	}
	if _, err := CIRRSubmissionLists(ds, map[string][]string{"201": gal}, CIRRRecall); err == nil {
		t.Error("missing pairid accepted by CIRRSubmissionLists")
	}
	if err := WriteCIRRSubmission(&bytes.Buffer{}, "bogus", lists, 50); err == nil {
		t.Error("bad metric accepted")
	}
	if err := WriteCIRRSubmission(&bytes.Buffer{}, CIRRRecall, map[string][]string{"1": {"a", "a"}}, 50); err == nil {
		t.Error("duplicate accepted")
	}

	// CIRCO: names -> unpadded id strings, equal to the bundled sample.
	circo := loadFixture(t, "CIRCO", "test")
	want, err := os.ReadFile(sample(t, "circo_test_submission.json"))
	if err != nil {
		t.Fatal(err)
	}
	rf, err := ParseRankingFile("s.json", want, circo)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCIRCOSubmission(&buf, rf.Rankings.Lists, CIRCON); err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(want) {
		t.Errorf("CIRCO submission =\n%s\nwant\n%s", buf.String(), want)
	}
	if err := WriteCIRCOSubmission(&bytes.Buffer{}, map[string][]string{"0": {"x.jpg"}}, 50); err == nil {
		t.Error("non-COCO name accepted")
	}
	buf.Reset()
	if err := WriteCIRCOSubmission(&buf, map[string][]string{"1": {"000000000007.jpg", "000000000008.jpg"}, "0": {"000000009761.jpg"}}, 1); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "{\n \"0\": [\"9761\"],\n \"1\": [\"7\"]\n}\n" {
		t.Errorf("CIRCO writer = %q", got)
	}
}

func TestCIRRSubsetCandidateRule(t *testing.T) {
	ds := &dataset.Dataset{Name: dataset.CIRR, Split: "val", Task: dataset.Composed,
		Gallery: gallery("r", "a", "b", "c", "d", "e", "f"),
		Queries: []dataset.Query{{ID: "1", Reference: "r", Targets: []string{"a"}, Subset: []string{"a", "b", "c", "d", "e"}}}}
	_, err := ParseRankingFile("s.json", []byte(`{"version": "rc2", "metric": "recall_subset", "1": ["a", "f", "b"]}`), ds)
	if err == nil || !strings.Contains(err.Error(), `query "1": item 1: "f" is not one of the query's subset candidates`) {
		t.Errorf("err = %v", err)
	}
	rf, err := ParseRankingFile("s.json", []byte(`{"version": "rc2", "metric": "recall_subset", "1": ["b", "a", "c"]}`), ds)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Score(ds, rf.Rankings, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantMetrics(t, rep, map[string]float64{"recall_subset@1": 0, "recall_subset@2": 1, "recall_subset@3": 1})
}

// Without its image folder a CIRCO split has no gallery list: the test
// server's full 50 are required.
func TestCIRCOTestLengthWithoutGallery(t *testing.T) {
	ds := *loadFixture(t, "CIRCO", "test")
	ds.Gallery, ds.GalleryUnlisted = nil, true
	ten := "[1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010]"
	_, err := ParseRankingFile("s.json", []byte(`{"0": `+ten+`, "1": `+ten+`}`), &ds)
	if err == nil || !strings.Contains(err.Error(), "takes exactly 50 per query") {
		t.Fatalf("error = %v", err)
	}
	var ids []string
	for i := range 50 {
		ids = append(ids, fmt.Sprint(1001+i))
	}
	l := "[" + strings.Join(ids, ", ") + "]"
	if _, err := ParseRankingFile("s.json", []byte(`{"0": `+l+`, "1": `+l+`}`), &ds); err != nil {
		t.Fatal(err)
	}

	// An image folder that exists but is empty is named as such, not
	// reported as every name being unknown.
	ds.GalleryUnlisted, ds.GalleryDir = false, "/data/CIRCO/unlabeled2017"
	_, err = ParseRankingFile("s.json", []byte(`{"0": `+l+`, "1": `+l+`}`), &ds)
	if err == nil || !strings.Contains(err.Error(), "image folder /data/CIRCO/unlabeled2017 exists but holds no images") {
		t.Fatalf("empty folder error = %v", err)
	}
}
