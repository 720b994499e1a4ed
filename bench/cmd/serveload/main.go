// Command serveload supports bench/serve: "mkdb" builds a synthetic image
// DB (small generated images, clustered synthetic image embeddings, template
// captions embedded with a real CLIP text tower), "towv" copies an image DB
// into a Weaviate collection, and "load" drives a running 'imagescope serve'
// with concurrent clients for a fixed time and reports throughput, latency
// percentiles, errors and the server's peak resident memory. With
// --kill-cmd/--restart-cmd it runs those commands during the search phase
// (a node of the vector store lost and brought back) and reports latency
// before, during and after.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagescope/imagescope/bench/internal/benchstat"
	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: serveload mkdb|towv|load|simmodels|latency [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "mkdb":
		err = mkdb(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "towv":
		err = towv(os.Args[2:])
	case "simmodels":
		err = simmodels(os.Args[2:])
	case "latency":
		err = latencyLoad(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q (want mkdb, towv, load, simmodels or latency)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "serveload:", err)
		os.Exit(1)
	}
}

var (
	colors  = []string{"red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "grey"}
	objects = []string{"dog", "cat", "car", "bicycle", "house", "tree", "boat", "bird", "horse", "chair",
		"table", "flower", "mountain", "beach", "street", "train", "plane", "person", "cake", "lamp"}
	places = []string{"on a beach", "in a kitchen", "in a park", "at night", "in the snow", "on a street", "in a forest", "by a lake"}
)

// synthCaption is the caption of synthetic image i.
func synthCaption(i int) string {
	return fmt.Sprintf("a %s %s %s", colors[i%len(colors)], objects[(i/len(colors))%len(objects)], places[(i/7)%len(places)])
}

// synthEmbedder returns clustered synthetic image embeddings (one cluster
// per object, noise around it) and real CLIP text embeddings.
type synthEmbedder struct {
	m       *clip.Model
	centres [][]float32
	index   map[string]int
}

func (s *synthEmbedder) ModelID() string { return s.m.ID() }
func (s *synthEmbedder) Dim() int        { return s.m.Dim() }

func (s *synthEmbedder) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	vecs := make([][]float32, len(paths))
	errs := make([]error, len(paths))
	for i, p := range paths {
		n := s.index[p]
		h := fnv.New64a()
		h.Write([]byte(p))
		rng := rand.New(rand.NewPCG(h.Sum64(), 7))
		c := s.centres[(n/len(colors))%len(objects)]
		v := make([]float32, len(c))
		for j := range v {
			v[j] = c[j] + float32(rng.NormFloat64()*0.35)
		}
		vecs[i] = v
	}
	return vecs, errs, nil
}

func (s *synthEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	embs, err := s.m.EmbedTexts(ctx, texts)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(embs))
	for i, e := range embs {
		if e.Err != nil {
			return nil, e.Err
		}
		out[i] = e.Vector
	}
	return out, nil
}

type synthCaptioner struct{ index map[string]int }

func (c synthCaptioner) Caption(ctx context.Context, path string) (string, error) {
	return synthCaption(c.index[path]), nil
}

func mkdb(args []string) error {
	fs := flag.NewFlagSet("mkdb", flag.ContinueOnError)
	out := fs.String("out", "", "image DB to create")
	imgDir := fs.String("images", "", "folder for the generated image files")
	clipDir := fs.String("clip", "", "CLIP checkpoint directory (text tower embeds the captions)")
	n := fs.Int("n", 10000, "number of images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *imgDir == "" || *clipDir == "" || *n < 1 {
		return errors.New("mkdb needs --out, --images, --clip and --n >= 1")
	}
	ctx := context.Background()
	m, err := clip.Load(ctx, *clipDir, clip.Options{})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*imgDir, 0o755); err != nil {
		return err
	}
	start := time.Now()
	items := make([]gallery.Item, *n)
	index := make(map[string]int, *n)
	for i := range *n {
		sub := filepath.Join(*imgDir, fmt.Sprintf("%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		p := filepath.Join(sub, fmt.Sprintf("img%05d.png", i))
		items[i] = gallery.Item{Name: fmt.Sprintf("img%05d", i), Path: p}
		index[p] = i
	}
	// Write the files with a few goroutines.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < *n; i += 4 {
				if err := writeSynthImage(items[i].Path, i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "generated %d images in %s\n", *n, time.Since(start).Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(1, 2))
	emb := &synthEmbedder{m: m, index: index}
	for range objects {
		c := make([]float32, m.Dim())
		for j := range c {
			c[j] = float32(rng.NormFloat64())
		}
		emb.centres = append(emb.centres, c)
	}
	db, err := gallery.Open(ctx, *out)
	if err != nil {
		return err
	}
	defer db.Close()
	start = time.Now()
	sum, err := db.Index(ctx, items, gallery.IndexOptions{
		Embedder: emb, Captioner: synthCaptioner{index}, CaptionModel: "synthetic-template", CaptionPrompt: "template",
		CaptionWorkers: 2, EmbedBatch: 64,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "indexed %d images (%d done) in %s\n", sum.Total, sum.Done, time.Since(start).Round(time.Millisecond))
	return nil
}

func writeSynthImage(path string, i int) error {
	img := image.NewNRGBA(image.Rect(0, 0, 48, 36))
	h := fnv.New32a()
	fmt.Fprint(h, i)
	s := h.Sum32()
	base := color.NRGBA{uint8(s), uint8(s >> 8), uint8(s >> 16), 255}
	for y := range 36 {
		for x := range 48 {
			c := base
			if (x/12+y/12)%2 == 0 {
				c = color.NRGBA{255 - base.R, 255 - base.G, base.B, 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// phase runs clients concurrent workers issuing requests until the
// deadline and returns per-request latencies, successes and errors.
type phaseResult struct {
	latencies []time.Duration
	ok        int
	errors    int
	elapsed   time.Duration
	firstErr  string
	// records are every request in start order per client: when it
	// started (since the phase began), how long it took, whether it failed.
	records []record
}

type record struct {
	at, lat time.Duration
	failed  bool
	err     string
}

func runPhase(client *http.Client, clients int, d time.Duration, mk func(worker, n int) (*http.Request, error)) phaseResult {
	var mu sync.Mutex
	var res phaseResult
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var recs []record
			ok, bad := 0, 0
			first := ""
			for n := 0; time.Now().Before(deadline); n++ {
				req, err := mk(w, n)
				if err != nil {
					bad++
					continue
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				lat = append(lat, time.Since(t0))
				rec := record{at: t0.Sub(start), lat: time.Since(t0), failed: err != nil}
				if err != nil {
					rec.err = err.Error()
				}
				recs = append(recs, rec)
				if err != nil {
					bad++
					if first == "" {
						first = err.Error()
					}
				} else {
					ok++
				}
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.records = append(res.records, recs...)
			res.ok += ok
			res.errors += bad
			if res.firstErr == "" {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// peakRSS reads the peak resident set size (VmHWM) of a process in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	base := fs.String("url", "", "server base URL (loopback only)")
	clients := fs.Int("clients", 50, "concurrent clients")
	duration := fs.Duration("duration", 30*time.Second, "search phase length")
	baseline := fs.Duration("baseline", 5*time.Second, "GET /healthz baseline phase length (same clients)")
	pid := fs.Int("pid", 0, "server process id (for peak RSS)")
	limit := fs.Int("limit", 20, "results per search")
	killCmd := fs.String("kill-cmd", "", "shell command run --kill-at into the search phase (e.g. stop a vector-store node)")
	killAt := fs.Duration("kill-at", 20*time.Second, "when to run --kill-cmd")
	restartCmd := fs.String("restart-cmd", "", "shell command run --restart-at into the search phase; it should return once the node is back")
	restartAt := fs.Duration("restart-at", 35*time.Second, "when to run --restart-cmd")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *killCmd != "" && (*restartCmd == "" || *killAt <= 0 || *restartAt <= *killAt || *restartAt >= *duration) {
		return errors.New("--kill-cmd needs --restart-cmd and 0 < --kill-at < --restart-at < --duration")
	}
	if !strings.HasPrefix(*base, "http://127.0.0.1:") && !strings.HasPrefix(*base, "http://[::1]:") && !strings.HasPrefix(*base, "http://localhost:") {
		return fmt.Errorf("--url %q: the load generator only targets loopback", *base)
	}
	if *clients < 1 || *clients > 1000 || *duration <= 0 || *duration > 10*time.Minute {
		return errors.New("--clients must be 1..1000 and --duration within (0, 10m]")
	}
	client := &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConns: *clients * 2, MaxIdleConnsPerHost: *clients * 2, MaxConnsPerHost: *clients * 2},
	}

	// Baseline: the cheapest request the server answers (no search).
	bl := runPhase(client, *clients, *baseline, func(w, n int) (*http.Request, error) {
		return http.NewRequest("GET", *base+"/healthz", nil)
	})
	blRPS := float64(bl.ok) / bl.elapsed.Seconds()

	var queries []string
	for i := range 200 {
		queries = append(queries, synthCaption(i*37+11))
	}
	// The node-loss events, timed from the start of the search phase.
	var killedAt, backAt time.Duration
	events := make(chan error, 1)
	if *killCmd != "" {
		t0 := time.Now()
		go func() {
			time.Sleep(*killAt)
			killedAt = time.Since(t0)
			if out, err := exec.Command("sh", "-c", *killCmd).CombinedOutput(); err != nil {
				events <- fmt.Errorf("--kill-cmd: %v: %s", err, out)
				return
			}
			time.Sleep(time.Until(t0.Add(*restartAt)))
			if out, err := exec.Command("sh", "-c", *restartCmd).CombinedOutput(); err != nil {
				events <- fmt.Errorf("--restart-cmd: %v: %s", err, out)
				return
			}
			backAt = time.Since(t0)
			events <- nil
		}()
	}
	res := runPhase(client, *clients, *duration, func(w, n int) (*http.Request, error) {
		body, _ := json.Marshal(map[string]any{"text": queries[(w*131+n)%len(queries)], "limit": *limit})
		req, err := http.NewRequest("POST", *base+"/api/search", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	})
	slices.Sort(res.latencies)
	rps := float64(res.ok) / res.elapsed.Seconds()
	p50, p90, p99 := benchstat.Percentile(res.latencies, 50), benchstat.Percentile(res.latencies, 90), benchstat.Percentile(res.latencies, 99)
	rss := 0.0
	if *pid > 0 {
		r, err := peakRSS(*pid)
		if err != nil {
			return fmt.Errorf("peak RSS of %d: %w", *pid, err)
		}
		rss = r
	}
	fmt.Printf("baseline GET /healthz: %d clients, %.1f s, %d ok, %d errors, %.0f req/s\n", *clients, bl.elapsed.Seconds(), bl.ok, bl.errors, blRPS)
	fmt.Printf("POST /api/search (stage 1): %d clients, %.1f s, %d ok, %d errors, %.1f req/s\n", *clients, res.elapsed.Seconds(), res.ok, res.errors, rps)
	fmt.Printf("latency ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", msOf(p50), msOf(p90), msOf(p99), msOf(benchstat.Percentile(res.latencies, 100)))
	if res.errors > 0 {
		fmt.Printf("first error: %s\n", res.firstErr)
	}
	if blRPS > 0 {
		fmt.Printf("search / healthz throughput ratio: %.3f\n", rps/blRPS)
	}
	fmt.Printf("server peak RSS: %.1f MiB\n", rss)
	if *killCmd == "" {
		fmt.Printf("serve rps=%.1f p99_ms=%.1f errors=%d rss_mb=%.1f\n", rps, msOf(p99), res.errors, rss)
		return nil
	}
	if err := <-events; err != nil {
		return err
	}
	// Requests by the time they started: before the kill, while the node
	// was down (until the restart command returned), after.
	type phase struct {
		name     string
		from, to time.Duration
		lat      []time.Duration
		failed   int
	}
	phases := []*phase{{name: "before", to: killedAt}, {name: "during", from: killedAt, to: backAt}, {name: "after", from: backAt, to: res.elapsed + time.Hour}}
	for _, r := range res.records {
		for _, p := range phases {
			if r.at >= p.from && r.at < p.to {
				p.lat = append(p.lat, r.lat)
				if r.failed {
					p.failed++
				}
			}
		}
	}
	fmt.Printf("node killed at %.1f s, back (restart command returned) at %.1f s\n", killedAt.Seconds(), backAt.Seconds())
	head := fmt.Sprintf("serve_nodeloss clients=%d duration_s=%.0f failed=%d", *clients, res.elapsed.Seconds(), res.errors)
	for _, p := range phases {
		slices.Sort(p.lat)
		fmt.Printf("%-7s %5.1f-%5.1f s: %6d searches, %d failed, p50 %.1f ms, p99 %.1f ms\n", p.name, p.from.Seconds(), min(p.to, res.elapsed).Seconds(),
			len(p.lat), p.failed, msOf(benchstat.Percentile(p.lat, 50)), msOf(benchstat.Percentile(p.lat, 99)))
		head += fmt.Sprintf(" %s_n=%d %s_p50_ms=%.1f %s_p99_ms=%.1f", p.name, len(p.lat), p.name, msOf(benchstat.Percentile(p.lat, 50)), p.name, msOf(benchstat.Percentile(p.lat, 99)))
	}
	fmt.Println(head)
	return nil
}

// towv copies an image DB (embeddings, captions, paths) into a Weaviate
// collection.
func towv(args []string) error {
	fs := flag.NewFlagSet("towv", flag.ContinueOnError)
	dbPath := fs.String("db", "", "image DB to copy")
	urls := fs.String("urls", "", "Weaviate REST URLs (comma-separated)")
	grpcs := fs.String("grpc", "", "gRPC addresses (comma-separated)")
	coll := fs.String("collection", "", "collection to create")
	replicas := fs.Int("replicas", 1, "replication factor")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := gallery.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	model, _, err := db.Model(ctx)
	if err != nil {
		return err
	}
	ix, info, err := db.LoadWithInfo(ctx, model, "")
	if err != nil {
		return err
	}
	cfg := weaviate.Config{URLs: strings.Split(*urls, ","), Collection: *coll, Replicas: *replicas}
	if *grpcs != "" {
		cfg.GRPCAddrs = strings.Split(*grpcs, ",")
	}
	st, err := weaviate.Open(ctx, cfg, weaviate.Meta{CLIPModel: model, Dim: ix.Dim, HasCaptions: ix.HasCaption, Gallery: filepath.Base(*dbPath), CaptionKey: info.CaptionKey}, true)
	if err != nil {
		return err
	}
	d := ix.Dim
	objs := make([]weaviate.Object, len(ix.Names))
	for i, n := range ix.Names {
		objs[i] = weaviate.Object{Name: n, Path: ix.Paths[i], Ord: i, Image: ix.Image[i*d : (i+1)*d]}
		if ix.HasCaption {
			objs[i].CaptionVec = ix.Caption[i*d : (i+1)*d]
			objs[i].Caption, _ = ix.CaptionText(n)
		}
	}
	t0 := time.Now()
	if err := st.Upsert(ctx, objs); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "copied %d images into %s in %v\n", len(objs), *coll, time.Since(t0).Round(time.Millisecond))
	return nil
}
