//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// TestIntegrationWorkerIntoWeaviate indexes a folder through the queue into
// a real Weaviate (IMAGESCOPE_WEAVIATE_URL) and searches it.
func TestIntegrationWorkerIntoWeaviate(t *testing.T) {
	wvURL := os.Getenv("IMAGESCOPE_WEAVIATE_URL")
	if wvURL == "" {
		t.Skip("IMAGESCOPE_WEAVIATE_URL not set")
	}
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-gelu")
	dir := copyFixtureImages(t, true)
	getenv := fakeEnv(map[string]string{"HOME": t.TempDir(), "IMAGESCOPE_CLIP_MODEL": model})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	coll := fmt.Sprintf("ItestCli_%d", time.Now().UnixNano())
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"index", "--queue", url, "--gallery", dir, "--weaviate", wvURL, "--collection", coll, "--job", "wv"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	// Two workers, one after the other; the second finds nothing left.
	for range 2 {
		if code := run(ctx, []string{"worker", "--queue", url, "--job", "wv", "--exit-when-idle", "--max-attempts", "2"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
			t.Fatalf("worker exit %d\n%s", code, errb.String())
		}
	}
	m, err := clip.Load(ctx, model, clip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := weaviate.Open(ctx, weaviate.Config{URLs: strings.Split(wvURL, ","), Collection: coll}, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Drop(context.Background()) }()
	ix, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Names) != 4 {
		t.Fatalf("collection holds %v", ix.Names)
	}
	// Search through Weaviate equals exact search over the same vectors.
	// (The fixture model ships no tokenizer: use image vectors as queries.)
	var descs [][]float32
	for _, i := range []int{0, 2} {
		descs = append(descs, append([]float32(nil), ix.Vector(i)...))
	}
	q := []vindex.Query{{Descriptions: descs, Tau: 0.15}}
	want, err := ix.Search(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Search(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Hit.Index differs (Search reports gallery positions, the loaded index
	// is compacted around the failed image); names and scores must agree.
	for i := range want[0] {
		want[0][i].Index = 0
	}
	for i := range got[0] {
		got[0][i].Index = 0
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("weaviate %v, exact %v", got, want)
	}
	out.Reset()
	if code := run(ctx, []string{"index", "--queue", url, "--status", "--job", "wv"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("status exit %d", code)
	}
	if !strings.Contains(out.String(), "4/5 done") || !strings.Contains(out.String(), "broken.png") {
		t.Fatalf("status:\n%s", out.String())
	}
}

// TestIntegrationWeaviateDiesMidRun: Weaviate stops while workers write;
// the worker retries with backoff, then stops with the remaining items
// still queued; after a restart a new worker finishes and every image is in
// the collection exactly once. Needs IMAGESCOPE_WEAVIATE_STOP and
// IMAGESCOPE_WEAVIATE_START (shell commands for the single node).
func TestIntegrationWeaviateDiesMidRun(t *testing.T) {
	wvURL := os.Getenv("IMAGESCOPE_WEAVIATE_URL")
	stopCmd, startCmd := os.Getenv("IMAGESCOPE_WEAVIATE_STOP"), os.Getenv("IMAGESCOPE_WEAVIATE_START")
	if wvURL == "" || stopCmd == "" || startCmd == "" {
		t.Skip("IMAGESCOPE_WEAVIATE_URL/_STOP/_START not set")
	}
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-gelu")
	src := copyFixtureImages(t, false)
	dir := t.TempDir()
	const copies = 40
	ents, _ := os.ReadDir(src)
	total := 0
	for c := range copies {
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("c%02d_%s", c, e.Name())), b, 0o644); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	getenv := fakeEnv(map[string]string{"HOME": t.TempDir(), "IMAGESCOPE_CLIP_MODEL": model})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	coll := fmt.Sprintf("ItestDies_%d", time.Now().UnixNano())
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"index", "--queue", url, "--gallery", dir, "--weaviate", wvURL, "--collection", coll, "--job", "dies"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	sh := func(c string) {
		if b, err := exec.CommandContext(ctx, "sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, b)
		}
	}
	status := func() string {
		var o, e bytes.Buffer
		run(ctx, []string{"index", "--queue", url, "--status", "--job", "dies"}, strings.NewReader(""), &o, &e, getenv)
		return o.String()
	}
	var werr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		var o bytes.Buffer
		done <- run(ctx, []string{"worker", "--queue", url, "--job", "dies", "--exit-when-idle"}, strings.NewReader(""), &o, &werr, getenv)
	}()
	// Stop Weaviate once some items are written.
	for !strings.Contains(status(), "job dies: 1") && !strings.Contains(status(), "job dies: 2") {
		select {
		case code := <-done:
			t.Fatalf("worker finished (exit %d) before Weaviate was stopped; status %s", code, status())
		case <-time.After(50 * time.Millisecond):
		}
	}
	sh(stopCmd)
	code := <-done
	mid := status()
	t.Logf("worker after Weaviate stopped: exit %d\n%s", code, mid)
	if code == 0 || !strings.Contains(werr.String(), "weaviate unavailable") {
		t.Fatalf("worker exit %d; stderr:\n%s", code, werr.String())
	}
	if strings.Contains(mid, "finished") || strings.Contains(mid, " 0 pending") {
		t.Fatalf("nothing left after the failure?\n%s", mid)
	}
	sh(startCmd)
	if code := run(ctx, []string{"worker", "--queue", url, "--job", "dies", "--exit-when-idle"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("second worker exit %d\n%s", code, errb.String())
	}
	final := status()
	if !strings.Contains(final, fmt.Sprintf("%d/%d done", total, total)) || !strings.Contains(final, "0 dead-lettered") {
		t.Fatalf("final status:\n%s", final)
	}
	m, err := clip.Load(ctx, model, clip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := weaviate.Open(ctx, weaviate.Config{URLs: strings.Split(wvURL, ","), Collection: coll}, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Drop(context.Background()) }()
	if c, err := st.Count(ctx); err != nil || c != total {
		t.Fatalf("collection holds %d objects (%v), want %d", c, err, total)
	}
}
