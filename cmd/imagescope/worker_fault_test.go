package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/testutil"
)

// TestWorkerRidesOutFaults: queue workers captioning through a model
// server that fails 35% of its attempts (HTTP 500, 429 with Retry-After,
// bodies cut off) finish the job with nothing dead-lettered, and the image
// DB holds every image with its image embedding and the right caption.
func TestWorkerRidesOutFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("captions a gallery through a faulty model server")
	}
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-quickgelu") // has a tokenizer, for the captions
	srv := newScriptedServer(t)
	srv.mu.Lock()
	srv.faulty = true
	srv.mu.Unlock()
	srv.downAfter = 3 * time.Minute

	// Shapes in distinct colours, so every caption request differs.
	dir := filepath.Join(t.TempDir(), "photos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i, p := range palette {
		for v := range 3 { // three shapes per colour: 27 requests, so faults are all but certain
			img := image.NewRGBA(image.Rect(0, 0, 64, 48))
			for y := range 48 {
				for x := range 64 {
					c := color.RGBA{255, 255, 255, 255}
					if x >= 12+4*v && x < 52 && y >= 8 && y < 40-4*v {
						c = color.RGBA{uint8(p.r), uint8(p.g), uint8(p.b), 255}
					}
					img.Set(x, y, c)
				}
			}
			var b bytes.Buffer
			if err := png.Encode(&b, img); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("shape_%02d_%d.png", i, v)
			if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			want[name] = "A " + p.name + " shape on a white background."
		}
	}

	home := t.TempDir()
	cfgPath := filepath.Join(home, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(srv.configYAML(home, model, false)), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := fakeEnv(map[string]string{"HOME": home})
	dbPath := filepath.Join(home, "photos.db")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"index", "--queue", url, "--config", cfgPath, "--gallery", dir, "--db", dbPath, "--job", "faulty"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	// Two workers one after the other; --set reaches the queue settings.
	for w := range 2 {
		errb.Reset()
		code := run(ctx, []string{"worker", "--queue", url, "--config", cfgPath, "--set", "queue.concurrency=3", "--job", "faulty", "--exit-when-idle", "--name", fmt.Sprintf("w%d", w)},
			strings.NewReader(""), &out, &errb, getenv)
		if code != 0 {
			t.Fatalf("worker %d: exit %d\n%s", w, code, errb.String())
		}
	}
	srv.mu.Lock()
	faults := fmt.Sprint(srv.faults)
	injected := srv.faults["500"] + srv.faults["429"] + srv.faults["cut"]
	srv.mu.Unlock()
	if injected == 0 {
		t.Fatalf("no faults injected: %s", faults)
	}

	out.Reset()
	if code := run(ctx, []string{"index", "--queue", url, "--config", cfgPath, "--status", "--job", "faulty"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("status: exit %d\n%s", code, errb.String())
	}
	if s := out.String(); !strings.Contains(s, fmt.Sprintf("%d/%d done", len(want), len(want))) || !strings.Contains(s, "0 dead-lettered") {
		t.Errorf("status after the workers:\n%s", s)
	}
	db, err := gallery.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ix, err := db.Load(ctx, model, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Names) != len(want) || ix.Captions == nil {
		t.Fatalf("DB holds %d images (captions loaded: %v), want %d", len(ix.Names), ix.Captions != nil, len(want))
	}
	for i, n := range ix.Names {
		if ix.Captions[i] != want[n] {
			t.Errorf("%s: caption %q, want %q", n, ix.Captions[i], want[n])
		}
	}
	t.Logf("injected %s", faults)
}
