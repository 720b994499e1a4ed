package metrics

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/dataset"
)

func gallery(names ...string) []dataset.Image {
	var out []dataset.Image
	for _, n := range names {
		out = append(out, dataset.Image{Name: n, Path: "/x/" + n})
	}
	return out
}

const eps = 1e-12

func near(a, b float64) bool { return math.Abs(a-b) < eps }

func wantMetrics(t *testing.T, rep *Report, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		got, ok := rep.Get(k)
		if !ok {
			t.Errorf("%s missing from report (keys %v)", k, keys(rep))
			continue
		}
		if !near(got, w) {
			t.Errorf("%s = %v, want %v", k, got, w)
		}
	}
}

func keys(rep *Report) []string {
	var ks []string
	for _, m := range rep.Metrics {
		ks = append(ks, m.Key)
	}
	return ks
}

func TestRecallTextToImage(t *testing.T) {
	ds := &dataset.Dataset{Name: dataset.Flickr30K, Split: "test", Task: dataset.TextToImage,
		Gallery: gallery("a", "b", "c", "d"),
		Queries: []dataset.Query{
			{ID: "0", Targets: []string{"a"}},
			{ID: "1", Targets: []string{"b"}},
			{ID: "2", Targets: []string{"c"}},
			{ID: "3", Targets: []string{"d"}},
		}}
	r := Rankings{Lists: map[string][]string{
		"0": {"a", "b", "c"},      // rank 1
		"1": {"a", "c", "d", "b"}, // rank 4
		"2": {"a", "b"},           // absent: K larger than the list is still a miss
		// "3" missing: a miss
	}}
	rep, err := Score(ds, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Queries != 4 || rep.Missing != 1 || !rep.Labelled {
		t.Errorf("queries=%d missing=%d labelled=%v", rep.Queries, rep.Missing, rep.Labelled)
	}
	wantMetrics(t, rep, map[string]float64{
		"recall@1": 0.25, "recall@2": 0.25, "recall@3": 0.25, "recall@5": 0.5, "recall@10": 0.5, "recall@100": 0.5,
	})
	if !reflect.DeepEqual(keys(rep), []string{"recall@1", "recall@2", "recall@3", "recall@5", "recall@10", "recall@20", "recall@50", "recall@100"}) {
		t.Errorf("keys = %v", keys(rep))
	}
	rep, err = Score(ds, r, Options{RecallKs: []int{4}, MaxQueries: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Queries != 2 || rep.Missing != 0 {
		t.Errorf("MaxQueries: queries=%d missing=%d", rep.Queries, rep.Missing)
	}
	wantMetrics(t, rep, map[string]float64{"recall@4": 1})
}

func cirrDataset() *dataset.Dataset {
	return &dataset.Dataset{Name: dataset.CIRR, Split: "val", Task: dataset.Composed,
		Gallery: gallery("r", "t", "x", "y", "z", "u", "v"),
		Queries: []dataset.Query{
			{ID: "1", Reference: "r", Targets: []string{"t"}, Subset: []string{"x", "t", "y", "z", "u"},
				SoftTargets: map[string]float64{"t": 1, "x": 0.5, "z": -1}},
			{ID: "2", Reference: "x", Targets: []string{"y"}, Subset: []string{"r", "t", "y", "z", "u"},
				SoftTargets: map[string]float64{"y": 1, "v": -1, "u": 0.2}},
		}}
}

func TestCIRR(t *testing.T) {
	ds := cirrDataset()
	r := Rankings{Lists: map[string][]string{
		"1": {"r", "x", "t", "y"}, // reference at rank 1: removed, target rank 2 (3 in the reference code)
		"2": {"v", "u", "y"},      // target rank 3; in the subset [u, y]: rank 2
	}}
	rep, err := Score(ds, r, Options{RecallKs: []int{1, 2, 3}, SoftRecall: true, ReferenceCode: true})
	if err != nil {
		t.Fatal(err)
	}
	wantMetrics(t, rep, map[string]float64{
		"recall@1": 0, "recall@2": 0.5, "recall@3": 1,
		"refcode_recall@1": 0, "refcode_recall@2": 0, "refcode_recall@3": 1,
		"recall_subset@1": 0, "recall_subset@2": 1, "recall_subset@3": 1,
		// q1 top-k after removing r: [x] 0.5, [x t] 1; q2: [v] max(0,-1)=0, [v u] 0.2, [v u y] 1
		"soft_recall@1": 0.25, "soft_recall@2": 0.6, "soft_recall@3": 1,
	})
	// A separate subset ranking (the server's recall_subset file) replaces
	// the derived one; without full lists only recall_subset is reported.
	rep, err = Score(ds, Rankings{Subset: map[string][]string{"1": {"t", "x", "y"}, "2": {"r", "t", "y"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantMetrics(t, rep, map[string]float64{"recall_subset@1": 0.5, "recall_subset@2": 0.5, "recall_subset@3": 1})
	if _, ok := rep.Get("recall@1"); ok {
		t.Error("recall@1 reported without full rankings")
	}
	// Without the optional variants their keys are absent.
	rep, _ = Score(ds, r, Options{})
	for _, k := range keys(rep) {
		if strings.HasPrefix(k, "soft_") || strings.HasPrefix(k, "refcode_") {
			t.Errorf("unrequested variant %s", k)
		}
	}
}

func TestAveragePrecision(t *testing.T) {
	g3 := []string{"g1", "g2", "g3"}
	for _, c := range []struct {
		name string
		list []string
		gts  []string
		k    int
		want float64
	}{
		{"one gt at 1", []string{"g", "x"}, []string{"g"}, 5, 1},
		{"one gt at 3", []string{"x", "y", "g"}, []string{"g"}, 5, 1.0 / 3},
		{"one gt beyond K", []string{"x", "y", "g"}, []string{"g"}, 2, 0},
		{"one gt absent", []string{"x"}, []string{"g"}, 50, 0},
		{"three gts", []string{"x", "g1", "y", "g2", "g3"}, g3, 5, (1.0/2 + 2.0/4 + 3.0/5) / 3},
		{"three gts K=2: denominator min(K,|G|)", []string{"x", "g1", "y", "g2", "g3"}, g3, 2, (1.0 / 2) / 2},
		{"more gts than K, all found", []string{"a", "b"}, []string{"a", "b", "c", "d"}, 2, 1},
		{"list shorter than K", []string{"g1"}, g3, 50, 1.0 / 3},
		{"empty list", nil, g3, 5, 0},
		{"no gts", []string{"a"}, nil, 5, 0},
	} {
		if got := AveragePrecision(c.list, c.gts, c.k); !near(got, c.want) {
			t.Errorf("%s: AP@%d = %v, want %v", c.name, c.k, got, c.want)
		}
	}
}

func TestCIRCO(t *testing.T) {
	n := dataset.COCOName
	ds := &dataset.Dataset{Name: dataset.CIRCO, Split: "val", Task: dataset.Composed,
		Gallery: gallery(n(1), n(2), n(3), n(4), n(5), n(6), n(7)),
		Queries: []dataset.Query{
			{ID: "0", Reference: n(7), Targets: []string{n(1)}, SemanticAspects: []string{"cardinality"}},
			{ID: "1", Reference: n(7), Targets: []string{n(2), n(3), n(4)}, SemanticAspects: []string{"cardinality", "addition"}},
		}}
	r := Rankings{Lists: map[string][]string{
		"0": {n(7), n(1)},                   // reference kept (not removed); AP = 1/2
		"1": {n(5), n(2), n(6), n(3), n(4)}, // AP@5 = (1/2+2/4+3/5)/3
	}}
	rep, err := Score(ds, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ap1 := (0.5 + 0.5 + 0.6) / 3
	wantMetrics(t, rep, map[string]float64{
		"map@5": (0.5 + ap1) / 2, "map@10": (0.5 + ap1) / 2, "map@50": (0.5 + ap1) / 2,
		"recall@1": 0, "recall@2": 1,
		"semantic_map@10/cardinality": (0.5 + ap1) / 2, "semantic_map@10/addition": ap1,
	})
}

func TestVisDialCumulativeHits(t *testing.T) {
	ds := &dataset.Dataset{Name: dataset.VisDial, Split: "val", Task: dataset.Chat,
		Gallery: gallery("t0", "t1", "t2", "a", "b"),
		Queries: []dataset.Query{
			{ID: "0", Targets: []string{"t0"}},
			{ID: "1", Targets: []string{"t1"}},
			{ID: "2", Targets: []string{"t2"}},
		}}
	rounds := func(f func(j int) []string) [][]string {
		out := make([][]string, dataset.VisDialRounds)
		for j := range out {
			out[j] = f(j)
		}
		return out
	}
	r := Rankings{Rounds: map[string][][]string{
		// d0: found by the caption alone (round 0), lost afterwards.
		"0": rounds(func(j int) []string {
			if j == 0 {
				return []string{"t0", "a"}
			}
			return []string{"a", "b"}
		}),
		// d1: rank 2 at round 3, rank 1 at round 4, absent otherwise.
		"1": rounds(func(j int) []string {
			switch j {
			case 3:
				return []string{"a", "t1"}
			case 4:
				return []string{"t1"}
			}
			return []string{"b"}
		}),
		// d2: no rankings at all (a miss in every round).
	}}
	rep, err := Score(ds, r, Options{HitsKs: []int{1, 2}, ReferenceCode: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Missing != 1 || rep.Queries != 3 {
		t.Errorf("missing=%d queries=%d", rep.Missing, rep.Queries)
	}
	third, two := 1.0/3, 2.0/3
	want := map[string][]float64{
		"hits@1":         {third, third, third, third, two, two, two, two, two, two, two},
		"hits@2":         {third, third, third, two, two, two, two, two, two, two, two},
		"round_recall@1": {third, 0, 0, 0, third, 0, 0, 0, 0, 0, 0},
		"round_recall@2": {third, 0, 0, third, third, 0, 0, 0, 0, 0, 0},
		"refcode_hits@1": {0, 0, 0, third, third, third, third, third, third, third},
		"refcode_hits@2": {0, 0, third, third, third, third, third, third, third, third},
	}
	for k, w := range want {
		got, ok := rep.GetRounds(k)
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if len(got) != len(w) {
			t.Errorf("%s has %d rounds, want %d", k, len(got), len(w))
			continue
		}
		for j := range w {
			if !near(got[j], w[j]) {
				t.Errorf("%s = %v, want %v", k, got, w)
				break
			}
		}
	}
}

func TestRankByScoreTies(t *testing.T) {
	got, err := RankByScore([]string{"a", "b", "c", "d", "e"}, []float64{0.5, 0.9, 0.5, math.NaN(), 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b", "e", "a", "c", "d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("RankByScore = %v, want %v", got, want)
	}
	if _, err := RankByScore([]string{"a"}, nil); err == nil {
		t.Error("length mismatch accepted")
	}
	// Tied scores keep gallery order, so which of two tied images counts
	// as the top-1 hit is decided by the gallery order.
	ds := &dataset.Dataset{Name: dataset.MSCOCO, Split: "test", Task: dataset.TextToImage, Gallery: gallery("a", "b"),
		Queries: []dataset.Query{{ID: "0", Targets: []string{"b"}}, {ID: "1", Targets: []string{"a"}}}}
	l, _ := RankByScore([]string{"a", "b"}, []float64{0.3, 0.3})
	rep, err := Score(ds, Rankings{Lists: map[string][]string{"0": l, "1": l}}, Options{RecallKs: []int{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	wantMetrics(t, rep, map[string]float64{"recall@1": 0.5, "recall@2": 1})
}

func TestValidateErrors(t *testing.T) {
	cirr := cirrDataset()
	vis := &dataset.Dataset{Name: dataset.VisDial, Split: "val", Task: dataset.Chat, Gallery: gallery("a"),
		Queries: []dataset.Query{{ID: "0", Targets: []string{"a"}}}}
	for _, c := range []struct {
		name string
		ds   *dataset.Dataset
		r    Rankings
		want string
	}{
		{"unknown name", cirr, Rankings{Lists: map[string][]string{"1": {"t", "nope"}}}, `query "1": item 1: unknown image name "nope"`},
		{"duplicate name", cirr, Rankings{Lists: map[string][]string{"2": {"t", "x", "t"}}}, `query "2": item 2: image "t" already at item 0`},
		{"unknown query", cirr, Rankings{Lists: map[string][]string{"99": {"t"}}}, `query "99": unknown query id`},
		{"rounds for CIRR", cirr, Rankings{Rounds: map[string][][]string{"1": {}}}, "no dialogue rounds"},
		{"lists for VisDial", vis, Rankings{Lists: map[string][]string{"0": {"a"}}}, "needs 11 rankings"},
		{"too few rounds", vis, Rankings{Rounds: map[string][][]string{"0": {{"a"}}}}, `query "0": want 11 rankings (rounds 0..10), got 1`},
		{"bad name in a round", vis, Rankings{Rounds: map[string][][]string{"0": {{"a"}, {"a"}, {"a"}, {"a"}, {"a"}, {"a"}, {"a"}, {"b"}, {"a"}, {"a"}, {"a"}}}}, `query "0": round 7: item 0: unknown image name "b"`},
	} {
		_, err := Score(c.ds, c.r, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := Score(nil, Rankings{}, Options{}); err == nil {
		t.Error("nil dataset accepted")
	}
}

func TestUnlabelledSplit(t *testing.T) {
	ds := &dataset.Dataset{Name: dataset.CIRR, Split: "test1", Task: dataset.Composed, Gallery: gallery("a", "b", "c"),
		Queries: []dataset.Query{{ID: "5", Reference: "a", Subset: []string{"b", "c"}}, {ID: "6", Reference: "b"}}}
	rep, err := Score(ds, Rankings{Lists: map[string][]string{"5": {"b", "c"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Labelled || len(rep.Metrics) != 0 || rep.Queries != 2 || rep.Missing != 1 {
		t.Errorf("report = %+v", rep)
	}
}

func TestReportJSONAndTable(t *testing.T) {
	rep := &Report{Dataset: "VisDial", Split: "val", Queries: 2, Labelled: true}
	rep.add("recall@1", 0.5)
	rep.addRounds("hits@10", []float64{0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	rep.addRounds("refcode_hits@10", []float64{0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"dataset":"VisDial","split":"val","queries":2,"missing":0,"labelled":true,"recall@1":0.5,"hits@10":[0,0.5,1,1,1,1,1,1,1,1,1],"refcode_hits@10":[0.5,1,1,1,1,1,1,1,1,1]}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, rep) {
		t.Errorf("round trip = %+v", back)
	}
	var sb strings.Builder
	if err := rep.WriteTable(&sb); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"VisDial val: 2 queries scored", "recall@1", "50.00", "hits@10", "refcode_hits@10", "(values in %"} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, sb.String())
		}
	}
}
