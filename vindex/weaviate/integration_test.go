//go:build integration

// Integration tests against a real Weaviate (see scripts/weaviate.sh and the
// Weaviate section of .ci/run):
//
//	IMAGESCOPE_WEAVIATE_URL            single node REST URL(s), comma-separated
//	IMAGESCOPE_WEAVIATE_CLUSTER_URLS   3-node cluster REST URLs
//	IMAGESCOPE_WEAVIATE_CLUSTER_GRPC   their gRPC addresses (same order)
//	IMAGESCOPE_WEAVIATE_KILL           shell command that kills the cluster's first node
package weaviate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate/synth"
)

func envList(name string) []string {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func objects(ix *vindex.Index) []Object {
	d := ix.Dim
	out := make([]Object, ix.Len())
	for i := range out {
		out[i] = Object{Name: ix.Names[i], Path: "/g/" + ix.Names[i], Caption: "caption of " + ix.Names[i], Ord: i,
			Image: ix.Image[i*d : (i+1)*d], CaptionVec: ix.Caption[i*d : (i+1)*d]}
	}
	return out
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano(), rand.IntN(1000))
}

func meanOverlap(t *testing.T, got, want [][]vindex.Hit, k int) float64 {
	t.Helper()
	var s float64
	for i := range want {
		s += synth.Overlap(got[i], want[i], k)
		// Hits present in both carry the same (exact) score.
		ws := map[string]float32{}
		for _, h := range want[i] {
			ws[h.Name] = h.Score
		}
		for _, h := range got[i] {
			if w, ok := ws[h.Name]; ok && w != h.Score {
				t.Fatalf("query %d: %s scored %v, exact %v", i, h.Name, h.Score, w)
			}
		}
	}
	return s / float64(len(want))
}

func TestIntegrationSingleNode(t *testing.T) {
	urls := envList("IMAGESCOPE_WEAVIATE_URL")
	if urls == nil {
		t.Skip("IMAGESCOPE_WEAVIATE_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const n, d = 3000, 64
	g := synth.New(synth.Params{N: n, Dim: d, Seed: 7})
	ix := g.Gallery()
	ix.Paths, ix.Captions = make([]string, n), make([]string, n)
	for i := range n {
		ix.Paths[i], ix.Captions[i] = "/g/"+ix.Names[i], "caption of "+ix.Names[i]
	}
	cfg := Config{URLs: urls, Collection: uniqueName("ItestSingle")}
	meta := Meta{CLIPModel: "test/clip-64", Dim: d, HasCaptions: true, Gallery: "synthetic"}
	st, err := Open(ctx, cfg, meta, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Drop(context.Background()) }()

	// The collection carries the raised cap on the dynamic ef.
	res, err := http.Get(urls[0] + "/v1/schema/" + cfg.Collection)
	if err != nil {
		t.Fatal(err)
	}
	var cls struct {
		VectorConfig map[string]struct {
			VectorIndexConfig struct {
				DynamicEfMax int `json:"dynamicEfMax"`
			} `json:"vectorIndexConfig"`
		} `json:"vectorConfig"`
	}
	err = json.NewDecoder(res.Body).Decode(&cls)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{VectorImage, VectorCaption} {
		if got := cls.VectorConfig[v].VectorIndexConfig.DynamicEfMax; got != DefaultDynamicEfMax {
			t.Fatalf("vector %s: dynamicEfMax = %d, want %d", v, got, DefaultDynamicEfMax)
		}
	}

	t0 := time.Now()
	if err := st.Upsert(ctx, objects(ix)); err != nil {
		t.Fatal(err)
	}
	t.Logf("inserted %d objects in %v", n, time.Since(t0))
	// Idempotent: writing everything again changes nothing.
	if err := st.Upsert(ctx, objects(ix)[:500]); err != nil {
		t.Fatal(err)
	}
	if c, err := st.Count(ctx); err != nil || c != n {
		t.Fatalf("count = %d, %v; want %d", c, err, n)
	}
	back, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if back.Names[i] != ix.Names[i] || back.Paths[i] != ix.Paths[i] || back.Captions[i] != ix.Captions[i] {
			t.Fatalf("object %d read back as %q %q %q", i, back.Names[i], back.Paths[i], back.Captions[i])
		}
	}
	for j := range ix.Image {
		if back.Image[j] != ix.Image[j] || back.Caption[j] != ix.Caption[j] {
			t.Fatalf("vector value %d changed in the round trip", j)
		}
	}
	names, err := st.Names(ctx)
	if err != nil || len(names) != n || names[17] != ix.Names[17] {
		t.Fatalf("Names: %d names, err %v", len(names), err)
	}
	cat, err := st.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := cat.Lookup(ix.Names[42]); !ok || i != 42 || !cat.HasCaptions() || cat.Len() != n {
		t.Fatalf("catalog lookup %d %v, len %d", i, ok, cat.Len())
	}
	if c, ok := cat.Caption(ix.Names[42]); !ok || c != ix.Captions[42] {
		t.Fatalf("catalog caption %q %v", c, ok)
	}

	// Fidelity at the default candidate-set size.
	qs := g.Queries(100, 3, 0.15)
	for _, k := range []int{20, 50} {
		want, err := ix.Search(ctx, qs, k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Search(ctx, qs, k)
		if err != nil {
			t.Fatal(err)
		}
		ov := meanOverlap(t, got, want, k)
		t.Logf("overlap@%d = %.4f (candidates %d)", k, ov, st.Config().Candidates)
		if ov < 0.99 {
			t.Errorf("overlap@%d = %.4f, want >= 0.99", k, ov)
		}
	}
	// tau = 0 (no caption term) takes the single-vector path.
	q0 := g.Queries(20, 2, 0)
	want, _ := ix.Search(ctx, q0, 20)
	got, err := st.Search(ctx, q0, 20)
	if err != nil {
		t.Fatal(err)
	}
	if ov := meanOverlap(t, got, want, 20); ov < 0.99 {
		t.Errorf("tau=0 overlap@20 = %.4f", ov)
	}

	// Restricted, excluded and full rankings are exact.
	rq := g.Queries(3, 3, 0.15)
	for i := range rq {
		for range 12 {
			rq[i].Restrict = append(rq[i].Restrict, rand.IntN(n))
		}
		rq[i].Exclude = rq[i].Restrict[:1]
	}
	rq = append(rq, vindex.Query{Descriptions: rq[0].Descriptions, Tau: 0.15, Exclude: []int{5, 9}})
	for _, k := range []int{5, 0} {
		want, err := ix.Search(ctx, rq, k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Search(ctx, rq, k)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
				t.Errorf("k=%d query %d: got %v\nwant %v", k, i, got[i][:min(5, len(got[i]))], want[i][:min(5, len(want[i]))])
			}
		}
	}

	// A collection made for another model or dimension is refused.
	for _, m := range []Meta{{CLIPModel: "other/clip", Dim: d}, {CLIPModel: meta.CLIPModel, Dim: 32}} {
		_, err := Open(ctx, cfg, m, true)
		if !errors.Is(err, ErrMismatch) {
			t.Errorf("Open with %+v: err = %v, want ErrMismatch", m, err)
		}
	}
	// A vector of the wrong size is refused before anything is sent.
	bad := objects(ix)[:1]
	bad[0].Image = bad[0].Image[:10]
	if err := st.Upsert(ctx, bad); err == nil || !strings.Contains(err.Error(), bad[0].Name) {
		t.Errorf("upsert of a 10-d vector: %v", err)
	}
}

func TestIntegrationClusterNodeKilled(t *testing.T) {
	urls := envList("IMAGESCOPE_WEAVIATE_CLUSTER_URLS")
	kill := os.Getenv("IMAGESCOPE_WEAVIATE_KILL")
	if urls == nil || kill == "" {
		t.Skip("IMAGESCOPE_WEAVIATE_CLUSTER_URLS or IMAGESCOPE_WEAVIATE_KILL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const n, d = 2000, 64
	g := synth.New(synth.Params{N: n, Dim: d, Seed: 11})
	ix := g.Gallery()
	cfg := Config{URLs: urls, GRPCAddrs: envList("IMAGESCOPE_WEAVIATE_CLUSTER_GRPC"), Collection: uniqueName("ItestCluster"),
		Replicas: 3, ConsistencyLevel: "QUORUM", RetryBase: 100 * time.Millisecond}
	meta := Meta{CLIPModel: "test/clip-64", Dim: d, HasCaptions: true}
	st, err := Open(ctx, cfg, meta, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Drop(context.Background()) }()
	if err := st.Upsert(ctx, objects(ix)); err != nil {
		t.Fatal(err)
	}
	qs := g.Queries(40, 3, 0.15)
	want, err := ix.Search(ctx, qs, 20)
	if err != nil {
		t.Fatal(err)
	}

	// Query load from 4 goroutines; the first node (the one the store
	// talks to) is killed in the middle of it.
	var killed atomic.Bool
	var before, after, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var sumOverlap float64
	var nOverlap int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				qi := i % len(qs)
				got, err := st.Search(ctx, qs[qi:qi+1], 20)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				ov := synth.Overlap(got[0], want[qi], 20)
				mu.Lock()
				sumOverlap += ov
				nOverlap++
				mu.Unlock()
				if killed.Load() {
					after.Add(1)
				} else {
					before.Add(1)
				}
			}
		}()
	}
	for before.Load() < 40 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "sh", "-c", kill).CombinedOutput()
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("kill command %q: %v\n%s", kill, err, out)
	}
	killed.Store(true)
	t.Logf("killed a node after %d searches: %s", before.Load(), strings.TrimSpace(string(out)))
	deadline := time.Now().Add(3 * time.Minute)
	for after.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("searches: %d before the kill, %d after, %d failed; mean overlap@20 %.4f", before.Load(), after.Load(), failed.Load(), sumOverlap/float64(max(nOverlap, 1)))
	if failed.Load() > 0 {
		t.Errorf("%d searches failed; first: %v", failed.Load(), firstErr)
	}
	if after.Load() < 200 {
		t.Errorf("only %d searches answered after the kill", after.Load())
	}
	if ov := sumOverlap / float64(max(nOverlap, 1)); ov < 0.99 {
		t.Errorf("mean overlap@20 = %.4f under node loss", ov)
	}
	// The survivors still take writes at QUORUM (2 of 3 replicas).
	if err := st.Upsert(ctx, objects(ix)[:50]); err != nil {
		t.Errorf("write after the kill: %v", err)
	}
	if c, err := st.Count(ctx); err != nil || c != n {
		t.Errorf("count after the kill = %d, %v; want %d", c, err, n)
	}
}
