package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagescope/imagescope/internal/npy"
	"github.com/imagescope/imagescope/internal/testutil"
)

// captionServer is an OpenAI-compatible stub serving one captioning model.
func captionServer(t *testing.T, calls *atomic.Int64) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"stub-captioner"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct {
				Content []map[string]any `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, `{"error":{"message":"bad request"}}`, 400)
			return
		}
		hasImage := false
		for _, p := range req.Messages[0].Content {
			if p["type"] == "image_url" {
				hasImage = true
			}
		}
		if !hasImage {
			http.Error(w, `{"error":{"message":"no image"}}`, 400)
			return
		}
		n := calls.Add(1)
		json.NewEncoder(w).Encode(map[string]any{
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": fmt.Sprintf("a small test picture number %d", n)}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 6},
		})
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

type cli struct {
	env map[string]string
}

func (c cli) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb, func(k string) string { return c.env[k] })
	return out.String(), errb.String(), code
}

func indexFixture(t *testing.T, captioner bool) (cli, string) {
	dir := t.TempDir()
	g := filepath.Join(dir, "photos")
	if err := os.MkdirAll(filepath.Join(g, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	imgs := testutil.CLIP(t, "images")
	jpg := testutil.Data(t, "datasets", "MSCOCO", "images", "COCO_val2014_000000900001.jpg")
	for _, n := range []string{"square_224x224.png", "tiny_97x61.png", "landscape_400x300.png", "photo.jpg"} {
		src := filepath.Join(imgs, n)
		if n == "photo.jpg" {
			src = jpg
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(g, n)
		if strings.HasSuffix(n, ".jpg") {
			dst = filepath.Join(g, "sub", n)
		}
		os.WriteFile(dst, b, 0o644)
	}
	os.WriteFile(filepath.Join(g, "broken.png"), []byte("\x89PNG\r\n\x1a\nnot really"), 0o644)
	home := filepath.Join(dir, "home")
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	cfg := fmt.Sprintf("home: %s\nclip:\n  model: %s\n  threads: 1\ncache:\n  disabled: true\n", home, model)
	if captioner {
		var calls atomic.Int64
		s := captionServer(t, &calls)
		cfg += fmt.Sprintf("roles:\n  captioner:\n    endpoints: [%s/v1]\n    model: stub-captioner\n    max_in_flight: 2\n    retries: 0\n", s.URL)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	return cli{env: map[string]string{"IMAGESCOPE_HOME": home, "IMAGESCOPE_CONFIG": cfgPath}}, g
}

func TestIndexCommandWithCaptions(t *testing.T) {
	c, g := indexFixture(t, true)
	db := filepath.Join(t.TempDir(), "photos.db")
	out, errs, code := c.run(t, "index", "--gallery", g, "--db", db)
	if code != 0 {
		t.Fatalf("index: %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"listed:     5", "indexed:    4", "failed:     1", "captions:   yes (set stub-captioner#", "failed broken.png [decode]", "thumbnails: 4 made, 0 up to date, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("summary lacks %q:\n%s", want, out)
		}
	}
	// Again: nothing to do.
	out, _, code = c.run(t, "index", "--gallery", g, "--db", db)
	if code != 0 || !strings.Contains(out, "up to date: 4") || !strings.Contains(out, "indexed:    0") || !strings.Contains(out, "thumbnails: 0 made, 4 up to date") {
		t.Fatalf("re-index: %d\n%s", code, out)
	}
	out, _, code = c.run(t, "db", "info", "--db", db)
	if code != 0 || !strings.Contains(out, "images:           4") || !strings.Contains(out, "4 captions, 4 caption embeddings") {
		t.Fatalf("db info: %d\n%s", code, out)
	}
	// Export, import into a new DB, export again: same files' content.
	exp := t.TempDir()
	if out, errs, code = c.run(t, "db", "export", "--db", db, "--npy", exp); code != 0 {
		t.Fatalf("export: %s %s", out, errs)
	}
	names, err := npy.ReadStringsFile(filepath.Join(exp, "image_name_list.npy"))
	if err != nil || !slices.Equal(names, []string{"landscape_400x300.png", "square_224x224.png", "sub/photo.jpg", "tiny_97x61.png"}) {
		t.Fatalf("exported names %v %v", names, err)
	}
	db2 := filepath.Join(t.TempDir(), "imported.db")
	if out, errs, code = c.run(t, "db", "import", "--db", db2, "--npy", exp, "--clip", "some/other-clip"); code != 0 || !strings.Contains(out, "imported 4 images (dimension 12)") {
		t.Fatalf("import: %d %s %s", code, out, errs)
	}
	exp2 := t.TempDir()
	if out, errs, code = c.run(t, "db", "export", "--db", db2, "--npy", exp2); code != 0 {
		t.Fatalf("export 2: %s %s", out, errs)
	}
	for _, f := range []string{"image_name_list.npy", "image_caption.json"} {
		a, _ := os.ReadFile(filepath.Join(exp, f))
		b, _ := os.ReadFile(filepath.Join(exp2, f))
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs after import/export", f)
		}
	}
	// Indexing with a different CLIP model into the imported DB is refused.
	_, errs, code = c.run(t, "index", "--gallery", g, "--db", db2)
	if code == 0 || !strings.Contains(errs, "was built with CLIP model some/other-clip (dimension 12)") {
		t.Fatalf("model mismatch: %d %s", code, errs)
	}
}

func TestIndexCommandWithoutCaptioner(t *testing.T) {
	c, g := indexFixture(t, false)
	out, errs, code := c.run(t, "index", "--gallery", g)
	if code != 0 || !strings.Contains(out, "captions:   none made") || !strings.Contains(errs, "treats tau as 0") {
		t.Fatalf("index: %d\n%s\n%s", code, out, errs)
	}
	out, _, code = c.run(t, "db", "info")
	if code != 0 || !strings.Contains(out, "folder_photos_") {
		t.Fatalf("db list: %s", out)
	}
	name := strings.TrimSpace(strings.Split(out, "\n")[1])
	_, errs, code = c.run(t, "db", "export", "--name", name, "--npy", t.TempDir())
	if code != 1 || !strings.Contains(errs, "no caption embeddings") {
		t.Fatalf("export without captions: %d %s", code, errs)
	}
}

func TestIndexCommandUsage(t *testing.T) {
	c, g := indexFixture(t, false)
	for _, args := range [][]string{
		{"index"},
		{"index", "--gallery", g, "--dataset", "CIRR"},
		{"index", "--dataset", "CIRR"},
		{"index", "--gallery", g, "--embedder", "gpu"},
		{"db"},
		{"db", "frobnicate"},
		{"db", "import", "--npy", "x"},
		{"db", "export", "--db", "a", "--name", "b", "--npy", "x"},
	} {
		if _, _, code := c.run(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if _, errs, code := c.run(t, "db", "info", "--db", filepath.Join(t.TempDir(), "missing.db")); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing DB: %d %s", code, errs)
	}
}
