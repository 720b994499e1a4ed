// Command weaviate benchmarks the Weaviate backend against the embedded
// exact path on the same gallery: insert throughput, single-query latency
// (p50/p99) and fidelity (overlap@20/@100 with exact search) for a range of
// candidate-set sizes. The gallery is synthetic (-data clustered: vectors
// around random centres; -data uniform: independent uniformly random unit
// vectors, the worst case for HNSW) or an image DB (-data db:PATH, the
// images' own embeddings; each image's vector is one query).
//
// It needs a running Weaviate (see scripts/weaviate.sh and run.sh beside
// this file). Its last line is the headline:
//
//	weaviate mode=single data=clustered n=100000 dim=768 insert_obj_s=... p50_ms=... p99_ms=... exact_p50_ms=... overlap20=... overlap100=...
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

	"github.com/imagescope/imagescope/bench/internal/benchstat"
	imgdb "github.com/imagescope/imagescope/gallery"
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
	data := flag.String("data", "clustered", "gallery: clustered | uniform (synthetic, -n x -dim) | db:PATH (an image DB's embeddings)")
	clipModel := flag.String("clip-model", "", "with -data db:PATH: the CLIP model id whose embeddings to load (default: the DB's)")
	flag.Parse()
	if err := run(*urls, *grpcs, *mode, *data, *clipModel, *n, *dim, *nq, *replicas, *cands, *def, *consistency, *seed, *keep); err != nil {
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

// gallery returns the benchmark's gallery and queries.
func gallery(ctx context.Context, data, clipModel string, n, dim, nq int, seed uint64) (*vindex.Index, []vindex.Query, string, error) {
	switch {
	case data == "clustered" || data == "uniform":
		g := synth.New(synth.Params{N: n, Dim: dim, Seed: seed, Uniform: data == "uniform"})
		return g.Gallery(), g.Queries(nq, 3, 0.15),
			fmt.Sprintf("%d %s %d-d images (image + caption vectors), %d queries of 3 descriptions, tau 0.15", n, data, dim, nq), nil
	case strings.HasPrefix(data, "db:"):
		path := strings.TrimPrefix(data, "db:")
		db, err := imgdb.Open(ctx, path)
		if err != nil {
			return nil, nil, "", err
		}
		defer db.Close()
		if clipModel == "" {
			if clipModel, _, err = db.Model(ctx); err != nil {
				return nil, nil, "", err
			}
		}
		ix, info, err := db.LoadWithInfo(ctx, clipModel, "")
		if err != nil {
			return nil, nil, "", err
		}
		var qs []vindex.Query
		for i := range min(nq, len(ix.Names)) {
			qs = append(qs, vindex.Query{Descriptions: [][]float32{slices.Clone(ix.Vector(i))}, Tau: 0.15})
		}
		return ix, qs, fmt.Sprintf("image DB %s: %d images embedded by %s (captions %v), %d queries (each an image's own vector), tau 0.15",
			path, info.Images, clipModel, ix.HasCaption, len(qs)), nil
	}
	return nil, nil, "", fmt.Errorf("-data %q: want clustered, uniform or db:PATH", data)
}

func run(urls, grpcs, mode, data, clipModel string, n, dim, nq, replicas int, candList string, def int, consistency string, seed uint64, keep bool) error {
	ctx := context.Background()
	t0 := time.Now()
	ix, qs, what, err := gallery(ctx, data, clipModel, n, dim, nq, seed)
	if err != nil {
		return err
	}
	n, dim = len(ix.Names), ix.Dim
	fmt.Printf("data: %s (%v)\n", what, time.Since(t0).Round(time.Millisecond))
	label := data
	if strings.HasPrefix(data, "db:") {
		label = "db"
	}

	// Embedded exact path on the same data.
	exact, err := ix.Search(ctx, qs, 100)
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
	exactP50, exactP99 := msOf(benchstat.Percentile(exactLat, 50)), msOf(benchstat.Percentile(exactLat, 99))
	fmt.Printf("exact (vindex %s kernel, in process): single-query p50 %.2f ms p99 %.2f ms; batch %.0f queries/s\n", vindex.KernelName(), exactP50, exactP99, batchQPS)

	cfg := weaviate.Config{
		URLs: split(urls), GRPCAddrs: split(grpcs), Replicas: replicas, ConsistencyLevel: consistency,
		Collection: fmt.Sprintf("Bench_%s_%d_%d", mode, n, time.Now().Unix()),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	meta := weaviate.Meta{CLIPModel: "bench/" + label, Dim: dim, HasCaptions: ix.HasCaption, Gallery: label}
	st, err := weaviate.Open(ctx, cfg, meta, true)
	if err != nil {
		return err
	}
	if !keep {
		defer func() { _ = st.Drop(context.Background()) }()
	}
	objs := make([]weaviate.Object, n)
	for i := range objs {
		objs[i] = weaviate.Object{Name: ix.Names[i], Path: "/bench/" + ix.Names[i], Ord: i, Image: ix.Image[i*dim : (i+1)*dim]}
		if ix.HasCaption {
			objs[i].CaptionVec = ix.Caption[i*dim : (i+1)*dim]
		}
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

	fmt.Printf("%-10s %-10s %-11s %-10s %-10s %-10s\n", "candidates", "overlap@20", "overlap@100", "p50_ms", "p99_ms", "vs_exact_p50")
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
		var ov20, ov100 float64
		for i := range qs {
			s := time.Now()
			got, err := cst.Search(ctx, qs[i:i+1], 20)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(s))
			ov20 += synth.Overlap(got[0], exact[i][:min(20, len(exact[i]))], 20)
			got100, err := cst.Search(ctx, qs[i:i+1], 100)
			if err != nil {
				return err
			}
			ov100 += synth.Overlap(got100[0], exact[i], 100)
		}
		ov20 /= float64(len(qs))
		ov100 /= float64(len(qs))
		p50, p99 := msOf(benchstat.Percentile(lat, 50)), msOf(benchstat.Percentile(lat, 99))
		fmt.Printf("%-10d %-10.4f %-11.4f %-10.2f %-10.2f %-10.2f\n", cn, ov20, ov100, p50, p99, p50/exactP50)
		if cn == def {
			headline = fmt.Sprintf("weaviate mode=%s data=%s n=%d dim=%d replicas=%d insert_obj_s=%.0f p50_ms=%.2f p99_ms=%.2f exact_p50_ms=%.2f exact_p99_ms=%.2f ratio_p50=%.2f overlap20=%.4f overlap100=%.4f candidates=%d",
				mode, label, n, dim, replicas, insertRate, p50, p99, exactP50, exactP99, p50/exactP50, ov20, ov100, cn)
		}
	}
	if headline == "" {
		return fmt.Errorf("the default candidate size %d is not in -candidates", def)
	}
	fmt.Println(headline)
	return nil
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
