package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/pipeline"
)

// A hand-worked interactive dialogue. Image j of 8 has three visible
// "bits" (bit k set when j's bit k is 1); its vector is +1/-1 per bit. A
// description "match ppp" (p[k] = '1', '0' or '?' for bit k) embeds to
// +1/-1/0 per bit, so the ranking puts the images matching most known bits
// first, ties in gallery order. The target is img0005 (bits 1, 0, 1).
//
//	round 0: "match ???" -> 0 1 2 3 4 5 6 7 (target 6th)
//	round 1: probe 0 1 2 3: bit 0 2/4, bit 1 2/4, bit 2 0/4 -> bit 0 (tie, first); yes
//	         "match 1??" -> 1 3 5 7 0 2 4 6 (3rd)
//	round 2: probe 1 3 5 7: bit 1 2/4, bit 2 2/4 -> bit 1 (tie, first); no
//	         "match 10?" -> 1 5 0 3 4 7 2 6 (2nd)
//	round 3: probe 1 5 0 3: bit 2 1/4 (the only one left); yes
//	         "match 101" -> 5 first
//	round 4..10: nothing left to ask: "no new information", unchanged.
type bitsWorld struct {
	asks   atomic.Int64
	cancel func() // called on the askCancel-th questioner call (if set)
	askAt  int64
}

func bitsOf(name string) int {
	var j int
	fmt.Sscanf(strings.TrimPrefix(name, "img"), "%d", &j)
	return j
}

func (w *bitsWorld) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	text, img := "", ""
	for _, p := range req.Messages[0].Parts {
		text += p.Text
		if p.Image != nil {
			img = string(p.Image.Bytes)
		}
	}
	reply := func(s string) (*pipeline.ChatResponse, error) { return &pipeline.ChatResponse{Text: s}, nil }
	switch {
	case img != "": // verifier: the question names the bit
		var k int
		fmt.Sscanf(text[strings.Index(text, "Is bit ")+len("Is bit "):], "%d", &k)
		if bitsOf(img)>>k&1 == 1 {
			return reply("Yes")
		}
		return reply("No")
	case strings.Contains(text, "Propose up to"):
		if n := w.asks.Add(1); w.cancel != nil && n == w.askAt {
			w.cancel()
			return nil, context.Canceled
		}
		return reply(`{"language": "English", "questions": ["Is bit 0 set?", "Is bit 1 set?", "Is bit 2 set?"]}`)
	case strings.Contains(text, "[question,"):
		return reply(`{"step1": [], "step2": []}`)
	}
	prev, piece := "", ""
	for _, l := range strings.Split(text, "\n") {
		// The first ones: the worked example repeats the headings.
		if s, ok := strings.CutPrefix(l, "Running description so far: "); ok && prev == "" {
			prev = s
		}
		if s, ok := strings.CutPrefix(l, "New piece of the conversation: "); ok && piece == "" {
			piece = s
		}
	}
	d := piece
	if strings.HasPrefix(prev, "match ") {
		p := []byte(strings.TrimPrefix(prev, "match "))
		var k int
		if _, err := fmt.Sscanf(piece, "Is bit %d set?", &k); err == nil {
			p[2-k] = "01"[b2i(strings.HasSuffix(piece, "yes"))]
		}
		d = "match " + string(p)
	}
	return reply(`{"step1": [["Addition", "x"]], "step2": ["` + d + `"]}`)
}

type bitsEmbedder struct{}

func (bitsEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, s := range texts {
		p, ok := strings.CutPrefix(s, "match ")
		if !ok || len(p) != 3 {
			return nil, fmt.Errorf("unexpected description %q", s)
		}
		v := make([]float32, 3)
		for k := range 3 {
			switch p[2-k] {
			case '1':
				v[k] = 1
			case '0':
				v[k] = -1
			}
		}
		out[i] = v
	}
	return out, nil
}

func bitsSetup(t *testing.T, w *bitsWorld) (*pipeline.Engine, *dataset.Dataset) {
	g := &fakeGallery{pos: map[string]int{}}
	for j := range 8 {
		name := fmt.Sprintf("img%04d", j)
		v := make([]float32, 3)
		for k := range 3 {
			v[k] = float32(2*(j>>k&1) - 1)
		}
		g.names, g.img, g.cap = append(g.names, name), append(g.img, l2.Normalized(v)), append(g.cap, l2.Normalized(v))
		g.pos[name] = j
	}
	opt := pipeline.DefaultOptions()
	opt.AskProbe = 4
	eng, err := pipeline.New(pipeline.Config{Embedder: bitsEmbedder{}, Searcher: g, Gallery: g, Images: nameImages{},
		Roles: pipeline.Roles{Reasoner: w, Verifier: w}, Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	ds := &dataset.Dataset{Name: "VisDial", Split: "val", Task: dataset.Chat, Domain: "chat"}
	for _, n := range g.names {
		ds.Gallery = append(ds.Gallery, dataset.Image{Name: n})
	}
	turns := []string{"match ???"}
	for len(turns) < 11 {
		turns = append(turns, "a human turn the interactive run must not use")
	}
	ds.Queries = []dataset.Query{{ID: "d0", Turns: turns, Targets: []string{"img0005"}}}
	return eng, ds
}

func TestInteractiveRun(t *testing.T) {
	w := &bitsWorld{}
	eng, ds := bitsSetup(t, w)
	dir := t.TempDir()
	set := Settings{Dataset: "VisDial", Split: "val", Stages: 2, Interactive: true}
	r, err := New(Config{Engine: eng, Dataset: ds, Dir: dir, Settings: set, Score: metricsScorer})
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
	want := map[string]string{
		"hits@1": "[0 0 0 1 1 1 1 1 1 1 1]",
		"hits@2": "[0 0 1 1 1 1 1 1 1 1 1]",
		"hits@3": "[0 1 1 1 1 1 1 1 1 1 1]",
	}
	for _, st := range []string{"stage1", "stage2"} {
		for k, w := range want {
			var hits []float64
			if err := json.Unmarshal(m[st][k], &hits); err != nil {
				t.Fatalf("%s %s: %v\n%s", st, k, err, b)
			}
			if got := fmt.Sprint(hits); got != w {
				t.Errorf("%s %s = %s, want %s", st, k, got, w)
			}
		}
	}
	tr, _ := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
	lines := strings.Split(strings.TrimSpace(string(tr)), "\n")
	if len(lines) != 11 {
		t.Fatalf("trace has %d lines", len(lines))
	}
	wantTurns := []string{"match ???", "Is bit 0 set? yes", "Is bit 1 set? no", "Is bit 2 set? yes", NoQuestionTurn}
	for i, l := range lines {
		var tl TraceLine
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatal(err)
		}
		wt := wantTurns[min(i, len(wantTurns)-1)]
		if tl.Instruction != wt {
			t.Errorf("round %d turn %q, want %q", i, tl.Instruction, wt)
		}
		if (i == 0) != (tl.Turn == nil) {
			t.Errorf("round %d: generated turn %+v", i, tl.Turn)
		}
	}
	var r2 TraceLine
	json.Unmarshal([]byte(lines[2]), &r2)
	if a := r2.Turn.Ask; a == nil || a.Rule != pipeline.AskRuleSplit || fmt.Sprint(a.Probed) != "[img0001 img0003 img0005 img0007]" || len(a.Questions) != 2 ||
		a.Questions[0].Yes != 2 || a.Questions[1].Yes != 2 || a.Calls.Calls["verifier"] != 8 || r2.Calls["verifier"] != 9 {
		t.Errorf("round 2 asking: %+v calls %v", r2.Turn, r2.Calls)
	}
	if !strings.Contains(lines[4], FallbackNoQuestion) {
		t.Errorf("round 4 does not record that nothing was left to ask: %s", lines[4])
	}
	rep, _ := os.ReadFile(filepath.Join(dir, "metrics.txt"))
	if !strings.Contains(string(rep), "interactive") {
		t.Errorf("metrics.txt does not say the run was interactive:\n%s", rep)
	}

	// Killed while asking round 3's question, then resumed: identical outputs.
	w2 := &bitsWorld{askAt: 3}
	eng2, ds2 := bitsSetup(t, w2)
	dir2 := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	w2.cancel = cancel
	r, err = New(Config{Engine: eng2, Dataset: ds2, Dir: dir2, Settings: set, Score: metricsScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("killed run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "metrics.json")); err == nil {
		t.Fatal("an unfinished run wrote metrics")
	}
	w2.cancel = nil
	before := w2.asks.Load()
	r, err = New(Config{Engine: eng2, Dataset: ds2, Dir: dir2, Settings: set, Score: metricsScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := w2.asks.Load() - before; n != 8 {
		t.Errorf("the resumed run asked %d questions, want 8 (rounds 3..10)", n)
	}
	for _, f := range []string{"rankings.stage1.json", "rankings.stage2.json", "metrics.json", "trace.jsonl", "checkpoints/turns.jsonl"} {
		x, err1 := os.ReadFile(filepath.Join(dir, f))
		y, err2 := os.ReadFile(filepath.Join(dir2, f))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs after kill and resume (%v %v)", f, err1, err2)
		}
	}
}

func TestInteractiveRefusals(t *testing.T) {
	w := &bitsWorld{}
	eng, ds := bitsSetup(t, w)
	for name, c := range map[string]struct {
		set Settings
		ds  func(*dataset.Dataset)
	}{
		"barrier":   {Settings{Stages: 1, Interactive: true, Barrier: true}, nil},
		"not chat":  {Settings{Stages: 1, Interactive: true}, func(d *dataset.Dataset) { d.Task, d.Name = dataset.TextToImage, "Flickr30K" }},
		"no target": {Settings{Stages: 1, Interactive: true}, func(d *dataset.Dataset) { d.Queries[0].Targets = nil }},
	} {
		d := *ds
		d.Queries = append([]dataset.Query(nil), ds.Queries...)
		if c.ds != nil {
			c.ds(&d)
		}
		if _, err := New(Config{Engine: eng, Dataset: &d, Dir: t.TempDir(), Settings: c.set}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	noVerifier, err := pipeline.New(pipeline.Config{Embedder: bitsEmbedder{}, Searcher: &fakeGallery{}, Gallery: &fakeGallery{}, Roles: pipeline.Roles{Reasoner: w}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Engine: noVerifier, Dataset: ds, Dir: t.TempDir(), Settings: Settings{Stages: 1, Interactive: true}}); err == nil || !strings.Contains(err.Error(), "simulated user") {
		t.Errorf("no verifier: %v", err)
	}
}

func TestInteractiveBesideGiven(t *testing.T) {
	w := &bitsWorld{}
	eng, ds := bitsSetup(t, w)
	given := t.TempDir()
	r, err := New(Config{Engine: eng, Dataset: ds, Dir: given, Settings: Settings{Dataset: "VisDial", Split: "val", Stages: 1}, Score: metricsScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r, err = New(Config{Engine: eng, Dataset: ds, Dir: dir, Settings: Settings{Dataset: "VisDial", Split: "val", Stages: 1, Interactive: true, Beside: given}, Score: metricsScorer})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var b map[string]map[string]struct{ Given, Interactive []float64 }
	raw, _ := os.ReadFile(filepath.Join(dir, "beside.json"))
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	// The human turns add nothing here (the target is 6th throughout);
	// the asked questions find it at round 3.
	h := b["stage1"]["hits@1"]
	if fmt.Sprint(h.Given) != "[0 0 0 0 0 0 0 0 0 0 0]" || fmt.Sprint(h.Interactive) != "[0 0 0 1 1 1 1 1 1 1 1]" {
		t.Errorf("hits@1 beside: %+v", h)
	}
	txt, _ := os.ReadFile(filepath.Join(dir, "beside.txt"))
	lines := strings.Split(string(txt), "\n")
	round3 := ""
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "3" {
			round3 = strings.Join(f, " ")
		}
	}
	if !strings.Contains(string(txt), "hits@10 giv") || round3 != "3 0.00 100.00 0.00 100.00 100.00 100.00" {
		t.Errorf("beside.txt:\n%s", txt)
	}
	// Refusals: a run that is not interactive, or an interactive one beside.
	if _, err := New(Config{Engine: eng, Dataset: ds, Dir: t.TempDir(), Settings: Settings{Stages: 1, Beside: given}}); err == nil {
		t.Error("--beside without --interactive accepted")
	}
	if _, err := New(Config{Engine: eng, Dataset: ds, Dir: t.TempDir(), Settings: Settings{Stages: 1, Interactive: true, Beside: dir}}); err == nil {
		t.Error("--beside an interactive run accepted")
	}
}
