package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/testutil"
)

func embeddedNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// fakeEnv is a getenv that knows only vars.
func fakeEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// TestQueueIndexIntoDB publishes a folder, runs two workers into the
// embedded DB and checks the DB, the status and the dead letter of a
// corrupt file.
func TestQueueIndexIntoDB(t *testing.T) {
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-gelu")
	imgs := testutil.CLIP(t, "images")
	dir := filepath.Join(t.TempDir(), "photos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"gray_320x240.png", "landscape_400x300.png", "square_224x224.png", "tiny_97x61.png"}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(imgs, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.png"), []byte("\x89PNG\r\n\x1a\nnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	dbPath := filepath.Join(home, "g.db")
	getenv := func(k string) string {
		switch k {
		case "HOME":
			return home
		case "IMAGESCOPE_CLIP_MODEL":
			return model
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.DiscardHandler), getenv: getenv}
	if code := run(ctx, []string{"index", "--queue", url, "--gallery", dir, "--db", dbPath, "--job", "photos"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "queued 5 items") {
		t.Fatalf("publish output: %s", out.String())
	}
	for w := range 2 {
		code := run(ctx, []string{"worker", "--queue", url, "--job", "photos", "--exit-when-idle", "--max-attempts", "2", "--name", "w" + string(rune('0'+w))},
			strings.NewReader(""), &out, &errb, getenv)
		if code != 0 {
			t.Fatalf("worker exit %d\n%s", code, errb.String())
		}
	}
	db, err := gallery.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ix, err := db.Load(ctx, model, gallery.NoCaptions)
	if err != nil {
		// The model id may be the cleaned directory path.
		t.Fatal(err)
	}
	if len(ix.Names) != len(names) {
		t.Fatalf("DB holds %v, want %v", ix.Names, names)
	}
	out.Reset()
	if code := run(ctx, []string{"index", "--queue", url, "--status", "--job", "photos"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("status: exit %d\n%s", code, errb.String())
	}
	// --status through runIndexQueue directly, as JSON.
	out.Reset()
	if err := runIndexQueue(ctx, e, []string{"--queue", url, "--status", "--json"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"dead_letters": 1`) || !strings.Contains(out.String(), "broken.png") {
		t.Errorf("JSON status:\n%s", out.String())
	}
	out.Reset()
	if err := runIndexQueue(ctx, e, []string{"--queue", url, "--status", "--job", "photos"}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"4/5 done", "1 dead-lettered", "broken.png", "finished"} {
		if !strings.Contains(s, want) {
			t.Errorf("status lacks %q:\n%s", want, s)
		}
	}
}

// copyFixtureImages puts a few fixture images (and one corrupt file when
// broken is set) into a new folder.
func copyFixtureImages(t *testing.T, broken bool) string {
	t.Helper()
	imgs := testutil.CLIP(t, "images")
	dir := filepath.Join(t.TempDir(), "photos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"gray_320x240.png", "landscape_400x300.png", "square_224x224.png", "tiny_97x61.png"} {
		b, err := os.ReadFile(filepath.Join(imgs, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if broken {
		if err := os.WriteFile(filepath.Join(dir, "broken.png"), []byte("\x89PNG\r\n\x1a\nnot really"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestWorkerWeaviateUnreachable: the worker stops with an error naming the
// URL and every item stays queued for a later run.
func TestWorkerWeaviateUnreachable(t *testing.T) {
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-gelu")
	dir := copyFixtureImages(t, false)
	getenv := fakeEnv(map[string]string{"HOME": t.TempDir(), "IMAGESCOPE_CLIP_MODEL": model})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"index", "--queue", url, "--gallery", dir, "--weaviate", "http://127.0.0.1:1", "--job", "wv"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	errb.Reset()
	code := run(ctx, []string{"worker", "--queue", url, "--job", "wv", "--exit-when-idle"}, strings.NewReader(""), &out, &errb, getenv)
	if code == 0 || !strings.Contains(errb.String(), "http://127.0.0.1:1") {
		t.Fatalf("worker exit %d, stderr:\n%s", code, errb.String())
	}
	out.Reset()
	if code := run(ctx, []string{"index", "--queue", url, "--status", "--job", "wv"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("status exit %d", code)
	}
	if !strings.Contains(out.String(), "0/4 done") || !strings.Contains(out.String(), "4 pending") {
		t.Fatalf("items were not kept:\n%s", out.String())
	}
}
