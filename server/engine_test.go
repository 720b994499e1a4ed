package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/vindex"
)

// scriptedModels is an OpenAI-compatible test server: each role is a
// model name and answers from a script.
type scriptedModels struct {
	ts *httptest.Server
	mu sync.Mutex
	// prompts records the text of every request per model.
	prompts    map[string][]string
	evalCalls  atomic.Int64
	blockVerif atomic.Bool
	// canceled receives one value per blocked request whose context ended.
	canceled chan struct{}
	verifIn  chan struct{}
}

const reasonerReply = "Thinking first.\n```json\n{\"step1\": [[\"Addition\", \"a dog\"], [\"Retention\", \"the scene\"]],\n \"step2\": [\"a dog\", \"a red dog\", \"a red dog sitting on a beach\"]}\n```"

const proposerReply = `{"step1": ["There is a dog.", "It is not night."], "step2": [["Is there a dog?", "True"], ["Is it night?", "False"]]}`

func newScriptedModels(t *testing.T) *scriptedModels {
	s := &scriptedModels{prompts: map[string][]string{}, canceled: make(chan struct{}, 16), verifIn: make(chan struct{}, 16)}
	s.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			fmt.Fprint(w, `{"object":"list","data":[{"id":"reasoner"},{"id":"proposer"},{"id":"verifier"},{"id":"evaluator"}]}`)
			return
		}
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			Model    string `json:"model"`
			Messages []struct {
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var text strings.Builder
		images := 0
		for _, m := range body.Messages {
			var str string
			if json.Unmarshal(m.Content, &str) == nil {
				text.WriteString(str)
				continue
			}
			var parts []map[string]any
			_ = json.Unmarshal(m.Content, &parts)
			for _, p := range parts {
				if p["type"] == "text" {
					text.WriteString(fmt.Sprint(p["text"]))
				} else {
					images++
				}
			}
		}
		s.mu.Lock()
		s.prompts[body.Model] = append(s.prompts[body.Model], text.String())
		s.mu.Unlock()
		var reply string
		switch body.Model {
		case "reasoner":
			reply = reasonerReply
		case "proposer":
			reply = proposerReply
		case "verifier":
			if images != 1 {
				http.Error(w, "verifier wants one image", 400)
				return
			}
			if s.blockVerif.Load() {
				s.verifIn <- struct{}{}
				<-r.Context().Done()
				s.canceled <- struct{}{}
				return
			}
			reply = "No"
			if strings.Contains(text.String(), "dog") {
				reply = "Yes"
			}
		case "evaluator":
			if images != 1 {
				http.Error(w, "evaluator wants one composed image", 400)
				return
			}
			if s.evalCalls.Add(1)%2 == 0 {
				reply = "ANSWER: Yes\nThe right image shows what was asked."
			} else {
				reply = "ANSWER: No\nThe right image misses the change."
			}
		default:
			http.Error(w, "unknown model "+body.Model, 404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": "x", "object": "chat.completion", "model": body.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": reply}}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
		})
	}))
	t.Cleanup(s.ts.Close)
	return s
}

func (s *scriptedModels) promptsOf(model string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.prompts[model])
}

// realEnv is a server over the real pipeline: tiny CLIP, an in-memory
// index of generated images with captions, and scripted model roles.
type realEnv struct {
	*env
	models *scriptedModels
	engine *pipeline.Engine
}

func newRealEnv(t *testing.T, roles bool) *realEnv {
	t.Helper()
	ctx := context.Background()
	model, err := clip.Load(ctx, testutil.Fixtures(t, "clip", "tiny-clip-quickgelu"), clip.Options{Threads: 1})
	if err != nil {
		t.Fatalf("load tiny CLIP: %v", err)
	}
	dir := t.TempDir()
	names := []string{"red_dog", "blue_cat", "green_car", "dog_on_beach", "yellow_bird", "black_horse"}
	captions := []string{"a red dog", "a blue cat", "a green car", "a dog on a beach", "a yellow bird", "a black horse"}
	ix := &vindex.Index{Dim: model.Dim(), HasCaption: true}
	var paths []string
	for i, n := range names {
		p := filepath.Join(dir, n+".png")
		writePNG(t, p, 120+10*i, 90)
		paths = append(paths, p)
	}
	imgs, err := model.EmbedImageFiles(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	caps, err := model.EmbedTexts(ctx, captions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range names {
		if imgs[i].Err != nil || caps[i].Err != nil {
			t.Fatalf("embed %s: %v %v", names[i], imgs[i].Err, caps[i].Err)
		}
		clip.Normalize(imgs[i].Vector)
		clip.Normalize(caps[i].Vector)
		ix.Image = append(ix.Image, imgs[i].Vector...)
		ix.Caption = append(ix.Caption, caps[i].Vector...)
	}
	ix.Names, ix.Paths, ix.Captions = names, paths, captions
	backend := NewIndexBackend(ix)

	models := newScriptedModels(t)
	cfg := pipeline.Config{Embedder: CLIPEmbedder{model}, Searcher: backend, Gallery: backend, Images: backend,
		Options: pipeline.Options{TopK: 4, Alpha: 3}}
	if roles {
		conf := config.Default(nil)
		for _, name := range []string{"reasoner", "proposer", "verifier", "evaluator"} {
			for k, v := range map[string]string{"endpoints": models.ts.URL, "model": name, "retries": "0"} {
				if err := conf.Set("roles."+name+"."+k, v); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := conf.Finish(nil); err != nil {
			t.Fatal(err)
		}
		role := func(name string) pipeline.Chatter {
			rc, _ := conf.Role(name)
			c, err := llm.New(ctx, llm.Role(name), rc, nil, llm.Options{SkipModelCheck: true})
			if err != nil {
				t.Fatalf("llm client %s: %v", name, err)
			}
			return LLMChatter{c}
		}
		cfg.Roles = pipeline.Roles{Reasoner: role("reasoner"), Proposer: role("proposer"), Verifier: role("verifier"), Evaluator: role("evaluator")}
	}
	engine, err := pipeline.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		Searcher:   NewEngineSearcher(engine, ""),
		Images:     backend.Images(),
		Stages:     EngineStages(engine),
		ModelStats: func() []RoleStats { return EngineStats(engine) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &realEnv{env: &env{t: t, srv: srv, ts: ts, dir: dir}, models: models, engine: engine}
}

func stageMap(res Result) map[string]StageTrace {
	m := map[string]StageTrace{}
	for _, s := range res.Stages {
		m[s.Name] = s
	}
	return m
}

func TestRealPipelineSearch(t *testing.T) {
	e := newRealEnv(t, true)

	// Text to image through all three stages.
	res := decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "a red dog on a beach", "limit": 6}, nil))
	if len(res.Hits) != 6 {
		t.Fatalf("%d hits", len(res.Hits))
	}
	if !slices.Equal(res.Descriptions, []string{"a dog", "a red dog", "a red dog sitting on a beach"}) {
		t.Fatalf("descriptions %q", res.Descriptions)
	}
	if len(res.Instructions) != 2 || res.Instructions[0] != [2]string{"Addition", "a dog"} {
		t.Fatalf("instructions %q", res.Instructions)
	}
	if len(res.Propositions) != 2 || !res.Propositions[0].Expected || res.Propositions[1].Expected {
		t.Fatalf("propositions %+v", res.Propositions)
	}
	for name, st := range stageMap(res) {
		if st.Status != StatusDone {
			t.Errorf("stage %s: %+v", name, st)
		}
	}
	verified := 0
	for _, h := range res.Hits {
		if h.Stage1Rank < 1 || h.Stage1Rank > 6 {
			t.Errorf("%s stage-1 rank %d", h.Name, h.Stage1Rank)
		}
		if h.Verification == nil {
			continue
		}
		verified++
		if len(h.Verification.Answers) != 2 || h.Verification.Score != 2 {
			t.Fatalf("%s verification %+v", h.Name, h.Verification)
		}
		a := h.Verification.Answers
		if a[0].Question != "Is there a dog?" || !a[0].Answer || !a[0].Match || a[1].Question != "Is it night?" || a[1].Answer || !a[1].Match {
			t.Fatalf("%s answers %+v", h.Name, a)
		}
	}
	if verified != 4 {
		t.Fatalf("%d verified hits, want top K = 4", verified)
	}
	// The evaluator said No to the first candidate and Yes to the second,
	// which moved to the front.
	if v := res.Hits[0].Verdict; v == nil || !v.Yes || !strings.Contains(v.Text, "ANSWER: Yes") {
		t.Fatalf("top verdict %+v", res.Hits[0].Verdict)
	}
	if v := res.Hits[1].Verdict; v == nil || v.Yes {
		t.Fatalf("second verdict %+v", res.Hits[1].Verdict)
	}

	// Composed with a gallery reference: the reasoner sees its caption.
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "make it a cat", "reference": "green_car",
		"stages": map[string]any{"evaluate": false}}, nil))
	rp := e.models.promptsOf("reasoner")
	if !strings.Contains(rp[len(rp)-1], "a green car") || !strings.Contains(rp[len(rp)-1], "make it a cat") {
		t.Fatalf("reasoner prompt lacks reference caption or instruction:\n%s", rp[len(rp)-1])
	}

	// Composed with an uploaded reference image; verification switched off.
	body, ct := multipartBody(t, map[string]string{"request": `{"text":"the same but at night","stages":{"verify":false}}`}, pngBytes(t, 64, 48), "ref.png")
	res = decodeResult(t, e.do("POST", "/api/search", body, map[string]string{"Content-Type": ct}))
	st := stageMap(res)
	if st[StageVerify].Status != StatusSkipped || !strings.Contains(st[StageVerify].Reason, "switched off") {
		t.Fatalf("verify stage %+v", st[StageVerify])
	}
	if st[StageEvaluate].Status != StatusDone {
		t.Fatalf("evaluate stage %+v", st[StageEvaluate])
	}
	for _, h := range res.Hits {
		if h.Verification != nil {
			t.Fatalf("verification with stage 2 off: %+v", h)
		}
	}

	// Metrics count the model calls by role.
	m := string(readBody(t, e.do("GET", "/metrics", nil, nil)))
	for _, role := range []string{"reasoner", "proposer", "verifier", "evaluator"} {
		if !strings.Contains(m, `imagescope_model_calls_total{role="`+role+`"}`) {
			t.Errorf("metrics lack %s calls", role)
		}
	}
	if strings.Contains(m, `imagescope_model_calls_total{role="verifier"} 0`) {
		t.Error("verifier calls not counted")
	}
}

func TestRealPipelineChatStream(t *testing.T) {
	e := newRealEnv(t, true)
	resp := e.postJSON("/api/search/stream", map[string]any{"text": "is it on a beach? yes", "dialogue": []string{"a red dog"}, "limit": 3}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	var stages []StageEvent
	var result *Result
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			name = v
		} else if v, ok := strings.CutPrefix(line, "data: "); ok {
			switch name {
			case "stage":
				var ev StageEvent
				if err := json.Unmarshal([]byte(v), &ev); err != nil {
					t.Fatal(err)
				}
				stages = append(stages, ev)
			case "result":
				result = &Result{}
				if err := json.Unmarshal([]byte(v), result); err != nil {
					t.Fatal(err)
				}
			case "error":
				t.Fatalf("error event %s", v)
			}
		}
	}
	if result == nil || len(result.Hits) != 3 {
		t.Fatalf("result %+v", result)
	}
	// Two rounds, each: reason started/done, retrieve done, verify and
	// evaluate started/done.
	var rounds []string
	for _, ev := range stages {
		if ev.Stage == StageRetrieve && ev.Status == StatusDone {
			rounds = append(rounds, ev.Detail)
		}
	}
	if len(rounds) != 2 || !strings.HasPrefix(rounds[0], "round 1 of 2") || !strings.HasPrefix(rounds[1], "round 2 of 2") {
		t.Fatalf("retrieve events %q (all: %+v)", rounds, stages)
	}
	if !slices.ContainsFunc(result.Notes, func(n string) bool { return strings.Contains(n, "2 rounds") }) {
		t.Fatalf("notes %q", result.Notes)
	}
	// Round 2 was conditioned on round 1's first description.
	rp := e.models.promptsOf("reasoner")
	if len(rp) != 2 || !strings.Contains(rp[1], "is it on a beach? yes") {
		t.Fatalf("reasoner prompts %q", rp)
	}
}

func TestRealPipelineUnconfigured(t *testing.T) {
	e := newRealEnv(t, false)
	var info infoResponse
	if err := json.Unmarshal(readBody(t, e.do("GET", "/api/info", nil, nil)), &info); err != nil {
		t.Fatal(err)
	}
	for _, st := range info.Stages {
		if st.Name != StageRetrieve && (st.Configured || st.Reason == "") {
			t.Errorf("stage info %+v", st)
		}
	}
	res := decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "a red dog"}, nil))
	st := stageMap(res)
	for _, n := range []string{StageReason, StageVerify, StageEvaluate} {
		if st[n].Status != StatusSkipped || st[n].Reason == "" {
			t.Errorf("stage %s = %+v", n, st[n])
		}
	}
	if st[StageRetrieve].Status != StatusDone || len(res.Hits) != 6 {
		t.Fatalf("retrieve %+v, %d hits", st[StageRetrieve], len(res.Hits))
	}
	if !slices.Equal(res.Descriptions, []string{"a red dog"}) {
		t.Fatalf("raw text not embedded: %q", res.Descriptions)
	}
	// Ranking is CLIP's fused score, best first.
	for i := 1; i < len(res.Hits); i++ {
		if res.Hits[i].Score > res.Hits[i-1].Score {
			t.Fatalf("not sorted: %+v", res.Hits)
		}
	}
}

// TestRealPipelineDisconnect checks that a client going away cancels the
// search and the model calls it has in flight.
func TestRealPipelineDisconnect(t *testing.T) {
	e := newRealEnv(t, true)
	e.models.blockVerif.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/api/search/stream", strings.NewReader(`{"text":"a dog"}`))
	req.Header.Set("Content-Type", "application/json")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := e.ts.Client().Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-e.models.verifIn // a verifier call is in flight
	cancel()
	<-e.models.canceled // and the model server saw it canceled
	<-done
}
