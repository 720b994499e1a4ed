package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagescope/imagescope/internal/backoff"
	"github.com/nats-io/nats-server/v2/server"
)

// startServer runs an embedded JetStream server for one test.
func startServer(t *testing.T) string {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func connect(t *testing.T, url string) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := Connect(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func items(n int) []Item {
	out := make([]Item, n)
	for i := range out {
		out[i] = Item{Name: fmt.Sprintf("img%04d.jpg", i), Path: fmt.Sprintf("/data/img%04d.jpg", i), Ord: i}
	}
	return out
}

// memStore is an idempotent store that counts writes per item.
type memStore struct {
	mu     sync.Mutex
	items  map[string]Item
	writes map[string]int
}

func newMemStore() *memStore {
	return &memStore{items: map[string]Item{}, writes: map[string]int{}}
}

func (s *memStore) Process(ctx context.Context, job *Job, it Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[it.Name] = it
	s.writes[it.Name]++
	return nil
}

func TestConnectUnreachableNamesURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Connect(ctx, "nats://127.0.0.1:1", Options{ConnectTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "nats://127.0.0.1:1") {
		t.Fatalf("err = %v, want one naming the URL", err)
	}
}

func TestPublishWorkStatus(t *testing.T) {
	url := startServer(t)
	pub := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 60
	job := Job{ID: "gal-1", Gallery: "folder:/photos", Store: "db:/tmp/x.db", CLIPModel: "tiny"}
	st, err := pub.Publish(ctx, job, items(n))
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != n || st.Duplicate != 0 {
		t.Fatalf("publish stats %+v", st)
	}
	// Publishing again inside the duplicate window queues nothing new.
	st, err = pub.Publish(ctx, job, items(n))
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 0 || st.Duplicate != n {
		t.Fatalf("second publish stats %+v", st)
	}
	s0, err := pub.Status(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s0.Pending != n || s0.Done != 0 || s0.Job.Total != n || s0.Job.Published != n {
		t.Fatalf("status before work: %+v", s0)
	}

	store := newMemStore()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := connect(t, url)
			_, errs[w] = q.Work(ctx, store, WorkerOptions{Name: fmt.Sprintf("w%d", w), Concurrency: 4, ExitWhenIdle: true, PollInterval: 200 * time.Millisecond})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(store.items) != n {
		t.Fatalf("store has %d items, want %d", len(store.items), n)
	}
	for name, c := range store.writes {
		if c != 1 {
			t.Errorf("%s written %d times", name, c)
		}
	}
	s1, err := pub.Status(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Done != n || s1.Pending != 0 || s1.InFlight != 0 || s1.Dead != 0 || !s1.Finished() {
		t.Fatalf("status after work: %+v", s1)
	}
	var sum uint64
	for _, c := range s1.Workers {
		sum += c
	}
	if sum != n {
		t.Fatalf("per-worker counts %v sum to %d, want %d", s1.Workers, sum, n)
	}
	var b strings.Builder
	if err := s1.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "60/60 done") {
		t.Fatalf("status text:\n%s", b.String())
	}
}

func TestDeadLetters(t *testing.T) {
	url := startServer(t)
	q := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	job := Job{ID: "dl"}
	its := []Item{
		{Name: "good.jpg", Path: "/p/good.jpg"},
		{Name: "corrupt.jpg", Path: "/p/corrupt.jpg"},
		{Name: "flaky.jpg", Path: "/p/flaky.jpg"},
		{Name: "broken.jpg", Path: "/p/broken.jpg"},
	}
	if _, err := q.Publish(ctx, job, its); err != nil {
		t.Fatal(err)
	}
	raw := map[string]string{
		`{not json`: "malformed item message",
		`{"v":1,"job":"dl","name":"x.jpg","path":""}`:            "field path is empty",
		`{"v":9,"job":"dl","name":"y.jpg","path":"/p/y.jpg"}`:    "version 9",
		`{"v":1,"job":"other","name":"z.jpg","path":"/p/z.jpg"}`: `names job "other"`,
		`{"v":1,"job":"dl","name":"w.jpg","path":"/p","ex":1}`:   "unknown field",
	}
	for payload := range raw {
		if err := q.PublishRaw(ctx, job.ID, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	attempts := map[string]int{}
	p := ProcessorFunc(func(ctx context.Context, job *Job, it Item) error {
		mu.Lock()
		attempts[it.Name]++
		a := attempts[it.Name]
		mu.Unlock()
		switch it.Name {
		case "corrupt.jpg":
			return Permanent(errors.New("decode image: unexpected EOF"))
		case "flaky.jpg":
			if a < 2 {
				return errors.New("captioner: 503")
			}
		case "broken.jpg":
			return errors.New("captioner: 500 always")
		}
		return nil
	})
	ws, err := q.Work(ctx, p, WorkerOptions{Name: "solo", ExitWhenIdle: true, MaxAttempts: 3,
		Retry: backoff.Policy{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}, PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Done != 2 || ws.DeadLettered != 2+len(raw) {
		t.Fatalf("worker stats %+v", ws)
	}
	if attempts["broken.jpg"] != 3 || attempts["flaky.jpg"] != 2 || attempts["corrupt.jpg"] != 1 {
		t.Fatalf("attempts %v", attempts)
	}
	st, err := q.Status(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Done != 2 || st.Dead != uint64(2+len(raw)) || st.Pending != 0 {
		t.Fatalf("status %+v", st)
	}
	dls, err := q.DeadLetters(ctx, job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2+len(raw) {
		t.Fatalf("%d dead letters", len(dls))
	}
	found := map[string]bool{}
	for _, d := range dls {
		if d.Reason == "" || d.Worker != "solo" {
			t.Errorf("dead letter without reason or worker: %+v", d)
		}
		if want, ok := raw[d.Data]; ok {
			if !strings.Contains(d.Reason, want) {
				t.Errorf("dead letter %q: reason %q, want it to contain %q", d.Data, d.Reason, want)
			}
			found[d.Data] = true
		}
		if strings.Contains(d.Data, "corrupt.jpg") && !strings.Contains(d.Reason, "unexpected EOF") {
			t.Errorf("corrupt.jpg reason %q", d.Reason)
		}
		if strings.Contains(d.Data, "broken.jpg") && (d.Attempts != 3 || !strings.Contains(d.Reason, "500 always")) {
			t.Errorf("broken.jpg dead letter %+v", d)
		}
	}
	if len(found) != len(raw) {
		t.Errorf("malformed messages dead-lettered: %d of %d", len(found), len(raw))
	}
}

func TestFatalStopsWorkerAndKeepsItem(t *testing.T) {
	url := startServer(t)
	q := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := q.Publish(ctx, Job{ID: "f"}, items(3)); err != nil {
		t.Fatal(err)
	}
	down := errors.New("store http://127.0.0.1:1 unreachable")
	_, err := q.Work(ctx, ProcessorFunc(func(context.Context, *Job, Item) error { return Fatal(down) }),
		WorkerOptions{ExitWhenIdle: true, PollInterval: 200 * time.Millisecond})
	if !errors.Is(err, down) {
		t.Fatalf("err = %v", err)
	}
	// Nothing lost: a healthy worker later finishes all three.
	store := newMemStore()
	if _, err := q.Work(ctx, store, WorkerOptions{ExitWhenIdle: true, PollInterval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if len(store.items) != 3 {
		t.Fatalf("store has %d items", len(store.items))
	}
}

// fileStore writes one file per item (atomically) and logs every attempt;
// it is what the worker subprocess uses so that a SIGKILL can hit it at any
// point.
type fileStore struct {
	dir   string
	delay time.Duration
}

func (s fileStore) Process(ctx context.Context, job *Job, it Item) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "attempts.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(it.Name + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	final := filepath.Join(s.dir, "items", ItemKey(it.Name))
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "items"), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(it.Name); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), final)
}

const helperEnv = "IMAGESCOPE_QUEUE_HELPER_WORKER"

// TestHelperWorkerProcess is the worker subprocess of TestKillWorkerMidBatch.
func TestHelperWorkerProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process")
	}
	ctx := context.Background()
	q, err := Connect(ctx, os.Getenv(helperEnv), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	_, err = q.Work(ctx, fileStore{dir: os.Getenv("HELPER_DIR"), delay: 30 * time.Millisecond},
		WorkerOptions{Name: "victim", Concurrency: 4, AckWait: time.Second, PollInterval: 200 * time.Millisecond})
	fmt.Fprintln(os.Stderr, err)
	os.Exit(4)
}

func TestKillWorkerMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	url := startServer(t)
	q := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "items"), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 120
	if _, err := q.Publish(ctx, Job{ID: "kill"}, items(n)); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+url, "HELPER_DIR="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the worker while it holds a batch: after it has written some
	// items but long before it is done.
	written := func() int {
		es, _ := os.ReadDir(filepath.Join(dir, "items"))
		c := 0
		for _, e := range es {
			if !strings.HasPrefix(e.Name(), ".tmp-") {
				c++
			}
		}
		return c
	}
	for written() < 10 {
		if ctx.Err() != nil {
			t.Fatalf("worker subprocess made no progress: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAt := written()
	if killedAt >= n {
		t.Fatalf("worker finished (%d items) before it was killed", killedAt)
	}
	mid, err := q.Status(ctx, "kill")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after %d items written; status: done %d, in flight %d, pending %d", killedAt, mid.Done, mid.InFlight, mid.Pending)

	// A second worker takes over; the victim's in-flight items come back
	// after the ack wait.
	if _, err := q.Work(ctx, fileStore{dir: dir}, WorkerOptions{Name: "rescuer", Concurrency: 4, AckWait: time.Second,
		ExitWhenIdle: true, PollInterval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	es, err := os.ReadDir(filepath.Join(dir, "items"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "items", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if ItemKey(string(b)) != e.Name() {
			t.Errorf("item file %s holds %q", e.Name(), b)
		}
		got[string(b)]++
	}
	for _, it := range items(n) {
		if got[it.Name] != 1 {
			t.Errorf("%s indexed %d times", it.Name, got[it.Name])
		}
	}
	if len(got) != n {
		t.Errorf("%d distinct items indexed, want %d", len(got), n)
	}
	st, err := q.Status(ctx, "kill")
	if err != nil {
		t.Fatal(err)
	}
	if st.Done != n || st.Pending != 0 || st.Dead != 0 {
		t.Fatalf("final status %+v", st)
	}
	if st.Workers["victim"] == 0 || st.Workers["rescuer"] == 0 {
		t.Fatalf("per-worker progress %v: both workers should have processed items", st.Workers)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "attempts.log"))
	t.Logf("%d write attempts for %d items (redelivered items are written again, idempotently)", strings.Count(string(log), "\n"), n)
}
