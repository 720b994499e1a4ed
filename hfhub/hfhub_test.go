package hfhub

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const commitA = "0123456789abcdef0123456789abcdef01234567"

type hubFile struct {
	data []byte
	lfs  bool
}

// fakeHub behaves like the hub's resolve endpoint: regular files answer
// HEAD with ETag, LFS files redirect to a CDN path with X-Linked-Etag and
// X-Linked-Size; the CDN honours Range. Errors carry X-Error-Code.
type fakeHub struct {
	*httptest.Server
	repos map[string]map[string]hubFile
	gated map[string]bool
	token string
	// cutFirst: the first CDN GET of an LFS file is cut after this many bytes.
	cutFirst int
	cut      atomic.Bool
	corrupt  bool
	mu       sync.Mutex
	ranges   []string
	cdnAuth  []string
	gets     atomic.Int64
}

func newHub(t *testing.T) *fakeHub {
	h := &fakeHub{repos: map[string]map[string]hubFile{}, gated: map[string]bool{}}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func etagOf(f hubFile) string {
	if f.lfs {
		s := sha256.Sum256(f.data)
		return hex.EncodeToString(s[:])
	}
	s := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(f.data))), f.data...))
	return hex.EncodeToString(s[:])
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/cdn/") {
		h.serveCDN(w, r)
		return
	}
	// /{org}/{name}/resolve/{rev}/{file...}
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 5)
	if len(parts) < 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	repo, rev, name := parts[0]+"/"+parts[1], parts[3], parts[4]
	files, ok := h.repos[repo]
	if !ok {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.Header().Set("X-Error-Message", "Repository not found")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if h.gated[repo] && r.Header.Get("Authorization") != "Bearer "+h.token {
		w.Header().Set("X-Error-Code", "GatedRepo")
		w.Header().Set("X-Error-Message", "Access to model "+repo+" is restricted.")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if rev != "main" && rev != commitA {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", commitA)
	f, ok := files[name]
	if !ok {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if f.lfs {
		w.Header().Set("X-Linked-Etag", `"`+etagOf(f)+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(f.data)))
		w.Header().Set("ETag", `"`+etagOf(f)+`"`)
		w.Header().Set("Location", h.URL+"/cdn/"+repo+"/"+name)
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+etagOf(f)+`"`)
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", fmt.Sprint(len(f.data)))
		return
	}
	w.Write(f.data)
}

func (h *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	h.gets.Add(1)
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/cdn/"), "/", 3)
	f := h.repos[parts[0]+"/"+parts[1]][parts[2]]
	h.mu.Lock()
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	h.cdnAuth = append(h.cdnAuth, r.Header.Get("Authorization"))
	h.mu.Unlock()
	data := f.data
	if h.corrupt {
		data = bytes.ToUpper(data)
	}
	if h.cutFirst > 0 && h.cut.CompareAndSwap(false, true) {
		// Announce the whole file, send part, drop the connection.
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:h.cutFirst])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func testClient(h *fakeHub, home string, extra map[string]string) *Client {
	env := map[string]string{"HF_HOME": home, "HF_ENDPOINT": h.URL}
	for k, v := range extra {
		env[k] = v
	}
	return NewClient(Options{Getenv: func(k string) string { return env[k] }})
}

func bigData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func TestSnapshotLayoutResumeOffline(t *testing.T) {
	h := newHub(t)
	weights := hubFile{data: bigData(300_000), lfs: true}
	cfg := hubFile{data: []byte(`{"projection_dim": 512}`)}
	h.repos["org/model"] = map[string]hubFile{"config.json": cfg, "model.safetensors": weights, "sub/vocab.json": {data: []byte(`{}`)}}
	h.cutFirst = 100_000
	home := t.TempDir()
	c := testClient(h, home, map[string]string{"HF_TOKEN": "tok"})
	var last sync.Map
	dir, err := c.Snapshot(context.Background(), "org/model", "", []File{{Name: "config.json"}, {Name: "model.safetensors"}, {Name: "sub/vocab.json"}, {Name: "tokenizer.json", Optional: true}},
		func(name string, done, total int64) { last.Store(name, [2]int64{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(home, "hub", "models--org--model")
	if dir != filepath.Join(repo, "snapshots", commitA) {
		t.Errorf("dir = %s", dir)
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "refs", "main")); string(b) != commitA {
		t.Errorf("refs/main = %q", b)
	}
	for name, f := range map[string]hubFile{"config.json": cfg, "model.safetensors": weights, "sub/vocab.json": {data: []byte(`{}`)}} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("%s: not a symlink: %v", name, err)
		}
		if filepath.IsAbs(target) || filepath.Clean(filepath.Join(filepath.Dir(p), target)) != filepath.Join(repo, "blobs", etagOf(f)) {
			t.Errorf("%s -> %s, want relative link to blobs/%s", name, target, etagOf(f))
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, f.data) {
			t.Errorf("%s: content differs (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, ".no_exist", commitA, "tokenizer.json")); err != nil {
		t.Errorf("missing optional file not recorded: %v", err)
	}
	// The cut download resumed with a Range request; no token went to the CDN host? (same host here, so it is sent).
	h.mu.Lock()
	ranges := append([]string(nil), h.ranges...)
	h.mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=100000-" {
		t.Errorf("CDN ranges = %q, want a resume from 100000", ranges)
	}
	if v, _ := last.Load("model.safetensors"); v != [2]int64{300_000, 300_000} {
		t.Errorf("last progress = %v", v)
	}
	matches, _ := filepath.Glob(filepath.Join(repo, "blobs", "*.incomplete"))
	if len(matches) != 0 {
		t.Errorf("leftover partial files: %v", matches)
	}

	// Again: everything cached, no new download.
	gets := h.gets.Load()
	if _, err := c.Snapshot(context.Background(), "org/model", "main", []File{{Name: "model.safetensors"}}, nil); err != nil {
		t.Fatal(err)
	}
	if h.gets.Load() != gets {
		t.Error("cached blob downloaded again")
	}

	// Offline: served from the cache; an unknown repo fails clearly.
	off := testClient(h, home, map[string]string{"HF_HUB_OFFLINE": "1"})
	h.Close()
	d2, err := off.Snapshot(context.Background(), "org/model", "main", []File{{Name: "config.json"}, {Name: "tokenizer.json", Optional: true}}, nil)
	if err != nil || d2 != dir {
		t.Errorf("offline: %s %v", d2, err)
	}
	_, err = off.Snapshot(context.Background(), "org/other", "main", []File{{Name: "config.json"}}, nil)
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") {
		t.Errorf("offline miss: %v", err)
	}
	_, err = off.Snapshot(context.Background(), "org/model", "main", []File{{Name: "missing.bin"}}, nil)
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "missing.bin") {
		t.Errorf("offline missing file: %v", err)
	}
	// Hub down but cache complete: falls back to the cache.
	down := testClient(h, home, nil)
	if d3, err := down.Snapshot(context.Background(), "org/model", "main", []File{{Name: "config.json"}}, nil); err != nil || d3 != dir {
		t.Errorf("unreachable hub with complete cache: %s %v", d3, err)
	}
}

func TestResumeFromExistingPartial(t *testing.T) {
	h := newHub(t)
	w := hubFile{data: bigData(50_000), lfs: true}
	h.repos["org/m"] = map[string]hubFile{"model.safetensors": w}
	home := t.TempDir()
	blobs := filepath.Join(home, "hub", "models--org--m", "blobs")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, etagOf(w)+".incomplete"), w.data[:12345], 0o644)
	c := testClient(h, home, nil)
	dir, err := c.Snapshot(context.Background(), "org/m", commitA, []File{{Name: "model.safetensors"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); !bytes.Equal(got, w.data) {
		t.Error("resumed content differs")
	}
	if len(h.ranges) != 1 || h.ranges[0] != "bytes=12345-" {
		t.Errorf("ranges = %q", h.ranges)
	}
	if _, err := os.Stat(filepath.Join(home, "hub", "models--org--m", "refs")); err == nil {
		t.Error("a commit revision must not write a ref")
	}
}

func TestErrors(t *testing.T) {
	h := newHub(t)
	h.repos["org/m"] = map[string]hubFile{"config.json": {data: []byte("{}")}, "model.safetensors": {data: bigData(1000), lfs: true}}
	h.repos["meta/gated"] = map[string]hubFile{"config.json": {data: []byte("{}")}}
	h.gated["meta/gated"] = true
	h.token = "good"
	home := t.TempDir()
	c := testClient(h, home, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		repo, rev, file string
		is              error
		says            string
	}{
		{"org/nope", "main", "config.json", ErrUnauthorized, "HF_TOKEN"},
		{"meta/gated", "main", "config.json", ErrGated, "HF_TOKEN"},
		{"org/m", "main", "nothere.bin", ErrNotFound, "nothere.bin"},
		{"org/m", "v9", "config.json", ErrNotFound, `revision "v9"`},
	} {
		_, err := c.Snapshot(ctx, tc.repo, tc.rev, []File{{Name: tc.file}}, nil)
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.repo) {
			t.Errorf("%s@%s %s: err = %v, want %v mentioning %q", tc.repo, tc.rev, tc.file, err, tc.is, tc.says)
		}
	}
	// With the token the gated repo works.
	ok := testClient(h, home, map[string]string{"HF_TOKEN": "good"})
	if _, err := ok.Snapshot(ctx, "meta/gated", "main", []File{{Name: "config.json"}}, nil); err != nil {
		t.Errorf("gated with token: %v", err)
	}
	// Corrupt content is refused and not kept.
	h.corrupt = true
	_, err := c.Snapshot(ctx, "org/m", "main", []File{{Name: "model.safetensors"}}, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("corrupt: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(home, "hub", "models--org--m", "blobs", "*"))
	for _, m := range matches {
		if !strings.HasSuffix(m, ".lock") {
			t.Errorf("corrupt download left %s", m)
		}
	}
	for _, bad := range []string{"../x", "a//b", "/abs"} {
		if _, err := c.Snapshot(ctx, "org/m", "main", []File{{Name: bad}}, nil); err == nil {
			t.Errorf("file %q accepted", bad)
		}
	}
	if _, err := c.Snapshot(ctx, "not a repo", "main", []File{{Name: "x"}}, nil); err == nil {
		t.Error("bad repo id accepted")
	}
}

func TestEnvironment(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "token"), []byte("filetok\n"), 0o600)
	c := NewClient(Options{Getenv: func(k string) string {
		return map[string]string{"HF_HOME": home}[k]
	}})
	if c.endpoint != DefaultEndpoint || c.token != "filetok" || c.CacheDir() != filepath.Join(home, "hub") || c.Offline() {
		t.Errorf("client = %+v", c)
	}
	c = NewClient(Options{Getenv: func(k string) string {
		return map[string]string{"HOME": "/h", "HF_HUB_CACHE": "/c", "HF_ENDPOINT": "http://mirror/", "HF_HUB_OFFLINE": "true"}[k]
	}})
	if c.endpoint != "http://mirror" || c.CacheDir() != "/c" || !c.Offline() {
		t.Errorf("client = %+v", c)
	}
}

func TestConcurrentSnapshots(t *testing.T) {
	h := newHub(t)
	w := hubFile{data: bigData(200_000), lfs: true}
	h.repos["org/m"] = map[string]hubFile{"model.safetensors": w, "config.json": {data: []byte("{}")}}
	home := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	dirs := make([]string, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = testClient(h, home, nil).Snapshot(context.Background(), "org/m", "main", []File{{Name: "config.json"}, {Name: "model.safetensors"}}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil || dirs[i] != dirs[0] {
			t.Fatalf("snapshot %d: %s %v", i, dirs[i], err)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dirs[0], "model.safetensors")); !bytes.Equal(got, w.data) {
		t.Error("content differs")
	}
	if n := h.gets.Load(); n != 1 {
		t.Errorf("the blob was downloaded %d times, want 1 (lock)", n)
	}
}

func TestRelativeRedirect(t *testing.T) {
	h := newHub(t)
	h.repos["org/new"] = map[string]hubFile{"config.json": {data: []byte(`{"a":1}`)}}
	inner := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/org/old/") { // renamed repository
			http.Redirect(w, r, strings.Replace(r.URL.Path, "/org/old/", "/org/new/", 1), http.StatusTemporaryRedirect)
			return
		}
		inner.ServeHTTP(w, r)
	})
	dir, err := testClient(h, t.TempDir(), nil).Snapshot(context.Background(), "org/old", "main", []File{{Name: "config.json"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config.json")); string(b) != `{"a":1}` {
		t.Errorf("content %q", b)
	}
}
