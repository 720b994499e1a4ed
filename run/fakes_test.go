package run

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
)

// hashVec is a deterministic pseudo-embedding of a string.
func hashVec(s string, dim int) []float32 {
	v := make([]float32, dim)
	h := sha256.Sum256([]byte(s))
	seed := binary.LittleEndian.Uint64(h[:8])
	for i := range v {
		seed = seed*6364136223846793005 + 1442695040888963407
		v[i] = float32(int32(seed>>33)) / float32(math.MaxInt32)
	}
	return l2.Normalized(v)
}

// fakeGallery is an exact fused-score index over hash embeddings.
type fakeGallery struct {
	names    []string
	img, cap [][]float32
	pos      map[string]int
}

func newFakeGallery(n, dim int) *fakeGallery {
	g := &fakeGallery{pos: map[string]int{}}
	for i := range n {
		name := fmt.Sprintf("img%04d", i)
		g.names = append(g.names, name)
		g.img = append(g.img, hashVec("i"+name, dim))
		g.cap = append(g.cap, hashVec("c"+name, dim))
		g.pos[name] = i
	}
	return g
}

func (g *fakeGallery) Lookup(name string) (int, bool)     { i, ok := g.pos[name]; return i, ok }
func (g *fakeGallery) Caption(name string) (string, bool) { return "caption of " + name, true }
func (g *fakeGallery) HasCaptions() bool                  { return true }

func (g *fakeGallery) Search(ctx context.Context, qs []pipeline.SearchQuery, k int) ([][]pipeline.Hit, error) {
	var out [][]pipeline.Hit
	for _, q := range qs {
		allow := map[int]bool{}
		for _, i := range q.Restrict {
			allow[i] = true
		}
		excl := map[int]bool{}
		for _, i := range q.Exclude {
			excl[i] = true
		}
		var hits []pipeline.Hit
		for j := range g.names {
			if (q.Restrict != nil && !allow[j]) || excl[j] {
				continue
			}
			var s float32
			for _, t := range q.Descriptions {
				var a, b float32
				for d := range t {
					a += t[d] * g.img[j][d]
					b += t[d] * g.cap[j][d]
				}
				s += (1-q.Tau)*a + q.Tau*b
			}
			hits = append(hits, pipeline.Hit{Index: j, Name: g.names[j], Score: s / float32(len(q.Descriptions))})
		}
		sort.SliceStable(hits, func(a, b int) bool { return hits[a].Score > hits[b].Score })
		if k > 0 && len(hits) > k {
			hits = hits[:k]
		}
		out = append(out, hits)
	}
	return out, nil
}

type hashEmbedder struct{ dim int }

func (h hashEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, s := range texts {
		out[i] = hashVec(s, h.dim)
	}
	return out, nil
}

type nameImages struct{}

func (nameImages) Image(ctx context.Context, name string) (pipeline.ImageData, error) {
	return pipeline.ImageData{Bytes: []byte(name), MIME: "image/png"}, nil
}

// latencyServer is an OpenAI-compatible server playing one role with a
// fixed capacity (concurrent requests served; more wait in line) and a
// fixed latency per request.
type latencyServer struct {
	*httptest.Server
	role     string
	latency  time.Duration
	slots    chan struct{}
	requests atomic.Int64
}

func newLatencyServer(t testing.TB, role string, capacity int, latency time.Duration) *latencyServer {
	s := &latencyServer{role: role, latency: latency, slots: make(chan struct{}, capacity)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q}]}`, role)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Messages []struct {
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		text := ""
		for _, m := range body.Messages {
			text += string(m.Content)
		}
		s.slots <- struct{}{}
		time.Sleep(s.latency)
		<-s.slots
		s.requests.Add(1)
		out := latencyReply(role, text)
		json.NewEncoder(w).Encode(map[string]any{
			"id": "x", "object": "chat.completion", "model": role,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": out}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
		})
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func hbit(s string, salt string) bool {
	h := sha256.Sum256([]byte(salt + s))
	return h[0]&1 == 1
}

// latencyReply answers deterministically from the request text.
func latencyReply(role, text string) string {
	switch role {
	case "reasoner":
		if strings.Contains(text, "[question,") {
			return "```json\n{\"step1\": [\"a\", \"b\"], \"step2\": [[\"Is it red?\", \"True\"], [\"Is there a dog?\", \"False\"], [\"Is it outdoors?\", \"True\"], [\"Is it night?\", \"False\"]]}\n```"
		}
		h := sha256.Sum256([]byte(text))
		d := fmt.Sprintf("%x", h[:4])
		return "```json\n{\"step1\": [[\"Addition\", \"x\"]], \"step2\": [\"target " + d + "\", \"target " + d + " detail\", \"target " + d + " full\"]}\n```"
	case "verifier":
		if hbit(text, "v") {
			return "yes"
		}
		return "no"
	case "evaluator":
		h := sha256.Sum256([]byte(text))
		if h[0] < 40 {
			return "ANSWER: Yes\nfits"
		}
		return "ANSWER: No\nno"
	}
	return ""
}

// llmChatter adapts an llm.Client (test copy of the command's adapter).
type llmChatter struct{ c *llm.Client }

func (a llmChatter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	lr := llm.ChatRequest{MaxTokens: req.MaxTokens}
	for _, m := range req.Messages {
		lm := llm.Message{Role: m.Role}
		for _, p := range m.Parts {
			if p.Image != nil {
				lm.Parts = append(lm.Parts, llm.TextPart("[image "+string(p.Image.Bytes)+"]"))
			} else {
				lm.Parts = append(lm.Parts, llm.TextPart(p.Text))
			}
		}
		lr.Messages = append(lr.Messages, lm)
	}
	resp, err := a.c.Chat(ctx, lr)
	if err != nil {
		return nil, err
	}
	return &pipeline.ChatResponse{Text: resp.Text, Cached: resp.Cached}, nil
}

// benchSetup builds an engine whose roles are latency servers.
type benchSetup struct {
	servers map[string]*latencyServer
	engine  *pipeline.Engine
	ds      *dataset.Dataset
}

func newBenchSetup(t testing.TB, queries, galleryN int, capacity map[string]int, latency map[string]time.Duration) *benchSetup {
	b := &benchSetup{servers: map[string]*latencyServer{}}
	roles := pipeline.Roles{}
	inflight := map[modelrole.Name]int{}
	for _, role := range []string{"reasoner", "verifier", "evaluator"} {
		s := newLatencyServer(t, role, capacity[role], latency[role])
		b.servers[role] = s
		rc := config.Role{Endpoints: config.StringList{s.URL + "/v1"}, Model: role, MaxInFlight: 4 * capacity[role], Timeout: time.Minute}
		zero := 0
		rc.Retries = &zero
		c, err := llm.New(context.Background(), modelrole.Name(role), rc, nil, llm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ch := llmChatter{c}
		switch role {
		case "reasoner":
			roles.Reasoner = ch
		case "verifier":
			roles.Verifier = ch
		case "evaluator":
			roles.Evaluator = ch
		}
		// The client keeps a few requests queued beyond the server's
		// capacity so the server never idles between requests.
		inflight[modelrole.Name(role)] = 2 * capacity[role]
	}
	inflight[modelrole.Proposer] = inflight[modelrole.Reasoner]
	g := newFakeGallery(galleryN, 32)
	opt := pipeline.DefaultOptions()
	opt.InFlight = inflight
	// Every "image" decodes to a small grey square and the stage-3
	// composition is a small stand-in: this setup measures how calls are
	// scheduled on the servers, not image work on a shared CPU.
	decode := func([]byte) (image.Image, error) { return image.NewGray(image.Rect(0, 0, 16, 16)), nil }
	compose := func(ref, cand image.Image) image.Image { return image.NewGray(image.Rect(0, 0, 32, 16)) }
	eng, err := pipeline.New(pipeline.Config{Embedder: hashEmbedder{32}, Searcher: g, Gallery: g, Images: nameImages{}, Decode: decode, Compose: compose, Roles: roles, Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	b.engine = eng
	ds := &dataset.Dataset{Name: "Flickr30K", Split: "test", Task: dataset.TextToImage, Domain: "general"}
	for _, n := range g.names {
		ds.Gallery = append(ds.Gallery, dataset.Image{Name: n, Path: n})
	}
	for i := range queries {
		ds.Queries = append(ds.Queries, dataset.Query{ID: fmt.Sprint(i), Instruction: fmt.Sprintf("query number %d", i), Targets: []string{g.names[(i*7)%galleryN]}})
	}
	b.ds = ds
	return b
}

func (b *benchSetup) requests() map[string]int64 {
	out := map[string]int64{}
	for k, s := range b.servers {
		out[k] = s.requests.Load()
	}
	return out
}

// rankOnlyScorer is a minimal scorer for tests of the run package alone.
func rankOnlyScorer(ds *dataset.Dataset, lists map[string][]string, rounds map[string][][]string) (json.RawMessage, string, error) {
	hit := 0
	for _, q := range ds.Queries {
		l := lists[q.ID]
		for i, n := range l {
			if i < 10 && len(q.Targets) > 0 && n == q.Targets[0] {
				hit++
			}
		}
	}
	v := float64(hit) / float64(len(ds.Queries))
	b, _ := json.Marshal(map[string]float64{"recall@10": v})
	return b, fmt.Sprintf("recall@10 %.2f\n", 100*v), nil
}
