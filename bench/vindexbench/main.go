// Command vindexbench is the Go side of bench/vindex: it generates random
// L2-normalised data as .npy files, times vindex searches over them, and
// measures the image DB's load time and memory.
//
//	vindexbench gen    -dir D -n N -d DIM -q Q [-seed S]
//	vindexbench search -dir D -k K -tau TAU -threads T [-reps R]   (fused score; writes D/go_ids.npy)
//	vindexbench mkdb   -dir D -db PATH -n N -d DIM        (image + caption embeddings, via ImportNPY)
//	vindexbench load   -db PATH                           (time Open+Load, report RSS)
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/imagescope/imagescope/bench/internal/benchstat"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/internal/npy"
	"github.com/imagescope/imagescope/vindex"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vindexbench gen|search|mkdb|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "search":
		err = search(os.Args[2:])
	case "mkdb":
		err = mkdb(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vindexbench:", err)
		os.Exit(1)
	}
}

func randUnit(rng *rand.Rand, n, d int) []float32 {
	m := make([]float32, n*d)
	for i := 0; i < n; i++ {
		row := m[i*d : (i+1)*d]
		for j := range row {
			row[j] = float32(rng.NormFloat64())
		}
		l2.Normalize(row)
	}
	return m
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("dir", "", "output folder")
	n := fs.Int("n", 100000, "gallery vectors")
	d := fs.Int("d", 768, "dimension")
	q := fs.Int("q", 1000, "queries")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Parse(args)
	rng := rand.New(rand.NewPCG(*seed, 42))
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "gallery.npy"), randUnit(rng, *n, *d), *n, *d); err != nil {
		return err
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "captions.npy"), randUnit(rng, *n, *d), *n, *d); err != nil {
		return err
	}
	return npy.WriteMatrixFile(filepath.Join(*dir, "queries.npy"), randUnit(rng, *q, *d), *q, *d)
}

func search(args []string) error {
	fs := flag.NewFlagSet("search", flag.ExitOnError)
	dir := fs.String("dir", "", "data folder (gen output)")
	k := fs.Int("k", 100, "hits per query")
	threads := fs.Int("threads", runtime.NumCPU(), "search threads")
	reps := fs.Int("reps", 3, "timed repetitions (best is reported)")
	tau := fs.Float64("tau", 0.15, "caption weight of the fused score")
	fs.Parse(args)
	g, n, d, err := npy.ReadMatrixFile(filepath.Join(*dir, "gallery.npy"))
	if err != nil {
		return err
	}
	c, cn, cd, err := npy.ReadMatrixFile(filepath.Join(*dir, "captions.npy"))
	if err != nil {
		return err
	}
	if cn != n || cd != d {
		return fmt.Errorf("captions.npy is %dx%d, gallery %dx%d", cn, cd, n, d)
	}
	qm, nq, qd, err := npy.ReadMatrixFile(filepath.Join(*dir, "queries.npy"))
	if err != nil {
		return err
	}
	if qd != d {
		return fmt.Errorf("query dimension %d != gallery %d", qd, d)
	}
	ix := &vindex.Index{Dim: d, Image: g, Caption: c, HasCaption: true, Names: make([]string, n), Threads: *threads}
	for i := range ix.Names {
		ix.Names[i] = fmt.Sprint(i)
	}
	qs := make([]vindex.Query, nq)
	for i := range qs {
		qs[i] = vindex.Query{Descriptions: [][]float32{qm[i*d : (i+1)*d]}, Tau: float32(*tau)}
	}
	ctx := context.Background()
	best := time.Duration(math.MaxInt64)
	var res [][]vindex.Hit
	var times []string
	for r := 0; r < *reps; r++ {
		runtime.GC()
		t0 := time.Now()
		res, err = ix.Search(ctx, qs, *k)
		el := time.Since(t0)
		if err != nil {
			return err
		}
		times = append(times, fmt.Sprintf("%.3fs", el.Seconds()))
		best = min(best, el)
	}
	ids := make([]float32, nq**k)
	for i, hs := range res {
		for j, h := range hs {
			ids[i**k+j] = float32(h.Index)
		}
	}
	if err := npy.WriteMatrixFile(filepath.Join(*dir, "go_ids.npy"), ids, nq, *k); err != nil {
		return err
	}
	fmt.Printf("imagescope fused tau=%g kernel=%s threads=%d runs=[%s] best=%.3fs qps=%.1f\n", *tau, vindex.KernelName(), *threads, strings.Join(times, " "), best.Seconds(), float64(nq)/best.Seconds())
	return nil
}

func mkdb(args []string) error {
	fs := flag.NewFlagSet("mkdb", flag.ExitOnError)
	dir := fs.String("dir", "", "scratch folder for the .npy files")
	dbPath := fs.String("db", "", "image DB to create")
	n := fs.Int("n", 123403, "images")
	d := fs.Int("d", 768, "dimension")
	fs.Parse(args)
	rng := rand.New(rand.NewPCG(7, 7))
	names := make([]string, *n)
	caps := make([]string, *n)
	for i := range names {
		names[i] = fmt.Sprintf("%012d.jpg", i)
		caps[i] = fmt.Sprintf("a photo of object number %d on a table", i)
	}
	sub := filepath.Join(*dir, "refdb")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(sub, gallery.NPYNames))
	if err != nil {
		return err
	}
	if err := npy.WriteStrings(f, names); err != nil {
		return err
	}
	f.Close()
	if err := npy.WriteMatrixFile(filepath.Join(sub, gallery.NPYImageEmbeddings), randUnit(rng, *n, *d), *n, *d); err != nil {
		return err
	}
	if err := npy.WriteMatrixFile(filepath.Join(sub, gallery.NPYCaptionEmbeddings), randUnit(rng, *n, *d), *n, *d); err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("[")
	for i, c := range caps {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "%q", c)
	}
	sb.WriteString("]")
	if err := os.WriteFile(filepath.Join(sub, gallery.NPYCaptions), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := gallery.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	t0 := time.Now()
	sum, err := db.ImportNPY(ctx, sub, gallery.ImportOptions{ClipModel: "bench/random-768"})
	if err != nil {
		return err
	}
	fi, _ := os.Stat(*dbPath)
	fmt.Printf("import images=%d dim=%d time=%.1fs db_bytes=%d\n", sum.Images, sum.Dim, time.Since(t0).Seconds(), fi.Size())
	return os.RemoveAll(sub)
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	dbPath := fs.String("db", "", "image DB")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the load")
	fs.Parse(args)
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	t0 := time.Now()
	db, err := gallery.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	ix, info, err := db.LoadWithInfo(ctx, "", "")
	if err != nil {
		return err
	}
	el := time.Since(t0)
	db.Close()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm := benchstat.StatusKB("VmRSS"), benchstat.StatusKB("VmHWM")
	vecMB := float64(len(ix.Image)+len(ix.Caption)) * 4 / (1 << 20)
	fmt.Printf("load images=%d dim=%d captions=%v time=%.2fs rss=%dkB peak_rss=%dkB heap_inuse=%.0fMiB vectors=%.0fMiB\n",
		info.Images, info.Dim, ix.HasCaption, el.Seconds(), rss, hwm, float64(ms.HeapInuse)/(1<<20), vecMB)
	runtime.KeepAlive(ix)
	return nil
}
