package llm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

// mortal is a fake model server that can die (its listener closed, every
// connection refused) and come back on the same address.
type mortal struct {
	*fakeServer
	addr string
	mu   sync.Mutex
}

func newMortal(t *testing.T) *mortal {
	f := &fakeServer{models: []string{"m"}}
	f.answer = echo
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	m := &mortal{fakeServer: f, addr: f.Listener.Addr().String()}
	t.Cleanup(func() { m.mu.Lock(); m.Server.Close(); m.mu.Unlock() })
	return m
}

func (m *mortal) die() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Server.CloseClientConnections()
	m.Server.Close()
}

func (m *mortal) revive(t *testing.T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("revive %s: %v", m.addr, err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	m.Server = s
}

func (m *mortal) url() string { return "http://" + m.addr + "/v1" }

// faults35 fails 35% of attempts: 20% HTTP 500, 10% 429 with Retry-After,
// 5% a reply body cut off mid-way.
func faults35(w http.ResponseWriter, r *http.Request, n int64) bool {
	switch n % 20 {
	case 1, 5, 9, 13:
		w.WriteHeader(500)
		w.Write([]byte(`{"error":{"message":"engine hiccup","type":"server_error"}}`))
	case 3, 15:
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(429)
		w.Write([]byte(`{"object":"error","message":"slow down"}`))
	case 7:
		w.Header().Set("Content-Length", "400")
		w.WriteHeader(200)
		w.Write([]byte(`{"choices":[{"message":{"content":"par`))
		w.(http.Flusher).Flush()
		resetConn(w)
	default:
		return false
	}
	return true
}

// TestBatchRidesOutFaults: a batch client makes every call succeed against
// a server failing 35% of attempts, and counts what happened.
func TestBatchRidesOutFaults(t *testing.T) {
	m := newMortal(t)
	m.fault = faults35
	cfg := testRole(m.url())
	cfg.MaxInFlight = 8
	zero := 0 // the retry count bounds interactive calls only
	cfg.Retries = &zero
	c, err := New(context.Background(), modelrole.Reasoner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := runCalls(t, c, 200)
	if ok != 200 {
		t.Fatalf("ok=%d errors=%v", ok, errs)
	}
	st := c.Stats()
	if st.Failures != 0 || st.CutOff == 0 || st.Retries < 50 || st.Requests != 200+st.Retries {
		t.Errorf("stats = %+v", st)
	}
}

// TestBatchRidesOutOutage: the server dies and comes back within the
// down_after window; every call of a batch client succeeds.
func TestBatchRidesOutOutage(t *testing.T) {
	m := newMortal(t)
	cfg := testRole(m.url())
	cfg.DownAfter = 10 * time.Second
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	m.die()
	go func() { time.Sleep(300 * time.Millisecond); m.revive(t) }()
	ok, errs := runCalls(t, c, 40)
	if ok != 40 {
		t.Fatalf("ok=%d errors=%v", ok, errs)
	}
	st := c.Stats()
	if st.Endpoints[0].Breaker.Opens == 0 || st.Endpoints[0].Breaker.State.String() != "closed" {
		t.Errorf("breaker did not open and close again: %+v", st.Endpoints[0].Breaker)
	}
}

// TestBatchDownAfterWindow: a server that stays dead past down_after makes
// the role down, with an error that says so once; when it is back, the
// next probe closes the breaker.
func TestBatchDownAfterWindow(t *testing.T) {
	m := newMortal(t)
	cfg := testRole(m.url())
	cfg.DownAfter = 300 * time.Millisecond
	c, err := New(context.Background(), modelrole.Verifier, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	m.die()
	_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("a")}})
	if !errors.Is(err, ErrRoleDown) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	if strings.Count(msg, "verifier") != 1 || !strings.Contains(msg, m.addr) || !strings.Contains(msg, "refused") {
		t.Errorf("error should name the role, endpoint and cause once: %s", msg)
	}
	// Down: a new call fails at once while the breaker is open.
	t0 := time.Now()
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("b")}}); !errors.Is(err, ErrRoleDown) || !strings.Contains(err.Error(), "down_after") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("a call to a down role took %v", d)
	}
	m.revive(t)
	time.Sleep(cfg.Cooldown + 20*time.Millisecond)
	if r, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("c")}}); err != nil || r.Text != "re: c" {
		t.Fatalf("after revival: %v %v", r, err)
	}
}

// TestInteractiveHeals: an interactive client fails fast while the server
// is dead, still answers cached requests, and uses the server again within
// one cool-down once it is back.
func TestInteractiveHeals(t *testing.T) {
	m := newMortal(t)
	cache, err := OpenCache(filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	cfg := testRole(m.url())
	cfg.Cooldown = 200 * time.Millisecond
	two := 2
	cfg.Retries = &two
	opt := testOptions()
	opt.Interactive = true
	c, err := New(context.Background(), modelrole.Reasoner, cfg, cache, opt)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(q string) (*ChatResponse, error) {
		return c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText(q)}})
	}
	if _, err := ask("cached"); err != nil {
		t.Fatal(err)
	}
	m.die()
	if _, err := ask("x"); !errors.Is(err, ErrRoleDown) {
		t.Fatalf("dead server: %v", err)
	}
	n := m.requests.Load()
	t0 := time.Now()
	_, err = ask("y")
	if !errors.Is(err, ErrRoleDown) || !strings.Contains(err.Error(), "circuit is open") || !strings.Contains(err.Error(), "next probe in") {
		t.Fatalf("open breaker: %v", err)
	}
	if time.Since(t0) > time.Second {
		t.Error("an open breaker did not fail fast")
	}
	if r, err := ask("cached"); err != nil || !r.Cached || r.Text != "re: cached" {
		t.Fatalf("cached answer during the outage: %v %v", r, err)
	}
	st := c.Stats().Endpoints[0].Breaker
	if st.State.String() != "open" || st.LastError == "" || st.NextProbe.IsZero() {
		t.Errorf("breaker status %+v", st)
	}
	m.revive(t)
	deadline := time.Now().Add(cfg.Cooldown + 500*time.Millisecond)
	for {
		r, err := ask("z")
		if err == nil && r.Text == "re: z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healed within one cool-down: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.requests.Load() == n {
		t.Error("no request reached the revived server")
	}
}

// TestInFlightDedup: identical requests in flight together are sent once;
// the waiters share the answer and count as cache hits.
func TestInFlightDedup(t *testing.T) {
	f := newFake(t)
	f.answer = echo
	f.delay.Store(int64(100 * time.Millisecond))
	c, err := New(context.Background(), modelrole.Verifier, testRole(baseURL(f)), nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("same")}})
			if err == nil && r.Text != "re: same" {
				err = fmt.Errorf("got %q", r.Text)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	if n := f.requests.Load(); n != 1 {
		t.Errorf("%d requests for 10 identical calls", n)
	}
	if st.Calls != 10 || st.CacheHits != 9 || st.Shared != 9 || st.CacheMisses != 1 {
		t.Errorf("stats = %+v", st)
	}
	// A waiter whose own context ends stops waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	go c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("slow")}})
	time.Sleep(5 * time.Millisecond)
	if _, err := c.Chat(ctx, ChatRequest{Messages: []Message{UserText("slow")}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter err = %v", err)
	}
}
