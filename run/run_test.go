package run

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/metrics"
	"github.com/imagescope/imagescope/pipeline"
)

func runOnce(t *testing.T, b *benchSetup, barrier bool, active int) (string, time.Duration) {
	t.Helper()
	dir := t.TempDir()
	r, err := New(Config{Engine: b.engine, Dataset: b.ds, Dir: dir, Settings: Settings{Dataset: b.ds.Name, Split: b.ds.Split, Stages: 3, Barrier: barrier, Active: active}, Score: rankOnlyScorer})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir, time.Since(start)
}

func TestStreamingAndBarrierAgree(t *testing.T) {
	b := newBenchSetup(t, 6, 40, map[string]int{"reasoner": 2, "verifier": 4, "evaluator": 2}, map[string]time.Duration{})
	d1, _ := runOnce(t, b, false, 3)
	d2, _ := runOnce(t, b, true, 3)
	for _, f := range []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json", "trace.jsonl"} {
		x, err1 := os.ReadFile(filepath.Join(d1, f))
		y, err2 := os.ReadFile(filepath.Join(d2, f))
		if f == "trace.jsonl" {
			// Which identical requests happened to be in flight together
			// (sent once, shared, counted as cache hits instead of calls)
			// depends on timing.
			x, y = withoutCacheHits(t, x), withoutCacheHits(t, y)
		}
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between streaming and barrier (%v %v)", f, err1, err2)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(d1, "report.txt"))
	if !strings.Contains(string(rep), "upper bound") {
		t.Errorf("report:\n%s", rep)
	}
}

// withoutCacheHits folds every "cache_hits" count of JSON lines into
// "calls".
func withoutCacheHits(t *testing.T, b []byte) []byte {
	t.Helper()
	var drop func(v any)
	drop = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			// Calls sent and cache hits together are fixed; the split is not.
			if hits, ok := x["cache_hits"].(map[string]any); ok {
				calls, _ := x["calls"].(map[string]any)
				if calls == nil {
					calls = map[string]any{}
					x["calls"] = calls
				}
				for role, n := range hits {
					c, _ := calls[role].(float64)
					calls[role] = c + n.(float64)
				}
				delete(x, "cache_hits")
			}
			for _, e := range x {
				drop(e)
			}
		case []any:
			for _, e := range x {
				drop(e)
			}
		}
	}
	var out bytes.Buffer
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("trace line: %v", err)
		}
		drop(v)
		nb, _ := json.Marshal(v)
		out.Write(nb)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// TestBenchPipeline measures streaming against barrier execution on
// latency-simulating servers with fixed capacity per role. It runs only
// when IMAGESCOPE_BENCH is set (bench/pipeline sets it).
func TestBenchPipeline(t *testing.T) {
	if os.Getenv("IMAGESCOPE_BENCH") == "" {
		t.Skip("set IMAGESCOPE_BENCH=1 (bench/pipeline) to run")
	}
	queries := 48
	if v, err := strconv.Atoi(os.Getenv("QUERIES")); err == nil && v > 0 {
		queries = v
	}
	capacity := map[string]int{"reasoner": 4, "verifier": 16, "evaluator": 2}
	latency := map[string]time.Duration{"reasoner": 120 * time.Millisecond, "verifier": 15 * time.Millisecond, "evaluator": 80 * time.Millisecond}
	fmt.Printf("setup: %d text queries, gallery 500, K=20, alpha=3, 4 propositions per query\n", queries)
	fmt.Printf("servers: reasoner capacity %d latency %v; verifier %d x %v; evaluator %d x %v\n",
		capacity["reasoner"], latency["reasoner"], capacity["verifier"], latency["verifier"], capacity["evaluator"], latency["evaluator"])
	var walls [2]time.Duration
	for i, barrier := range []bool{true, false} {
		b := newBenchSetup(t, queries, 500, capacity, latency)
		dir, wall := runOnce(t, b, barrier, 64)
		walls[i] = wall
		req := b.requests()
		mode := "barrier"
		if !barrier {
			mode = "streaming"
		}
		r := b.engine.Stats()
		total := 0.0
		for _, s := range r {
			total += float64(s.Calls)
		}
		fmt.Printf("%-9s wall %6.2fs  server requests: reasoner %d verifier %d evaluator %d  model calls/query %.2f\n",
			mode, wall.Seconds(), req["reasoner"], req["verifier"], req["evaluator"], total/float64(queries))
		if !barrier {
			txt, _ := os.ReadFile(filepath.Join(dir, "report.txt"))
			for _, l := range strings.Split(string(txt), "\n") {
				if strings.Contains(l, "upper bound") {
					fmt.Println(l)
				}
			}
		}
	}
	fmt.Printf("pipeline streaming/barrier=%.2f\n", walls[1].Seconds()/walls[0].Seconds())
}

// softChatter answers like the latency servers, in process, with p(yes).
type softChatter struct{ role string }

func (s softChatter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	var text strings.Builder
	for _, m := range req.Messages {
		for _, p := range m.Parts {
			text.WriteString(p.Text)
			if p.Image != nil {
				text.Write(p.Image.Bytes)
			}
		}
	}
	out := latencyReply(s.role, text.String())
	resp := &pipeline.ChatResponse{Text: out}
	if s.role == "verifier" && req.Logprobs {
		p := 0.3
		if out == "yes" {
			p = 0.6 + float64(len(text.String())%7)/20
		}
		resp.PYes = &p
	}
	return resp, nil
}

func TestSoftRankingBesideHard(t *testing.T) {
	g := newFakeGallery(30, 16)
	opt := pipeline.DefaultOptions()
	opt.Soft, opt.TopK = true, 5
	eng, err := pipeline.New(pipeline.Config{Embedder: hashEmbedder{16}, Searcher: g, Gallery: g, Images: nameImages{},
		Roles: pipeline.Roles{Reasoner: softChatter{"reasoner"}, Verifier: softChatter{"verifier"}}, Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	ds := &dataset.Dataset{Name: "Flickr30K", Split: "test", Task: dataset.TextToImage, Domain: "general"}
	for i := range 4 {
		ds.Queries = append(ds.Queries, dataset.Query{ID: fmt.Sprint(i), Instruction: fmt.Sprint("q", i), Targets: []string{g.names[i]}})
	}
	dir := t.TempDir()
	r, err := New(Config{Engine: eng, Dataset: ds, Dir: dir, Settings: Settings{Stages: 2}, Score: rankOnlyScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
	for _, k := range []string{`"stage1"`, `"stage2"`, `"stage2_soft"`} {
		if !strings.Contains(string(m), k) {
			t.Errorf("metrics.json lacks %s:\n%s", k, m)
		}
	}
	hard, _ := os.ReadFile(filepath.Join(dir, "rankings.stage2.json"))
	soft, err := os.ReadFile(filepath.Join(dir, "rankings.stage2_soft.json"))
	if err != nil || bytes.Equal(hard, soft) {
		t.Errorf("soft ranking missing or identical to the hard one (%v)", err)
	}
}

// pickChatter is a reasoner whose single description is "pick <turn>".
type pickChatter struct{}

func (pickChatter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	text := req.Messages[0].Parts[0].Text
	turn := ""
	for _, l := range strings.Split(text, "\n") {
		if s, ok := strings.CutPrefix(l, "New piece of the conversation: "); ok {
			turn = s
			break
		}
	}
	return &pipeline.ChatResponse{Text: `{"step1": [], "step2": ["pick ` + turn + `"]}`}, nil
}

type pickEmbedder struct{ g *fakeGallery }

func (p pickEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, s := range texts {
		j, ok := p.g.pos[strings.TrimPrefix(s, "pick ")]
		if !ok {
			return nil, fmt.Errorf("unknown %q", s)
		}
		out[i] = p.g.img[j]
	}
	return out, nil
}

// TestChatRoundsCumulativeHits is a hand-worked chat case: each round's
// description picks one gallery image as the top hit. The target is top at
// round 1 only, so Hits@1 (cumulative) is 0, 1, 1, ... while the round's
// own Recall@1 is 0, 1, 0, ...
func TestChatRoundsCumulativeHits(t *testing.T) {
	g := newFakeGallery(6, 16)
	for i := range g.cap {
		g.cap[i] = g.img[i]
	}
	eng, err := pipeline.New(pipeline.Config{Embedder: pickEmbedder{g}, Searcher: g, Gallery: g, Images: nameImages{},
		Roles: pipeline.Roles{Reasoner: pickChatter{}}})
	if err != nil {
		t.Fatal(err)
	}
	ds := &dataset.Dataset{Name: "VisDial", Split: "val", Task: dataset.Chat, Domain: "chat"}
	for _, n := range g.names {
		ds.Gallery = append(ds.Gallery, dataset.Image{Name: n})
	}
	turns := []string{"img0001", "img0000"}
	for len(turns) < 11 {
		turns = append(turns, "img0002")
	}
	ds.Queries = []dataset.Query{{ID: "0", Turns: turns, Targets: []string{"img0000"}}}
	dir := t.TempDir()
	r, err := New(Config{Engine: eng, Dataset: ds, Dir: dir, Settings: Settings{Stages: 1}, Score: metricsScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]json.RawMessage
	b, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var hits []float64
	if err := json.Unmarshal(m["stage1"]["hits@1"], &hits); err != nil {
		t.Fatalf("hits@1: %v\n%s", err, b)
	}
	if want := []float64{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}; fmt.Sprint(hits) != fmt.Sprint(want) {
		t.Errorf("hits@1 = %v, want %v", hits, want)
	}
	// The trace shows the carried description of each round.
	tr, _ := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
	lines := strings.Split(strings.TrimSpace(string(tr)), "\n")
	if len(lines) != 11 || !strings.Contains(lines[2], `"previous":"pick img0000"`) || !strings.Contains(lines[1], `"previous":"img0001"`) {
		t.Errorf("trace:\n%s", tr)
	}
}

func metricsScorer(ds *dataset.Dataset, lists map[string][]string, rounds map[string][][]string) (json.RawMessage, string, error) {
	rep, err := metrics.Score(ds, metrics.Rankings{Lists: lists, Rounds: rounds}, metrics.Options{})
	if err != nil {
		return nil, "", err
	}
	b, err := rep.MarshalJSON()
	return b, "", err
}
