package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/imagescope/imagescope/internal/adapt"
	"image"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
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
	// verifGate, when set, holds every verifier call until it is closed
	// (or the call is canceled).
	verifGate atomic.Pointer[chan struct{}]
	// canceled receives one value per blocked request whose context ended.
	canceled chan struct{}
	verifIn  chan struct{}
	// gallery, when set, lets the verifier recognise the image it is sent
	// and answer from its caption; replies maps an instruction substring
	// to the reasoner's and proposer's replies for it.
	gallery []demoImage
	prints  []fingerprint
	replies map[string][2]string
}

// demoImage is a gallery image with the caption the scripted verifier
// answers from.
type demoImage struct{ name, path, caption string }

// fingerprint identifies an image after re-encoding: its size and mean colour.
type fingerprint struct {
	w, h    int
	r, g, b float64
}

func fingerprintOf(img image.Image) fingerprint {
	bnd := img.Bounds()
	f := fingerprint{w: bnd.Dx(), h: bnd.Dy()}
	n := 0.0
	for y := bnd.Min.Y; y < bnd.Max.Y; y += 4 {
		for x := bnd.Min.X; x < bnd.Max.X; x += 4 {
			r, g, b, _ := img.At(x, y).RGBA()
			f.r += float64(r >> 8)
			f.g += float64(g >> 8)
			f.b += float64(b >> 8)
			n++
		}
	}
	f.r, f.g, f.b = f.r/n, f.g/n, f.b/n
	return f
}

// recognise returns the caption of the gallery image closest to the sent one.
func (s *scriptedModels) recognise(dataURL string) (string, bool) {
	_, b64, ok := strings.Cut(dataURL, ";base64,")
	if !ok || len(s.prints) == 0 {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", false
	}
	img, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return "", false
	}
	f := fingerprintOf(img)
	best, bestD := -1, math.Inf(1)
	for i, g := range s.prints {
		d := math.Abs(f.r-g.r) + math.Abs(f.g-g.g) + math.Abs(f.b-g.b)
		if g.w != f.w || g.h != f.h {
			d += 1000
		}
		if d < bestD {
			best, bestD = i, d
		}
	}
	return s.gallery[best].caption, true
}

// answerFromCaption says yes when a content word of the question occurs in
// the caption.
func answerFromCaption(question, caption string) string {
	stop := map[string]bool{"there": true, "this": true, "that": true, "image": true, "photo": true, "picture": true, "does": true, "with": true, "have": true, "show": true}
	for _, w := range strings.FieldsFunc(strings.ToLower(question), func(r rune) bool { return !unicode.IsLetter(r) }) {
		if len(w) > 2 && !stop[w] && strings.Contains(strings.ToLower(caption), w) {
			return "Yes"
		}
	}
	return "No"
}

const reasonerReply = "Thinking first.\n```json\n{\"step1\": [[\"Addition\", \"a dog\"], [\"Retention\", \"the scene\"]],\n \"step2\": [\"a dog\", \"a red dog\", \"a red dog sitting on a beach\"]}\n```"

const proposerReply = `{"step1": ["There is a dog.", "It is not night."], "step2": [["Is there a dog?", "True"], ["Is it night?", "False"]]}`

// askWords are the things the scripted questioner asks about, with their
// German names.
var askWords = map[string]string{"cat": "Katze", "coffee": "Kaffee", "rocket": "Rakete", "astronaut": "Astronaut",
	"motorcycle": "Motorrad", "galaxies": "Galaxien", "brick": "Ziegel", "camera": "Kamera",
	"dog": "Hund", "car": "Auto", "bird": "Vogel", "horse": "Pferd", "beach": "Strand"}

// askFromCaptions is a scripted questioner: one question per candidate
// caption, about the first thing it names, in the candidates' order; in
// German when the conversation opens in German.
func askFromCaptions(prompt string) string {
	german := strings.Contains(prompt, "\n(0) ein")
	var qs []map[string]string
	seen := map[string]bool{}
	_, cands, _ := strings.Cut(prompt, "one-sentence caption:\n")
	cands, _, _ = strings.Cut(cands, "\n\n")
	for _, line := range strings.Split(cands, "\n") {
		for _, w := range strings.Fields(strings.ToLower(line)) {
			de, ok := askWords[w]
			if !ok || seen[w] {
				continue
			}
			seen[w] = true
			q := map[string]string{"en": "Is there a " + w + "?", "user": "Is there a " + w + "?"}
			if german {
				q["user"] = "Ist hier " + de + " zu sehen?"
			}
			qs = append(qs, q)
			break
		}
	}
	out := map[string]any{"language": "English", "yes": "yes", "no": "no", "questions": qs}
	if german {
		out["language"], out["yes"], out["no"] = "German", "ja", "nein"
	}
	b, _ := json.Marshal(out)
	return "Candidates differ.\n```json\n" + string(b) + "\n```"
}

// answeredQuestion is the scripted proposer's rule for a chat turn that
// answers an asked question ("Ist hier Katze zu sehen? nein"): the target
// has (yes) or lacks (no) that thing.
func answeredQuestion(prompt string) (string, bool) {
	_, req, ok := strings.Cut(prompt, "with this request:\n")
	if !ok {
		return "", false
	}
	req, _, _ = strings.Cut(req, "\n")
	q, ans, ok := strings.Cut(req, "? ")
	if !ok {
		return "", false
	}
	yes := ans == "yes" || ans == "ja"
	for en, de := range askWords {
		if strings.HasSuffix(q, " a "+en) || strings.Contains(q, " "+de+" ") {
			b, _ := json.Marshal(map[string]any{"step1": []string{"the " + en}, "step2": [][]any{{"Is there a " + en + "?", map[bool]string{true: "True", false: "False"}[yes]}}})
			return string(b), true
		}
	}
	return "", false
}

func newScriptedModels(t *testing.T) *scriptedModels {
	s := &scriptedModels{prompts: map[string][]string{}, canceled: make(chan struct{}, 256), verifIn: make(chan struct{}, 256)}
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
		var imageURL string
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
					if u, ok := p["image_url"].(map[string]any); ok {
						imageURL = fmt.Sprint(u["url"])
					}
				}
			}
		}
		s.mu.Lock()
		s.prompts[body.Model] = append(s.prompts[body.Model], text.String())
		s.mu.Unlock()
		var reply string
		switch body.Model {
		case "reasoner", "proposer":
			// Queries come in any language: what reaches CLIP and the
			// verifier must be English, and every prompt says so.
			if !strings.Contains(text.String(), "English") {
				http.Error(w, "prompt lacks the language rule", 400)
				return
			}
			reply = reasonerReply
			if body.Model == "proposer" {
				reply = proposerReply
			}
			if strings.Contains(text.String(), "Propose up to") {
				reply = askFromCaptions(text.String())
				break
			}
			if body.Model == "proposer" {
				if r, ok := answeredQuestion(text.String()); ok {
					reply = r
				}
			}
			// The longest scripted instruction found in the prompt wins (a
			// chat round's prompt also holds the earlier turn).
			best := ""
			for key, r := range s.replies {
				if strings.Contains(text.String(), key) && len(key) > len(best) {
					best = key
					reply = r[0]
					if body.Model == "proposer" {
						reply = r[1]
					}
				}
			}
		case "verifier":
			if images != 1 {
				http.Error(w, "verifier wants one image", 400)
				return
			}
			if g := s.verifGate.Load(); g != nil {
				select {
				case <-*g:
				case <-r.Context().Done():
					return
				}
			}
			if s.blockVerif.Load() {
				s.verifIn <- struct{}{}
				<-r.Context().Done()
				s.canceled <- struct{}{}
				return
			}
			reply = "No"
			if caption, ok := s.recognise(imageURL); ok {
				q := text.String()
				if i := strings.LastIndex(q, "?"); i > 0 {
					// The question is the prompt's last sentence.
					start := strings.LastIndexAny(q[:i], ".:\n") + 1
					q = q[start:i]
				}
				reply = answerFromCaption(q, caption)
			} else if strings.Contains(text.String(), "dog") {
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
	dir := t.TempDir()
	names := []string{"red_dog", "blue_cat", "green_car", "dog_on_beach", "yellow_bird", "black_horse"}
	captions := []string{"a red dog", "a blue cat", "a green car", "a dog on a beach", "a yellow bird", "a black horse"}
	var gal []demoImage
	for i, n := range names {
		p := filepath.Join(dir, n+".png")
		writePNG(t, p, 120+10*i, 90)
		gal = append(gal, demoImage{n, p, captions[i]})
	}
	return newRealEnvWith(t, roles, gal, 4, nil)
}

// newRealEnvWith builds the real pipeline over gal: tiny CLIP embeddings
// of the images and captions, scripted roles (when roles is set) verifying
// the top K.
func newRealEnvWith(t *testing.T, roles bool, gal []demoImage, topK int, replies map[string][2]string) *realEnv {
	t.Helper()
	ctx := context.Background()
	model, err := clip.Load(ctx, testutil.CLIP(t, "tiny-clip-quickgelu"), clip.Options{Threads: 1})
	if err != nil {
		t.Fatalf("load tiny CLIP: %v", err)
	}
	var names, paths, captions []string
	for _, g := range gal {
		names, paths, captions = append(names, g.name), append(paths, g.path), append(captions, g.caption)
	}
	ix := &vindex.Index{Dim: model.Dim(), HasCaption: true}
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
	backend := adapt.Index{Index: ix}
	images := adapt.ImagesOf(ix)

	models := newScriptedModels(t)
	models.gallery, models.replies = gal, replies
	for _, g := range gal {
		img, _, err := imageio.DecodeFile(g.path, imageio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		models.prints = append(models.prints, fingerprintOf(img))
	}
	opts := pipeline.DefaultOptions()
	opts.TopK, opts.Alpha = topK, 3
	cfg := pipeline.Config{Embedder: adapt.CLIP{Model: model}, ImageEmbedder: adapt.CLIP{Model: model}, Searcher: backend, Gallery: backend, Images: images, Options: opts}
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
		role := func(name modelrole.Name) pipeline.Chatter {
			rc, _ := conf.Role(name)
			c, err := llm.New(ctx, name, rc, nil, llm.Options{SkipModelCheck: true})
			if err != nil {
				t.Fatalf("llm client %s: %v", name, err)
			}
			return adapt.Chatter{Role: name, Client: c}
		}
		cfg.Roles = pipeline.Roles{Reasoner: role(modelrole.Reasoner), Proposer: role(modelrole.Proposer), Verifier: role(modelrole.Verifier), Evaluator: role(modelrole.Evaluator)}
	}
	engine, err := pipeline.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		Searcher:   NewEngineSearcher(engine, ""),
		Images:     images,
		Stages:     EngineStages(engine),
		Ask:        EngineAskInfo(engine),
		ModelStats: func() []RoleStats { return EngineStats(engine) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &realEnv{env: &env{t: t, srv: srv, ts: ts, dir: filepath.Dir(paths[0])}, models: models, engine: engine}
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
		// The scripted verifier recognises the image and answers from its
		// caption: only the dogs have a dog; nothing is at night.
		dog := strings.Contains(h.Name, "dog")
		want := 1.0
		if dog {
			want = 2
		}
		if len(h.Verification.Answers) != 2 || h.Verification.Score != want {
			t.Fatalf("%s verification %+v", h.Name, h.Verification)
		}
		a := h.Verification.Answers
		if a[0].Question != "Is there a dog?" || a[0].Answer != dog || a[0].Match != dog || a[1].Question != "Is it night?" || a[1].Answer || !a[1].Match {
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
	fams := scrape(t, e.env)
	for _, role := range []string{"reasoner", "proposer", "verifier", "evaluator"} {
		if _, ok := sample(fams, "imagescope_model_calls_total", map[string]string{"role": role}); !ok {
			t.Errorf("metrics lack %s calls", role)
		}
	}
	if n, _ := sample(fams, "imagescope_model_calls_total", map[string]string{"role": "verifier"}); n == 0 {
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

// TestRealPipelineMaxStage runs stage 1 only, as 'serve --max-stage 1' does.
func TestRealPipelineMaxStage(t *testing.T) {
	e := newRealEnv(t, true)
	e.srv.cfg.Searcher.(*EngineSearcher).MaxStage = 1
	res := decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "a red dog"}, nil))
	st := stageMap(res)
	if st[StageReason].Status != StatusDone || st[StageRetrieve].Status != StatusDone {
		t.Fatalf("stage 1: %+v", res.Stages)
	}
	for _, n := range []string{StageVerify, StageEvaluate} {
		if st[n].Status != StatusSkipped || !strings.Contains(st[n].Reason, "not requested") {
			t.Errorf("stage %s = %+v", n, st[n])
		}
	}
	if len(e.models.promptsOf("verifier")) != 0 || len(e.models.promptsOf("evaluator")) != 0 {
		t.Fatal("stages 2/3 called their models")
	}
	for _, h := range res.Hits {
		if h.Verification != nil || h.Verdict != nil {
			t.Fatalf("explanations from stages that did not run: %+v", h)
		}
	}
}

// streamEvents reads a search stream into its events (name, raw data).
func streamEvents(t *testing.T, resp *http.Response) (names []string, data []string) {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			name = v
		} else if v, ok := strings.CutPrefix(line, "data: "); ok {
			if name == "error" {
				t.Fatalf("error event %s", v)
			}
			names, data = append(names, name), append(data, v)
		}
	}
	return names, data
}

func TestRealPipelineProgressive(t *testing.T) {
	// The stream sends the stage-1 results before the verifier starts and
	// the stage-2 results before the evaluator starts; each hit says its
	// rank after every stage and why it moved.
	e := newRealEnv(t, true)
	names, data := streamEvents(t, e.postJSON("/api/search/stream", map[string]any{"text": "a dog", "limit": 4}, nil))
	var order []string
	var partials []Result
	var final Result
	for i, n := range names {
		switch n {
		case "partial":
			var r Result
			if err := json.Unmarshal([]byte(data[i]), &r); err != nil {
				t.Fatal(err)
			}
			partials = append(partials, r)
			order = append(order, "partial:"+r.Partial)
		case "stage":
			var ev StageEvent
			if err := json.Unmarshal([]byte(data[i]), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Status == StatusStarted {
				order = append(order, "start:"+ev.Stage)
			}
		case "result":
			if err := json.Unmarshal([]byte(data[i]), &final); err != nil {
				t.Fatal(err)
			}
			order = append(order, "result")
		}
	}
	want := []string{"start:reason", "partial:retrieve", "start:verify", "partial:verify", "start:evaluate", "result"}
	if !slices.Equal(order, want) {
		t.Fatalf("event order %q, want %q", order, want)
	}
	p := partials[0]
	if len(p.Hits) != 4 || p.Hits[0].Rank != 1 || p.Hits[0].ThumbURL == "" || len(p.Descriptions) == 0 {
		t.Fatalf("first results %+v", p)
	}
	if st := stageMap(p); st[StageVerify].Status != StatusPending || st[StageRetrieve].Status != StatusDone {
		t.Fatalf("first results' stages %+v", p.Stages)
	}
	if final.Partial != "" || len(final.Hits) != 4 {
		t.Fatalf("final %+v", final)
	}
	for _, h := range final.Hits {
		if len(h.Ranks) != 3 || h.Ranks[0].Stage != StageRetrieve || h.Ranks[2].Rank != h.Rank || h.Caption == "" || h.CaptionSimilarity == nil {
			t.Fatalf("hit facts %+v", h)
		}
		if h.Verdict != nil && (strings.Contains(h.Verdict.Reasoning, "ANSWER") || h.Verdict.Reasoning == "") {
			t.Fatalf("verdict reasoning %q", h.Verdict.Reasoning)
		}
	}
}

func TestRealPipelineMoreLikeThis(t *testing.T) {
	e := newRealEnv(t, true)
	before := len(e.models.promptsOf("reasoner")) + len(e.models.promptsOf("verifier"))
	// A gallery image and no text.
	resp := e.postJSON("/api/search", map[string]any{"reference": "red_dog", "limit": 5}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	res := decodeResult(t, resp)
	if len(res.Hits) != 5 {
		t.Fatalf("hits %+v", res.Hits)
	}
	for _, h := range res.Hits {
		if h.Name == "red_dog" {
			t.Fatalf("the reference is in its own results: %+v", res.Hits)
		}
	}
	st := stageMap(res)
	for _, s := range []string{StageVerify, StageEvaluate} {
		if st[s].Status != StatusSkipped || st[s].Reason != pipeline.NoTextToVerify {
			t.Fatalf("%s: %+v", s, st[s])
		}
	}
	if st[StageReason].Status != StatusSkipped {
		t.Fatalf("reason: %+v", st[StageReason])
	}
	if after := len(e.models.promptsOf("reasoner")) + len(e.models.promptsOf("verifier")); after != before {
		t.Fatalf("%d model calls for an image-only search", after-before)
	}
	// The same image uploaded ranks the gallery the same way (it is the
	// same file; an upload is embedded now, the gallery image's vector was
	// stored), with the gallery copy first.
	b, err := os.ReadFile(filepath.Join(e.dir, "red_dog.png"))
	if err != nil {
		t.Fatal(err)
	}
	body, ct := multipartBody(t, map[string]string{"limit": "6"}, b, "red_dog.png")
	up := decodeResult(t, e.do("POST", "/api/search", body, map[string]string{"Content-Type": ct}))
	if len(up.Hits) != 6 || up.Hits[0].Name != "red_dog" {
		t.Fatalf("upload hits %+v", up.Hits)
	}
	for i, h := range res.Hits {
		if up.Hits[i+1].Name != h.Name {
			t.Fatalf("upload ranking %v differs from the gallery reference's %v", up.Hits, res.Hits)
		}
	}
	// Text is still required without an image.
	wantError(t, e.postJSON("/api/search", map[string]any{"text": ""}, nil), 400, "reference image")
}

func TestRealPipelineChatContinues(t *testing.T) {
	// Turn 2 and 3 of a conversation run their own round only: one reasoner
	// call each, not one per earlier turn.
	e := newRealEnv(t, true)
	turns := []string{"a red dog", "is it on a beach? yes", "is it sunny? yes"}
	conv := ""
	var dialogue []string
	for i, text := range turns {
		before := len(e.models.promptsOf("reasoner"))
		req := map[string]any{"text": text, "chat": true, "limit": 3}
		if len(dialogue) > 0 {
			req["dialogue"] = dialogue
		}
		if conv != "" {
			req["conversation"] = conv
		}
		res := decodeResult(t, e.postJSON("/api/search", req, nil))
		if got := len(e.models.promptsOf("reasoner")) - before; got != 1 {
			t.Fatalf("turn %d: %d reasoner calls, want 1", i+1, got)
		}
		if res.Conversation == "" || (conv != "" && res.Conversation != conv) {
			t.Fatalf("turn %d: conversation %q after %q", i+1, res.Conversation, conv)
		}
		conv = res.Conversation
		dialogue = append(dialogue, text)
	}
	// A forgotten or unknown conversation still answers: the earlier
	// turns are re-read (stage 1 only).
	before := len(e.models.promptsOf("reasoner"))
	res := decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "is it sunny? yes", "dialogue": turns[:2], "conversation": "unknown"}, nil))
	if got := len(e.models.promptsOf("reasoner")) - before; got != 3 || len(res.Hits) == 0 {
		t.Fatalf("replayed chat: %d reasoner calls, %d hits", got, len(res.Hits))
	}
}

// Asking back over the API, in German: the question offered is the one
// that splits the probed candidates best, shown in German, with German
// quick answers; the reasoner got the German turn and wrote English.
func TestRealPipelineAskBack(t *testing.T) {
	e := newRealEnv(t, true)
	var res Result
	e.postJSONDecode("/api/search", map[string]any{"text": "ein Tier, vielleicht ein Hund", "chat": true, "ask": true, "stages": map[string]any{"evaluate": false}}, &res)
	a := res.Ask
	if a == nil || a.Question == "" || a.Language != "German" || a.Yes != "ja" || a.No != "nein" || a.Rule != "verifier-split" || a.Probed != 6 {
		t.Fatalf("ask %+v", a)
	}
	if len(a.Candidates) != 3 {
		t.Fatalf("want 3 proposed questions: %+v", a.Candidates)
	}
	best := 0
	for i, c := range a.Candidates {
		if c.Answered != 6 || c.Split != math.Abs(float64(c.Yes)/6-0.5) {
			t.Errorf("candidate %+v", c)
		}
		if c.Split < a.Candidates[best].Split {
			best = i
		}
	}
	if a.Chosen != best || a.Question != a.Candidates[best].Question || !strings.HasPrefix(a.Question, "Ist hier ") || !strings.HasPrefix(a.English, "Is there a ") {
		t.Errorf("chose %d (%q / %q), the best split is %d: %+v", a.Chosen, a.Question, a.English, best, a.Candidates)
	}
	st := stageMap(res)["ask"]
	if st.Status != StatusDone || st.Calls != 1+3*6 {
		t.Errorf("ask stage %+v", st)
	}
	rp := e.models.promptsOf("reasoner")
	if len(rp) != 2 || !strings.Contains(rp[0], "ein Tier, vielleicht ein Hund") || !strings.Contains(rp[0], "in English") {
		t.Fatalf("reasoner prompts %q", rp)
	}

	// The answer is the next turn; the question it answers is not asked again.
	turn := strings.TrimSuffix(a.Question, "?") + "? nein"
	var res2 Result
	e.postJSONDecode("/api/search", map[string]any{"text": turn, "dialogue": []string{"ein Tier, vielleicht ein Hund"}, "conversation": res.Conversation, "ask": true, "stages": map[string]any{"evaluate": false}}, &res2)
	if res2.Ask == nil || res2.Ask.Question == "" || res2.Ask.English == a.English {
		t.Fatalf("second question %+v", res2.Ask)
	}
	pp := e.models.promptsOf("proposer")
	if !strings.Contains(pp[len(pp)-1], turn) {
		t.Errorf("the answer did not become the turn: %q", pp[len(pp)-1])
	}

	// Composed queries cannot be asked back; without a reasoner nothing can.
	resp := e.postJSON("/api/search", map[string]any{"text": "make it red", "reference": "red_dog", "ask": true}, nil)
	if resp.StatusCode != 400 {
		t.Errorf("composed ask: status %d", resp.StatusCode)
	}
	resp.Body.Close()
	bare := newRealEnv(t, false)
	resp = bare.postJSON("/api/search", map[string]any{"text": "a dog", "chat": true, "ask": true}, nil)
	if body := readBody(t, resp); resp.StatusCode != 400 || !strings.Contains(string(body), "reasoner") {
		t.Errorf("ask without a reasoner: %d %s", resp.StatusCode, body)
	}
}

func (e *env) postJSONDecode(path string, body, out any) {
	e.t.Helper()
	resp := e.postJSON(path, body, nil)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("POST %s: status %d: %s", path, resp.StatusCode, readBody(e.t, resp))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		e.t.Fatal(err)
	}
}
