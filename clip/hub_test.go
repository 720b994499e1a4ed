package clip

import (
	"context"
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
	"testing"

	"github.com/imagescope/imagescope/hfhub"
	"github.com/imagescope/imagescope/internal/testutil"
)

// fakeHub serves a local directory as repo org/tiny-clip through the hub's
// resolve endpoint and records which files were downloaded.
func fakeHub(t *testing.T, dir string) (*httptest.Server, func() []string) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix := "/org/tiny-clip/resolve/"
		if !strings.HasPrefix(r.URL.Path, prefix) {
			w.Header().Set("X-Error-Code", "RepoNotFound")
			http.Error(w, "no such repo", http.StatusUnauthorized)
			return
		}
		rest := strings.TrimPrefix(r.URL.Path, prefix)
		_, name, _ := strings.Cut(rest, "/")
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			http.Error(w, "entry not found", http.StatusNotFound)
			return
		}
		sum := sha256.Sum256(data)
		w.Header().Set("X-Repo-Commit", commit)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method == http.MethodGet {
			mu.Lock()
			got = append(got, name)
			mu.Unlock()
			w.Write(data)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

func TestLoadFromHub(t *testing.T) {
	src := testutil.CLIP(t, "tiny-clip-quickgelu")
	srv, downloaded := fakeHub(t, src)
	cache := t.TempDir()
	noenv := func(string) string { return "" }
	ctx := context.Background()
	m, err := Load(ctx, "org/tiny-clip", Options{Threads: 1, Hub: hfhub.NewClient(hfhub.Options{Endpoint: srv.URL, CacheDir: cache, Getenv: noenv})})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID() != "org/tiny-clip" || m.Layout() != LayoutHF || m.Tokenizer() == nil {
		t.Fatalf("id %q layout %s tokenizer %v", m.ID(), m.Layout(), m.Tokenizer() != nil)
	}
	if !strings.HasPrefix(m.Dir(), filepath.Join(cache, "models--org--tiny-clip", "snapshots")) {
		t.Errorf("dir %s is not in the hub cache layout", m.Dir())
	}
	for _, f := range downloaded() {
		if f == "open_clip_model.safetensors" {
			t.Error("downloaded the open_clip weights as well as the HF ones")
		}
	}
	local, err := Load(ctx, src, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m.EmbedTexts(ctx, []string{"a photo of a cat"})
	b, _ := local.EmbedTexts(ctx, []string{"a photo of a cat"})
	checkClose(t, "hub vs local", a[0].Vector, b[0].Vector, 0)

	// Offline, from the cache only, with the server gone.
	srv.Close()
	off, err := Load(ctx, "org/tiny-clip", Options{Threads: 1, Hub: hfhub.NewClient(hfhub.Options{CacheDir: cache, Offline: true, Getenv: noenv})})
	if err != nil {
		t.Fatalf("offline: %v", err)
	}
	c, _ := off.EmbedTexts(ctx, []string{"a photo of a cat"})
	checkClose(t, "offline vs local", c[0].Vector, b[0].Vector, 0)

	// Unknown repo offline: a clear error.
	_, err = Load(ctx, "org/other", Options{Hub: hfhub.NewClient(hfhub.Options{CacheDir: cache, Offline: true, Getenv: noenv})})
	if err == nil || !strings.Contains(err.Error(), "org/other") {
		t.Errorf("missing repo offline: %v", err)
	}
}

func TestLoadFromHubOpenCLIPOnly(t *testing.T) {
	// A repo with only the open_clip files.
	src := testutil.CLIP(t, "tiny-clip-quickgelu")
	dir := t.TempDir()
	for _, f := range []string{"open_clip_config.json", "open_clip_model.safetensors", "vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	srv, _ := fakeHub(t, dir)
	m, err := Load(context.Background(), "org/tiny-clip", Options{Threads: 1,
		Hub: hfhub.NewClient(hfhub.Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Getenv: func(string) string { return "" }})})
	if err != nil {
		t.Fatal(err)
	}
	if m.Layout() != LayoutOpenCLIP {
		t.Errorf("layout %s", m.Layout())
	}
	// A repo that is not there.
	_, err = Load(context.Background(), "nobody/nothing", Options{
		Hub: hfhub.NewClient(hfhub.Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Getenv: func(string) string { return "" }})})
	if err == nil || !errors.Is(err, hfhub.ErrUnauthorized) {
		t.Errorf("unknown repo: %v", err)
	}
}

// TestLoadHubUnreachableSaysWhatToDo: with the hub out of reach and nothing
// cached, the error names the cause and every way forward.
func TestLoadHubUnreachableSaysWhatToDo(t *testing.T) {
	noenv := func(string) string { return "" }
	srv := httptest.NewServer(http.NotFoundHandler())
	endpoint := srv.URL
	srv.Close() // nothing listens there any more
	cases := []struct {
		name string
		opt  hfhub.Options
		want []string
		is   error
	}{
		{"unreachable", hfhub.Options{Endpoint: endpoint, CacheDir: t.TempDir(), Getenv: noenv},
			[]string{"cannot reach " + endpoint, "not in the HF cache", "HF_ENDPOINT", "HF_HUB_OFFLINE=1", "--clip DIR"}, hfhub.ErrUnreachable},
		{"offline", hfhub.Options{CacheDir: t.TempDir(), Offline: true, Getenv: noenv},
			[]string{"HF_HUB_OFFLINE=1", "not in the cache", "--clip DIR"}, hfhub.ErrOffline},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(context.Background(), "org/some-clip", Options{Hub: hfhub.NewClient(c.opt)})
			if err == nil || !errors.Is(err, c.is) {
				t.Fatalf("err %v, want %v", err, c.is)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
