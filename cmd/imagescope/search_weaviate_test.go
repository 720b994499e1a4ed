//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// TestIntegrationSearchWeaviate indexes a folder into a real Weaviate
// (IMAGESCOPE_WEAVIATE_URL) through the queue, then runs 'search
// --weaviate' and checks its ranking equals 'search --gallery' (the
// embedded exact path) over the same images and model.
func TestIntegrationSearchWeaviate(t *testing.T) {
	wvURL := os.Getenv("IMAGESCOPE_WEAVIATE_URL")
	if wvURL == "" {
		t.Skip("IMAGESCOPE_WEAVIATE_URL not set")
	}
	url := embeddedNATS(t)
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	dir := copyFixtureImages(t, false)
	getenv := fakeEnv(map[string]string{"HOME": t.TempDir(), "IMAGESCOPE_CLIP_MODEL": model, "IMAGESCOPE_WEAVIATE_URL": wvURL})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	coll := fmt.Sprintf("ItestSearch_%d", time.Now().UnixNano())
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"index", "--queue", url, "--gallery", dir, "--weaviate", wvURL, "--collection", coll, "--job", "s"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("publish: exit %d\n%s", code, errb.String())
	}
	if code := run(ctx, []string{"worker", "--queue", url, "--job", "s", "--exit-when-idle"}, strings.NewReader(""), &out, &errb, getenv); code != 0 {
		t.Fatalf("worker exit %d\n%s", code, errb.String())
	}
	m, err := clip.Load(ctx, model, clip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if st, err := weaviate.Open(context.Background(), weaviate.Config{URLs: strings.Split(wvURL, ","), Collection: coll}, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false); err == nil {
			_ = st.Drop(context.Background())
		}
	}()

	ranking := func(args ...string) []string {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"search", "a bright square", "--clip", model, "--json", "--stages", "s1"}, args...)
		if code := run(ctx, args, strings.NewReader(""), &out, &errb, getenv); code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, errb.String())
		}
		var res struct {
			Ranking []struct{ Name string } `json:"ranking"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		var names []string
		for _, c := range res.Ranking {
			names = append(names, c.Name)
		}
		return names
	}
	got := ranking("--weaviate", coll)
	want := ranking("--gallery", dir)
	if len(want) != 4 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("search --weaviate ranked %v, the embedded path %v", got, want)
	}

	// Another CLIP model is refused with a clear message.
	errb.Reset()
	other := testutil.CLIP(t, "tiny-clip-gelu")
	if code := run(ctx, []string{"search", "x", "--clip", other, "--weaviate", coll}, strings.NewReader(""), &out, &errb, getenv); code == 0 || !strings.Contains(errb.String(), "CLIP model") {
		t.Fatalf("model mismatch: exit %d\n%s", code, errb.String())
	}
}
