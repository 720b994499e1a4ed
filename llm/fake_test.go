package llm

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagescope/imagescope/config"
)

// fakeServer speaks the OpenAI wire format for tests: GET /v1/models and
// POST /v1/chat/completions and /v1/embeddings. fault, when set, may take
// over a request (return true when it wrote a reply).
type fakeServer struct {
	*httptest.Server
	models []string
	delay  atomic.Int64 // time.Duration
	fault  func(w http.ResponseWriter, r *http.Request, n int64) bool
	answer func(body map[string]any) string // reply text
	// show is Ollama's POST /api/show reply ("": 404, not Ollama); such
	// calls are not counted in requests.
	show     string
	showHits atomic.Int64
	requests atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64
	mu       sync.Mutex
	bodies   []map[string]any
}

func newFake(t *testing.T) *fakeServer {
	f := &fakeServer{models: []string{"m"}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/models" {
		var data []map[string]string
		for _, m := range f.models {
			data = append(data, map[string]string{"id": m, "object": "model", "root": "org/" + m})
		}
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/api/show" {
		f.showHits.Add(1)
		if f.show == "" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(f.show))
		return
	}
	cur := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if cur <= p || f.peak.CompareAndSwap(p, cur) {
			break
		}
	}
	n := f.requests.Add(1)
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		w.WriteHeader(400)
		w.Write([]byte(`{"object":"error","message":"bad json"}`))
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	if f.fault != nil && f.fault(w, r, n) {
		return
	}
	if d := time.Duration(f.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	switch r.URL.Path {
	case "/v1/chat/completions":
		text := "ok"
		if f.answer != nil {
			text = f.answer(body)
		}
		resp := map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
		}
		if body["logprobs"] == true {
			resp["choices"].([]any)[0].(map[string]any)["logprobs"] = map[string]any{"content": []any{
				map[string]any{"token": "\u2581", "logprob": -0.01, "top_logprobs": []any{}},
				map[string]any{"token": "Yes", "logprob": -0.2, "top_logprobs": []any{
					map[string]any{"token": "Yes", "logprob": -0.2},
					map[string]any{"token": "\u2581no", "logprob": -2.0},
					map[string]any{"token": "yes", "logprob": -3.0},
					map[string]any{"token": "maybe", "logprob": -5.0},
				}},
			}}
		}
		json.NewEncoder(w).Encode(resp)
	case "/v1/embeddings":
		vec := []float64{1, 2, 3}
		if _, ok := body["messages"]; ok {
			vec = []float64{4, 5, 6, 7}
		}
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": []any{map[string]any{"index": 0, "embedding": vec}}, "usage": map[string]any{"prompt_tokens": 3}})
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeServer) lastBody() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

func testRole(endpoints ...string) config.Role {
	zero := 0.0
	retries := 6
	return config.Role{
		Endpoints:   endpoints,
		Model:       "m",
		MaxInFlight: 4,
		Timeout:     2 * time.Second,
		Retries:     &retries,
		Cooldown:    50 * time.Millisecond,
		Temperature: &zero,
		Image:       config.Image{Format: "jpeg", Quality: 90},
	}
}

func testOptions() Options {
	return Options{BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, RetryAfterMax: 200 * time.Millisecond}
}

func baseURL(f *fakeServer) string { return f.URL + "/v1" }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func resizeTo(im config.Image, w, h int) config.Image {
	im.Width, im.Height = w, h
	return im
}
