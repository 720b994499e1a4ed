//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// TestIntegrationEvalServeWeaviate fills a real Weaviate
// (IMAGESCOPE_WEAVIATE_URL) with fixture benchmark galleries through the
// queue (captioned by the scripted model server, written in batches), then
// checks that 'eval --weaviate' writes the same rankings at every stage as
// 'eval' over the embedded image DB, and that 'serve --weaviate' answers
// searches with the same results as 'serve --db'.
func TestIntegrationEvalServeWeaviate(t *testing.T) {
	wvURL := os.Getenv("IMAGESCOPE_WEAVIATE_URL")
	if wvURL == "" {
		t.Skip("IMAGESCOPE_WEAVIATE_URL not set")
	}
	natsURL := embeddedNATS(t)
	f := newEvalFixture(t, true)
	env := func(k string) string {
		if k == "IMAGESCOPE_WEAVIATE_URL" {
			return wvURL
		}
		return f.env(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m, err := clip.Load(ctx, testutil.CLIP(t, "tiny-clip-quickgelu"), clip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(ctx, args, strings.NewReader(""), &out, &errb, env); code != 0 {
			t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	for _, tc := range []struct {
		dataset, split string
		extra          []string
	}{
		{"CIRCO", "val", nil},
		{"CIRR", "val", nil},
		{"CIRR", "val", []string{"--subset"}},
		{"FashionIQ-dress", "val", nil},
	} {
		name := tc.dataset + "_" + tc.split + strings.Join(tc.extra, "")
		t.Run(name, func(t *testing.T) {
			coll := fmt.Sprintf("Itest_%s_%d", strings.NewReplacer("-", "", "_", "").Replace(name), time.Now().UnixNano())
			defer func() {
				if st, err := weaviate.Open(context.Background(), weaviate.Config{URLs: strings.Split(wvURL, ","), Collection: coll}, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false); err == nil {
					_ = st.Drop(context.Background())
				}
			}()
			job := "j" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(name))
			cli("index", "--config", f.cfgPath, "--queue", natsURL, "--dataset", tc.dataset, "--data", f.data, "--split", tc.split,
				"--weaviate", wvURL, "--collection", coll, "--job", job)
			_, werr := cli("worker", "--config", f.cfgPath, "--queue", natsURL, "--job", job, "--exit-when-idle", "--concurrency", "8")
			// Items processed together were written together.
			bm := regexp.MustCompile(`weaviate writes.* objects=(\d+) batches=(\d+)`).FindStringSubmatch(werr)
			if bm == nil {
				t.Fatalf("worker did not report its batch writes:\n%s", werr)
			}
			var objs, batches int
			fmt.Sscan(bm[1], &objs)
			fmt.Sscan(bm[2], &batches)
			if batches >= objs {
				t.Errorf("%d objects in %d batch requests: no batching", objs, batches)
			}

			runs := filepath.Join(f.root, "runs-"+name)
			args := append([]string{"eval", "--config", f.cfgPath, "--dataset", tc.dataset, "--data", f.data, "--split", tc.split, "--runs", runs}, tc.extra...)
			cli(append(args, "--run-name", "embedded")...)
			cli(append(args, "--run-name", "weaviate", "--weaviate", coll)...)
			dirs, _ := filepath.Glob(filepath.Join(runs, "*", "*"))
			if len(dirs) != 2 {
				t.Fatalf("run folders %v", dirs)
			}
			var emb, wv string
			for _, d := range dirs {
				if strings.Contains(filepath.Base(d), "-weaviate_") {
					wv = d
				} else {
					emb = d
				}
			}
			for _, stage := range []string{"stage1", "stage2", "stage3"} {
				a, err1 := os.ReadFile(filepath.Join(emb, "rankings."+stage+".json"))
				b, err2 := os.ReadFile(filepath.Join(wv, "rankings."+stage+".json"))
				if err1 != nil || err2 != nil {
					t.Fatalf("rankings: %v %v", err1, err2)
				}
				if !bytes.Equal(a, b) {
					t.Errorf("%s rankings differ:\nembedded %s\nweaviate %s", stage, a, b)
				}
			}
		})
	}

	// serve --weaviate answers like serve --db over the same gallery.
	coll := fmt.Sprintf("ItestServe_%d", time.Now().UnixNano())
	defer func() {
		if st, err := weaviate.Open(context.Background(), weaviate.Config{URLs: strings.Split(wvURL, ","), Collection: coll}, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false); err == nil {
			_ = st.Drop(context.Background())
		}
	}()
	cli("index", "--config", f.cfgPath, "--queue", natsURL, "--dataset", "CIRCO", "--data", f.data, "--split", "test",
		"--weaviate", wvURL, "--collection", coll, "--job", "serve")
	cli("worker", "--config", f.cfgPath, "--queue", natsURL, "--job", "serve", "--exit-when-idle", "--concurrency", "4")
	db := filepath.Join(f.root, "circo-test.db")
	cli("index", "--config", f.cfgPath, "--dataset", "CIRCO", "--data", f.data, "--split", "test", "--db", db)
	searchAll := func(args ...string) []string {
		base, _, stop := startServe(t, ctx, env, append([]string{"serve", "--config", f.cfgPath, "--addr", "127.0.0.1:0", "--max-stage", "3"}, args...))
		defer stop()
		var out []string
		for _, q := range []string{`{"text":"a red circle"}`, `{"text":"something blue with corners","limit":5}`, `{"text":"a yellow shape","limit":10}`} {
			resp, err := http.Post(base+"api/search", "application/json", strings.NewReader(q))
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Results []struct {
					Name  string  `json:"name"`
					Score float64 `json:"score"`
				} `json:"results"`
			}
			err = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || len(res.Results) == 0 {
				t.Fatalf("%v %s: HTTP %d %v %+v", args, q, resp.StatusCode, err, res)
			}
			for _, r := range res.Results {
				out = append(out, fmt.Sprintf("%s %.5f", r.Name, math.Round(r.Score*1e5)/1e5))
			}
		}
		return out
	}
	want := searchAll("--db", db)
	got := searchAll("--weaviate", coll)
	// Working files (thumbnails) go under the home, not the current folder.
	if m, _ := filepath.Glob("weaviate:*"); len(m) > 0 {
		t.Errorf("serve --weaviate wrote %v into the current folder", m)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("serve --weaviate answered\n%s\nserve --db\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
