package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagescope/imagescope/internal/backoff"
	"github.com/imagescope/imagescope/modelrole"
)

// echo answers with the text of the last user message, so a test can check
// that every call got its own answer.
func echo(body map[string]any) string {
	msgs := body["messages"].([]any)
	m := msgs[len(msgs)-1].(map[string]any)
	if s, ok := m["content"].(string); ok {
		return "re: " + s
	}
	return "re: ?"
}

func resetConn(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func runCalls(t *testing.T, c *Client, n int) (okCount int, errs []error) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := fmt.Sprintf("q%d", i)
			r, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText(q)}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if r.Text != "re: "+q {
				t.Errorf("call %d got %q", i, r.Text)
				return
			}
			okCount++
		}()
	}
	wg.Wait()
	return okCount, errs
}

func TestFaultsInjected(t *testing.T) {
	f := newFake(t)
	f.answer = echo
	f.fault = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		switch n % 10 {
		case 1: // 10% internal errors, OpenAI-style body
			w.WriteHeader(500)
			w.Write([]byte(`{"error":{"message":"engine hiccup","type":"server_error"}}`))
		case 3: // 429 with Retry-After
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			w.Write([]byte(`{"object":"error","message":"slow down"}`))
		case 5: // connection reset without a reply
			resetConn(w)
		case 7: // truncated body: announced length not delivered
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(200)
			w.Write([]byte(`{"choices":[{"message":{"content":"par`))
			w.(http.Flusher).Flush()
			resetConn(w)
		case 8: // complete but malformed JSON
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"choices":[{"message":{"content":"half"`))
		case 9: // slower than the timeout
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
			return true
		default:
			return false
		}
		return true
	}
	cfg := testRole(baseURL(f))
	cfg.Timeout = 150 * time.Millisecond
	cfg.MaxInFlight = 8
	opt := testOptions()
	opt.FailureThreshold = 1000 // a single replica: keep it in service
	c, err := New(context.Background(), modelrole.Reasoner, cfg, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := runCalls(t, c, 120)
	for _, e := range errs {
		// Only a run of bad luck over every retry may fail, and it must say why.
		if !errors.Is(e, ErrRoleDown) || !strings.Contains(e.Error(), "reasoner (model m)") {
			t.Errorf("unclear error: %v", e)
		}
	}
	if ok+len(errs) != 120 || ok < 110 {
		t.Errorf("ok=%d errors=%d", ok, len(errs))
	}
	st := c.Stats()
	if st.Retries == 0 || st.Requests <= 120 || st.Calls != 120 || st.Failures != int64(len(errs)) {
		t.Errorf("stats = %+v", st)
	}
}

func TestTenPercent500s(t *testing.T) {
	f := newFake(t)
	f.answer = echo
	f.fault = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n%10 == 0 {
			w.WriteHeader(503)
			return true
		}
		return false
	}
	c, err := New(context.Background(), modelrole.Verifier, testRole(baseURL(f)), nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := runCalls(t, c, 200)
	if ok != 200 || len(errs) != 0 {
		t.Fatalf("ok=%d errs=%v", ok, errs)
	}
	if r := c.Stats().Retries; r < 15 {
		t.Errorf("retries = %d, want about 20", r)
	}
}

func TestRejectedNotRetried(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"error":{"message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","code":400}}`, "maximum context length is 4096"},
		{`{"object":"error","message":"At most 1 image(s) may be provided in one request.","type":"BadRequestError","code":400}`, "At most 1 image(s)"},
		{`plain text failure`, "plain text failure"},
	} {
		f := newFake(t)
		f.fault = func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.WriteHeader(400)
			w.Write([]byte(tc.body))
			return true
		}
		c, err := New(context.Background(), modelrole.Evaluator, testRole(baseURL(f)), nil, testOptions())
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("x")}})
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrRejected) || e.Status != 400 {
			t.Fatalf("err = %#v", err)
		}
		for _, s := range []string{tc.want, "evaluator", "model m", "HTTP 400"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		if n := f.requests.Load(); n != 1 {
			t.Errorf("a 400 was sent %d times", n)
		}
	}
}

func TestTimeoutThenDown(t *testing.T) {
	f := newFake(t)
	f.delay.Store(int64(time.Second))
	cfg := testRole(baseURL(f))
	cfg.Timeout = 30 * time.Millisecond
	r := 2
	cfg.Retries = &r
	opt := testOptions()
	opt.Interactive = true
	c, err := New(context.Background(), modelrole.Evaluator, cfg, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("x")}})
	if !errors.Is(err, ErrRoleDown) || !strings.Contains(err.Error(), "no reply within the 30ms timeout") || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("err = %v", err)
	}
	// The endpoint failed 3 times in a row: its breaker opens, and an
	// interactive call fails at once instead of waiting.
	f.delay.Store(int64(0))
	n := f.requests.Load()
	_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("y")}})
	if !errors.Is(err, ErrRoleDown) || f.requests.Load() != n {
		t.Fatalf("during cool-down: err = %v, requests %d -> %d", err, n, f.requests.Load())
	}
	// After the cool-down the endpoint is tried again and the role recovers.
	time.Sleep(60 * time.Millisecond)
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("z")}}); err != nil {
		t.Fatalf("after cool-down: %v", err)
	}
}

func TestCancelStopsPromptly(t *testing.T) {
	f := newFake(t)
	f.delay.Store(int64(5 * time.Second))
	cfg := testRole(baseURL(f))
	cfg.Timeout = 10 * time.Second
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = c.Chat(ctx, ChatRequest{Messages: []Message{UserText("x")}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestInFlightLimit(t *testing.T) {
	a, b := newFake(t), newFake(t)
	for _, f := range []*fakeServer{a, b} {
		f.answer = echo
		f.delay.Store(int64(5 * time.Millisecond))
	}
	cfg := testRole(baseURL(a), baseURL(b))
	cfg.MaxInFlight = 3
	c, err := New(context.Background(), modelrole.Verifier, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := runCalls(t, c, 150)
	if ok != 150 {
		t.Fatalf("ok=%d errs=%v", ok, errs)
	}
	for i, f := range []*fakeServer{a, b} {
		if p := f.peak.Load(); p > 3 {
			t.Errorf("server %d saw %d requests in flight, limit 3", i, p)
		}
		if p := f.peak.Load(); p < 2 {
			t.Errorf("server %d peak %d: the limit was not used", i, p)
		}
	}
}

func TestBalancingAndDeadReplica(t *testing.T) {
	a, b, dead := newFake(t), newFake(t), newFake(t)
	for _, f := range []*fakeServer{a, b} {
		f.answer = echo
		f.delay.Store(int64(2 * time.Millisecond))
	}
	deadURL := baseURL(dead)
	dead.Close()
	cfg := testRole(baseURL(a), deadURL, baseURL(b))
	cfg.MaxInFlight = 4
	cfg.Cooldown = time.Minute
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := runCalls(t, c, 200)
	if ok != 200 {
		t.Fatalf("ok=%d errs=%v", ok, errs)
	}
	na, nb := a.requests.Load(), b.requests.Load()
	if na < 60 || nb < 60 {
		t.Errorf("load not spread: a=%d b=%d", na, nb)
	}
	st := c.Stats()
	var deadStats EndpointStats
	for _, e := range st.Endpoints {
		if e.URL == deadURL {
			deadStats = e
		}
	}
	if !deadStats.CoolingDown || deadStats.Requests > 10 {
		t.Errorf("dead replica: %+v (want cooling down after a few tries)", deadStats)
	}
}

func TestBackoffAndRetryAfter(t *testing.T) {
	c := &Client{opt: Options{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, RetryAfterMax: 5 * time.Second}}
	for n := 1; n <= 8; n++ {
		ceil := min(100*time.Millisecond<<(n-1), time.Second)
		for i := 0; i < 50; i++ {
			if d := c.backoff(n, 0); d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, ceiling %v", n, d, ceil)
			}
		}
	}
	if d := c.backoff(1, 3*time.Second); d != 3*time.Second {
		t.Errorf("Retry-After not honoured: %v", d)
	}
	if d := c.backoff(1, time.Hour); d != 5*time.Second {
		t.Errorf("Retry-After not capped: %v", d)
	}
	if d := backoff.ParseRetryAfter("7"); d != 7*time.Second {
		t.Errorf("retryAfter(7) = %v", d)
	}
	if d := backoff.ParseRetryAfter(time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("retryAfter(date) = %v", d)
	}
	if d := backoff.ParseRetryAfter("soon"); d != 0 {
		t.Errorf("retryAfter(soon) = %v", d)
	}
}

func TestEmbeddings(t *testing.T) {
	f := newFake(t)
	c, err := New(context.Background(), modelrole.Embedder, testRole(baseURL(f)), nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.EmbedText(context.Background(), "a red dress")
	if err != nil || len(v) != 3 || v[2] != 3 {
		t.Fatalf("text: %v %v", v, err)
	}
	if b := f.lastBody(); b["input"] != "a red dress" || b["model"] != "m" || b["encoding_format"] != "float" {
		t.Errorf("text body = %v", b)
	}
	v, err = c.EmbedImage(context.Background(), testImage(8, 8))
	if err != nil || len(v) != 4 {
		t.Fatalf("image: %v %v", v, err)
	}
	b := f.lastBody()
	parts := b["messages"].([]any)[0].(map[string]any)["content"].([]any)
	p := parts[0].(map[string]any)
	if len(parts) != 1 || p["type"] != "image_url" || !strings.HasPrefix(p["image_url"].(map[string]any)["url"].(string), "data:image/jpeg;base64,") {
		t.Errorf("image body = %v", b)
	}
	if _, err := c.EmbedText(context.Background(), ""); err == nil {
		t.Error("empty text accepted")
	}
}
