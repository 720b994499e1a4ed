// Command scalebench is the Go side of bench/scale: single-query fused
// search at a million images, checked against the exact unfused search.
//
//	scalebench gen    -dir D -n N -d DIM -q Q -kind uniform|clustered
//	scalebench mkdb   -dir D -db PATH            (ImportNPY of D/refdb)
//	scalebench search -dir D -db PATH -tau T -k K -threads T [-loads L] [-peer CMD]
//	scalebench check  -dir D -tau T -k K
//
// gen writes random L2-normalised image and caption vectors and Q queries
// of two descriptions each (D/desc.npy, and their means D/queries.npy for
// the FAISS reference). search loads the image DB fused at tau with the
// compact copy (timed), answers every query alone, and writes the top K to
// D/ours.npy; with -peer it runs a peer process (bench/scale's FAISS
// script) over the same queries block by block, interleaved with its own,
// so both see the same machine load. check recomputes the exact unfused
// fused score (image and caption matrices, the blocked exact multiply)
// for every query and compares rank by rank.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagescope/imagescope/bench/internal/benchstat"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/internal/npy"
	"github.com/imagescope/imagescope/vindex"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: scalebench gen|mkdb|search|check [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "mkdb":
		err = mkdb(os.Args[2:])
	case "search":
		err = search(os.Args[2:])
	case "check":
		err = check(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

// vectors draws n unit vectors: iid Gaussian directions ("uniform"), or
// points around 1000 random centres with per-dimension noise ("clustered",
// closer to real embeddings: many near neighbours with close scores).
func vectors(rng *rand.Rand, kind string, centres []float32, n, d int) []float32 {
	m := make([]float32, n*d)
	for i := 0; i < n; i++ {
		row := m[i*d : (i+1)*d]
		switch kind {
		case "clustered":
			c := centres[rng.IntN(len(centres)/d)*d:]
			for j := range row {
				row[j] = c[j] + float32(0.35*rng.NormFloat64())
			}
		default:
			for j := range row {
				row[j] = float32(rng.NormFloat64())
			}
		}
		l2.Normalize(row)
	}
	return m
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("dir", "", "output folder")
	n := fs.Int("n", 1_000_000, "gallery images")
	d := fs.Int("d", 768, "dimension")
	q := fs.Int("q", 1000, "queries")
	kind := fs.String("kind", "uniform", "uniform or clustered")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Parse(args)
	if *kind != "uniform" && *kind != "clustered" {
		return fmt.Errorf("kind %q: want uniform or clustered", *kind)
	}
	rng := rand.New(rand.NewPCG(*seed, 14))
	var centres []float32
	if *kind == "clustered" {
		centres = make([]float32, 1000**d)
		for i := range centres {
			centres[i] = float32(rng.NormFloat64())
		}
	}
	sub := filepath.Join(*dir, "refdb")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	names := make([]string, *n)
	caps := make([]string, *n)
	for i := range names {
		names[i] = fmt.Sprintf("%09d.jpg", i)
		caps[i] = fmt.Sprintf("a photo of object number %d", i)
	}
	f, err := os.Create(filepath.Join(sub, gallery.NPYNames))
	if err != nil {
		return err
	}
	if err := npy.WriteStrings(f, names); err != nil {
		return err
	}
	f.Close()
	capsJSON, _ := json.Marshal(caps)
	if err := os.WriteFile(filepath.Join(sub, gallery.NPYCaptions), capsJSON, 0o644); err != nil {
		return err
	}
	for _, file := range []string{gallery.NPYImageEmbeddings, gallery.NPYCaptionEmbeddings} {
		m := vectors(rng, *kind, centres, *n, *d)
		if err := npy.WriteMatrixFile(filepath.Join(sub, file), m, *n, *d); err != nil {
			return err
		}
		m = nil
		runtime.GC()
	}
	// Queries: two descriptions near a random gallery image (as a real
	// query lands near its target), plus noise.
	img, _, _, err := npy.ReadMatrixFile(filepath.Join(sub, gallery.NPYImageEmbeddings))
	if err != nil {
		return err
	}
	desc := make([]float32, 2**q**d)
	mean := make([]float32, *q**d)
	for i := 0; i < *q; i++ {
		t := img[rng.IntN(*n)**d:][:*d]
		for j := 0; j < 2; j++ {
			v := desc[(2*i+j)**d:][:*d]
			for k := range v {
				v[k] = t[k] + float32(0.8*rng.NormFloat64()/math.Sqrt(float64(*d)))
			}
			l2.Normalize(v)
			for k := range v {
				mean[i**d+k] += v[k] / 2
			}
		}
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "desc.npy"), desc, 2**q, *d); err != nil {
		return err
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "queries.npy"), mean, *q, *d); err != nil {
		return err
	}
	fmt.Printf("gen n=%d d=%d queries=%d kind=%s\n", *n, *d, *q, *kind)
	return nil
}

func mkdb(args []string) error {
	fs := flag.NewFlagSet("mkdb", flag.ExitOnError)
	dir := fs.String("dir", "", "gen output folder")
	dbPath := fs.String("db", "", "image DB to create")
	fs.Parse(args)
	ctx := context.Background()
	db, err := gallery.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	t0 := time.Now()
	sum, err := db.ImportNPY(ctx, filepath.Join(*dir, "refdb"), gallery.ImportOptions{ClipModel: "bench/random-768"})
	if err != nil {
		return err
	}
	fi, _ := os.Stat(*dbPath)
	fmt.Printf("import images=%d dim=%d time=%.1fs db_bytes=%d\n", sum.Images, sum.Dim, time.Since(t0).Seconds(), fi.Size())
	return nil
}

// queries reads D/desc.npy as queries of two descriptions each.
func queries(dir string, tau float32) ([]vindex.Query, int, error) {
	desc, rows, d, err := npy.ReadMatrixFile(filepath.Join(dir, "desc.npy"))
	if err != nil {
		return nil, 0, err
	}
	qs := make([]vindex.Query, rows/2)
	for i := range qs {
		qs[i] = vindex.Query{Tau: tau, Descriptions: [][]float32{desc[2*i*d : (2*i+1)*d], desc[(2*i+1)*d : (2*i+2)*d]}}
	}
	return qs, d, nil
}

// peer is a process answering "run A B" lines with one line of per-query
// milliseconds.
type peer struct {
	cmd *exec.Cmd
	in  *bufio.Writer
	out *bufio.Scanner
}

func startPeer(command string) (*peer, string, error) {
	cmd := exec.Command("bash", "-c", command)
	cmd.Stderr = os.Stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	p := &peer{cmd: cmd, in: bufio.NewWriter(w), out: bufio.NewScanner(r)}
	p.out.Buffer(make([]byte, 1<<20), 1<<20)
	if !p.out.Scan() { // the peer's ready line (what it loaded)
		cmd.Wait()
		return nil, "", errors.New("peer exited before it was ready")
	}
	return p, p.out.Text(), nil
}

// run asks the peer for queries [a, b) and returns their wall and CPU
// milliseconds.
func (p *peer) run(a, b int) (wall, cpu []float64, err error) {
	fmt.Fprintf(p.in, "run %d %d\n", a, b)
	if err := p.in.Flush(); err != nil {
		return nil, nil, err
	}
	if !p.out.Scan() {
		return nil, nil, errors.New("peer exited")
	}
	parts := strings.SplitN(p.out.Text(), "|", 2)
	if len(parts) != 2 {
		return nil, nil, fmt.Errorf("peer answered %q", p.out.Text())
	}
	for i, part := range parts {
		for _, f := range strings.Fields(part) {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("peer answered %q", p.out.Text())
			}
			if i == 0 {
				wall = append(wall, v)
			} else {
				cpu = append(cpu, v)
			}
		}
	}
	return wall, cpu, nil
}

func (p *peer) close() {
	fmt.Fprintln(p.in, "quit")
	p.in.Flush()
	p.cmd.Wait()
}

func search(args []string) error {
	fs := flag.NewFlagSet("search", flag.ExitOnError)
	dir := fs.String("dir", "", "gen output folder")
	dbPath := fs.String("db", "", "image DB")
	tau := fs.Float64("tau", 0.15, "caption weight")
	k := fs.Int("k", 100, "hits per query")
	threads := fs.Int("threads", runtime.NumCPU(), "search threads")
	peerCmd := fs.String("peer", "", "peer command (see bench/scale)")
	block := fs.Int("block", 100, "queries per interleaved block")
	peerPer := fs.Int("peer-per-block", 20, "peer queries per block (the first of the block's queries)")
	fuse := fs.Bool("fuse", true, "hold fused rows (false: image and caption matrices, results bit-identical to the exact path)")
	loads := fs.Int("loads", 2, "loads of the DB (the first writes the search cache; the last is measured)")
	onlyLoad := fs.Bool("only-load", false, "load (writing the search cache) and stop")
	coldN := fs.Int("cold", 100, "with -disk: queries repeated after dropping the OS page cache (0: none)")
	disk := fs.Bool("disk", true, "leave the vectors in the search cache file and read only the candidates' rows (gallery.LoadOptions.VectorsOnDisk)")
	fs.Parse(args)
	qs, _, err := queries(*dir, float32(*tau))
	if err != nil {
		return err
	}
	ctx := context.Background()
	var (
		ix    *vindex.Index
		info  gallery.LoadInfo
		loadS float64
	)
	for l := 1; l <= *loads; l++ {
		if ix != nil {
			ix.Close()
		}
		ix = nil
		runtime.GC()
		debug.FreeOSMemory()
		t0, c0 := time.Now(), cpuMS()
		db, err := gallery.Open(ctx, *dbPath)
		if err != nil {
			return err
		}
		ix, info, err = db.LoadWith(ctx, gallery.LoadOptions{Fuse: *fuse, Tau: float32(*tau), Compact: true, Threads: *threads, Cache: true, VectorsOnDisk: *disk})
		if err != nil {
			return err
		}
		loadS = time.Since(t0).Seconds()
		db.Close()
		fmt.Printf("load %d: load_s=%.2f cpu_s=%.2f from_cache=%v %s\n", l, loadS, (cpuMS()-c0)/1000, info.FromCache, info.CacheNote)
	}
	defer ix.Close()
	if *onlyLoad {
		return nil
	}
	if ix.VectorsOnDisk() {
		// What serve does in the background after loading: read the
		// vectors once so the page cache holds them.
		t0 := time.Now()
		if err := ix.Prefetch(ctx); err != nil {
			return err
		}
		fmt.Printf("read ahead: %.1fs (the vectors into the OS page cache; serve does this in the background)\n", time.Since(t0).Seconds())
	}
	ix.Threads = *threads
	ix.Counters = &vindex.Counters{}
	debug.FreeOSMemory()
	rssKB, hwmKB := benchstat.StatusKB("VmRSS"), benchstat.StatusKB("VmHWM")
	imgMB := float64(ix.Len()) * float64(ix.Dim) * 4 / (1 << 20)
	fmt.Printf("mode fused=%v vectors_on_disk=%v\n", ix.Fused, ix.VectorsOnDisk())
	if fi, err := os.Stat(*dbPath + gallery.CacheSuffix); err == nil {
		fmt.Printf("search cache %s: %.0f MB\n", *dbPath+gallery.CacheSuffix, float64(fi.Size())/(1<<20))
	}
	fmt.Printf("load images=%d dim=%d captions=%s missing_captions=%d load_s=%.2f rss_mb=%.0f peak_rss_mb=%.0f fp32_image_vectors_mb=%.0f held_vectors_mb=%.0f compact_mb=%.0f\n",
		info.Images, info.Dim, info.CaptionKey, info.MissingCaptions, loadS, float64(rssKB)/1024, float64(hwmKB)/1024, imgMB,
		float64(len(ix.Image)+len(ix.Caption))*4/(1<<20), float64(ix.CompactBytes())/(1<<20))
	var p *peer
	if *peerCmd != "" {
		var ready string
		p, ready, err = startPeer(*peerCmd)
		if err != nil {
			return err
		}
		defer p.close()
		fmt.Println(ready)
	}
	ours := make([]float64, 0, len(qs))
	oursCPU := make([]float64, 0, len(qs))
	var theirs, theirsCPU []float64
	ids := make([]float32, len(qs)**k)
	scores := make([]float32, len(qs)**k)
	for a := 0; a < len(qs); a += *block {
		b := min(a+*block, len(qs))
		for i := a; i < b; i++ {
			c0 := cpuMS()
			t := time.Now()
			res, err := ix.Search(ctx, qs[i:i+1], *k)
			ours = append(ours, float64(time.Since(t).Microseconds())/1000)
			oursCPU = append(oursCPU, cpuMS()-c0)
			if err != nil {
				return err
			}
			for j, h := range res[0] {
				ids[i**k+j] = float32(h.Index)
				scores[i**k+j] = h.Score
			}
		}
		if p != nil {
			ms, cpu, err := p.run(a, min(a+*peerPer, b))
			if err != nil {
				return err
			}
			theirs = append(theirs, ms...)
			theirsCPU = append(theirsCPU, cpu...)
		}
	}
	// Resident memory: the larger of after loading and after the queries.
	rssKB = max(rssKB, benchstat.StatusKB("VmRSS"))
	fmt.Printf("resident after the queries: %.0f MB\n", float64(benchstat.StatusKB("VmRSS"))/1024)
	scans, rescored, rowsRead := ix.Counters.CompactQueries.Load(), ix.Counters.Rescored.Load(), ix.Counters.RowsRead.Load()
	// Cold: the same first queries again right after the OS page cache was
	// dropped, so every candidate row comes from the disk (root only).
	var cold []float64
	if *coldN > 0 && ix.VectorsOnDisk() {
		if err := dropCaches(); err != nil {
			fmt.Printf("cold: not measured (%v)\n", err)
		} else {
			for i := 0; i < min(*coldN, len(qs)); i++ {
				t := time.Now()
				if _, err := ix.Search(ctx, qs[i:i+1], *k); err != nil {
					return err
				}
				cold = append(cold, float64(time.Since(t).Microseconds())/1000)
			}
			fmt.Printf("cold page cache: queries=%d p50_ms=%.1f p99_ms=%.1f (each candidate row read from the disk)\n", len(cold), benchstat.Percentile(cold, 50), benchstat.Percentile(cold, 99))
		}
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "ours.npy"), ids, len(qs), *k); err != nil {
		return err
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "ours_scores.npy"), scores, len(qs), *k); err != nil {
		return err
	}
	cq := max(1, scans)
	fmt.Printf("compact scans=%d candidates_per_query=%.0f rows_read_per_query=%.0f\n", scans,
		float64(rescored)/float64(cq), float64(rowsRead)/float64(cq))
	fmt.Printf("imagescope fused compact kernel=%s threads=%d queries=%d p50_ms=%.1f p99_ms=%.1f mean_ms=%.1f cpu_ms_p50=%.1f (CPU time of all threads per query; the machine's load average was %s)\n",
		vindex.CompactKernelName(), *threads, len(ours), benchstat.Percentile(ours, 50), benchstat.Percentile(ours, 99), benchstat.Mean(ours), benchstat.Percentile(oursCPU, 50), loadavg())
	if len(theirs) > 0 {
		fmt.Printf("faiss IndexFlatIP image-only queries=%d p50_ms=%.1f p99_ms=%.1f mean_ms=%.1f cpu_ms_p50=%.1f\n", len(theirs), benchstat.Percentile(theirs, 50), benchstat.Percentile(theirs, 99), benchstat.Mean(theirs), benchstat.Percentile(theirsCPU, 50))
	}
	fmt.Printf("result load_s=%.2f rss_mb=%.0f p50_ms=%.1f p99_ms=%.1f cpu_ms_p50=%.1f\n", loadS, float64(rssKB)/1024, benchstat.Percentile(ours, 50), benchstat.Percentile(ours, 99), benchstat.Percentile(oursCPU, 50))
	runtime.KeepAlive(ix)
	return nil
}

// dropCaches writes back dirty pages and drops the OS page cache.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("1\n"), 0)
}

// cpuMS is the process's user + system CPU time so far, in milliseconds.
func cpuMS() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	dir := fs.String("dir", "", "gen output folder")
	tau := fs.Float64("tau", 0.15, "caption weight")
	k := fs.Int("k", 100, "hits per query")
	tol := fs.Float64("tol", 1e-6, "largest exact-score difference between images allowed to swap")
	fs.Parse(args)
	qs, _, err := queries(*dir, float32(*tau))
	if err != nil {
		return err
	}
	ours, nq, kk, err := npy.ReadMatrixFile(filepath.Join(*dir, "ours.npy"))
	if err != nil {
		return err
	}
	if nq != len(qs) || kk != *k {
		return fmt.Errorf("ours.npy is %dx%d, want %dx%d", nq, kk, len(qs), *k)
	}
	sub := filepath.Join(*dir, "refdb")
	img, n, d, err := npy.ReadMatrixFile(filepath.Join(sub, gallery.NPYImageEmbeddings))
	if err != nil {
		return err
	}
	capv, _, _, err := npy.ReadMatrixFile(filepath.Join(sub, gallery.NPYCaptionEmbeddings))
	if err != nil {
		return err
	}
	// The same normalisation the image DB applies on load.
	for _, m := range [][]float32{img, capv} {
		for i := 0; i < n; i++ {
			l2.Normalize(m[i*d : (i+1)*d])
		}
	}
	ix := &vindex.Index{Dim: d, Image: img, Caption: capv, HasCaption: true, Names: make([]string, n)}
	for i := range ix.Names {
		ix.Names[i] = strconv.Itoa(i)
	}
	ctx := context.Background()
	t0 := time.Now()
	ref, err := ix.Search(ctx, qs, *k)
	if err != nil {
		return err
	}
	refS := time.Since(t0).Seconds()
	// Exact scores of our hits: the same queries restricted to them.
	rq := make([]vindex.Query, len(qs))
	for i := range qs {
		rq[i] = qs[i]
		rq[i].Restrict = make([]int, *k)
		for j := range rq[i].Restrict {
			rq[i].Restrict[j] = int(ours[i**k+j])
		}
	}
	exact, err := ix.Search(ctx, rq, 0)
	if err != nil {
		return err
	}
	good, swaps, worst := 0, 0, 0.0
	var firstBad string
	for i := range qs {
		score := map[int]float32{}
		for _, h := range exact[i] {
			score[h.Index] = h.Score
		}
		for _, h := range ref[i] {
			score[h.Index] = h.Score
		}
		ok := len(ref[i]) == *k
		for j := 0; j < *k && ok; j++ {
			o, r := int(ours[i**k+j]), ref[i][j].Index
			if o == r {
				continue
			}
			swaps++
			diff := math.Abs(float64(score[o]) - float64(score[r]))
			worst = max(worst, diff)
			if diff >= *tol {
				ok = false
				if firstBad == "" {
					firstBad = fmt.Sprintf("query %d rank %d: got image %d (exact %v), want %d (exact %v)", i, j, o, score[o], r, score[r])
				}
			}
		}
		if ok {
			good++
		}
	}
	fmt.Printf("check exact reference: unfused image+caption blocked multiply, %d queries in %.1fs; positions that differ: %d (largest exact-score gap %.2g, allowed < %g)\n",
		len(qs), refS, swaps, worst, *tol)
	if firstBad != "" {
		fmt.Println("first mismatch:", firstBad)
	}
	fmt.Printf("exact_top%d=%.3f\n", *k, float64(good)/float64(len(qs)))
	return nil
}
