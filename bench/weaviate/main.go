// Command weaviate benchmarks the Weaviate backend against the embedded
// exact path on the same clustered synthetic gallery: insert throughput,
// single-query latency (p50/p99) and fidelity (overlap@20/@50 with exact
// search) for a range of candidate-set sizes.
//
// It needs a running Weaviate (see scripts/weaviate.sh and run.sh beside
// this file). Its last line is the headline:
//
//	weaviate mode=single n=100000 dim=768 insert_obj_s=... p50_ms=... p99_ms=... exact_p50_ms=... overlap20=... overlap50=...
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate"
	"github.com/imagescope/imagescope/vindex/weaviate/synth"
)

func main() {
	urls := flag.String("urls", "http://127.0.0.1:8080", "Weaviate REST URLs (comma-separated)")
	grpcs := flag.String("grpc", "", "gRPC addresses (comma-separated; default URL host:50051)")
	mode := flag.String("mode", "single", "label for the output (single, cluster)")
	n := flag.Int("n", 100000, "gallery size")
	dim := flag.Int("dim", 768, "dimension")
	nq := flag.Int("queries", 200, "queries")
	replicas := flag.Int("replicas", 1, "replication factor of the collection")
	cands := flag.String("candidates", "32,64,128,256,512", "candidate-set sizes to measure")
	def := flag.Int("default", weaviate.DefaultCandidates, "candidate-set size of the headline")
	consistency := flag.String("consistency", "QUORUM", "consistency level")
	seed := flag.Uint64("seed", 1, "data seed")
	keep := flag.Bool("keep", false, "keep the collection afterwards")
	flag.Parse()
	if err := run(*urls, *grpcs, *mode, *n, *dim, *nq, *replicas, *cands, *def, *consistency, *seed, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench/weaviate:", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func pct(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}

func run(urls, grpcs, mode string, n, dim, nq, replicas int, candList string, def int, consistency string, seed uint64, keep bool) error {
	ctx := context.Background()
	t0 := time.Now()
	g := synth.New(synth.Params{N: n, Dim: dim, Seed: seed})
	ix := g.Gallery()
	qs := g.Queries(nq, 3, 0.15)
	fmt.Printf("data: %d clustered %d-d images (image + caption vectors), %d queries of 3 descriptions, tau 0.15 (%v)\n", n, dim, nq, time.Since(t0).Round(time.Millisecond))

	// Embedded exact path on the same data.
	exact, err := ix.Search(ctx, qs, 50)
	if err != nil {
		return err
	}
	var exactLat []time.Duration
	for i := range qs {
		s := time.Now()
		if _, err := ix.Search(ctx, qs[i:i+1], 20); err != nil {
			return err
		}
		exactLat = append(exactLat, time.Since(s))
	}
	s := time.Now()
	if _, err := ix.Search(ctx, qs, 20); err != nil {
		return err
	}
	batchQPS := float64(len(qs)) / time.Since(s).Seconds()
	exactP50, exactP99 := pct(exactLat, 0.5), pct(exactLat, 0.99)
	fmt.Printf("exact (vindex %s kernel, in process): single-query p50 %.2f ms p99 %.2f ms; batch %.0f queries/s\n", vindex.KernelName(), exactP50, exactP99, batchQPS)

	cfg := weaviate.Config{
		URLs: split(urls), GRPCAddrs: split(grpcs), Replicas: replicas, ConsistencyLevel: consistency,
		Collection: fmt.Sprintf("Bench_%s_%d_%d", mode, n, time.Now().Unix()),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	meta := weaviate.Meta{CLIPModel: "bench/synthetic", Dim: dim, HasCaptions: true, Gallery: "synthetic"}
	st, err := weaviate.Open(ctx, cfg, meta, true)
	if err != nil {
		return err
	}
	if !keep {
		defer func() { _ = st.Drop(context.Background()) }()
	}
	objs := make([]weaviate.Object, n)
	for i := range objs {
		objs[i] = weaviate.Object{Name: ix.Names[i], Path: "/bench/" + ix.Names[i], Ord: i,
			Image: ix.Image[i*dim : (i+1)*dim], CaptionVec: ix.Caption[i*dim : (i+1)*dim]}
	}
	s = time.Now()
	const chunk = 5000
	for start := 0; start < n; start += chunk {
		if err := st.Upsert(ctx, objs[start:min(start+chunk, n)]); err != nil {
			return err
		}
		if start%20000 == 0 {
			fmt.Fprintf(os.Stderr, "inserted %d/%d (%.0f obj/s)\n", start+min(chunk, n-start), n, float64(start+min(chunk, n-start))/time.Since(s).Seconds())
		}
	}
	insert := time.Since(s)
	insertRate := float64(n) / insert.Seconds()
	c, err := st.Count(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("weaviate %s (replicas %d, consistency %s): inserted %d objects (2 named vectors each) in %v: %.0f obj/s; count %d\n",
		mode, replicas, consistency, n, insert.Round(time.Millisecond), insertRate, c)

	fmt.Printf("%-10s %-10s %-10s %-10s %-10s %-10s\n", "candidates", "overlap@20", "overlap@50", "p50_ms", "p99_ms", "vs_exact_p50")
	var headline string
	for _, cs := range split(candList) {
		cn, err := strconv.Atoi(cs)
		if err != nil {
			return fmt.Errorf("candidate size %q: %w", cs, err)
		}
		ccfg := cfg
		ccfg.Candidates = cn
		cst, err := weaviate.Open(ctx, ccfg, meta, false)
		if err != nil {
			return err
		}
		// Warm up.
		if _, err := cst.Search(ctx, qs[:min(5, len(qs))], 20); err != nil {
			return err
		}
		var lat []time.Duration
		var ov20, ov50 float64
		for i := range qs {
			s := time.Now()
			got, err := cst.Search(ctx, qs[i:i+1], 20)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(s))
			ov20 += synth.Overlap(got[0], exact[i][:20], 20)
			got50, err := cst.Search(ctx, qs[i:i+1], 50)
			if err != nil {
				return err
			}
			ov50 += synth.Overlap(got50[0], exact[i], 50)
		}
		ov20 /= float64(len(qs))
		ov50 /= float64(len(qs))
		p50, p99 := pct(lat, 0.5), pct(lat, 0.99)
		fmt.Printf("%-10d %-10.4f %-10.4f %-10.2f %-10.2f %-10.2f\n", cn, ov20, ov50, p50, p99, p50/exactP50)
		if cn == def {
			headline = fmt.Sprintf("weaviate mode=%s n=%d dim=%d replicas=%d insert_obj_s=%.0f p50_ms=%.2f p99_ms=%.2f exact_p50_ms=%.2f exact_p99_ms=%.2f ratio_p50=%.2f overlap20=%.4f overlap50=%.4f candidates=%d",
				mode, n, dim, replicas, insertRate, p50, p99, exactP50, exactP99, p50/exactP50, ov20, ov50, cn)
		}
	}
	if headline == "" {
		return fmt.Errorf("the default candidate size %d is not in -candidates", def)
	}
	fmt.Println(headline)
	return nil
}
