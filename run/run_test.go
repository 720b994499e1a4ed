package run

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func runOnce(t *testing.T, b *benchSetup, barrier bool, active int) (string, time.Duration) {
	t.Helper()
	dir := t.TempDir()
	r, err := New(Config{Engine: b.engine, Dataset: b.ds, Dir: dir, Settings: Settings{Dataset: b.ds.Name, Split: b.ds.Split, Stages: 3, Barrier: barrier, Active: active}, Score: rankOnlyScorer})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir, time.Since(start)
}

func TestStreamingAndBarrierAgree(t *testing.T) {
	b := newBenchSetup(t, 6, 40, map[string]int{"reasoner": 2, "verifier": 4, "evaluator": 2}, map[string]time.Duration{})
	d1, _ := runOnce(t, b, false, 3)
	d2, _ := runOnce(t, b, true, 3)
	for _, f := range []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json", "trace.jsonl"} {
		x, err1 := os.ReadFile(filepath.Join(d1, f))
		y, err2 := os.ReadFile(filepath.Join(d2, f))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between streaming and barrier (%v %v)", f, err1, err2)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(d1, "report.txt"))
	if !strings.Contains(string(rep), "upper bound") {
		t.Errorf("report:\n%s", rep)
	}
}

// TestBenchPipeline measures streaming against barrier execution on
// latency-simulating servers with fixed capacity per role. It runs only
// when IMAGESCOPE_BENCH is set (bench/pipeline sets it).
func TestBenchPipeline(t *testing.T) {
	if os.Getenv("IMAGESCOPE_BENCH") == "" {
		t.Skip("set IMAGESCOPE_BENCH=1 (bench/pipeline) to run")
	}
	queries := 48
	if v, err := strconv.Atoi(os.Getenv("QUERIES")); err == nil && v > 0 {
		queries = v
	}
	capacity := map[string]int{"reasoner": 4, "verifier": 16, "evaluator": 2}
	latency := map[string]time.Duration{"reasoner": 120 * time.Millisecond, "verifier": 15 * time.Millisecond, "evaluator": 80 * time.Millisecond}
	fmt.Printf("setup: %d text queries, gallery 500, K=20, alpha=3, 4 propositions per query\n", queries)
	fmt.Printf("servers: reasoner capacity %d latency %v; verifier %d x %v; evaluator %d x %v\n",
		capacity["reasoner"], latency["reasoner"], capacity["verifier"], latency["verifier"], capacity["evaluator"], latency["evaluator"])
	var walls [2]time.Duration
	for i, barrier := range []bool{true, false} {
		b := newBenchSetup(t, queries, 500, capacity, latency)
		dir, wall := runOnce(t, b, barrier, 64)
		walls[i] = wall
		req := b.requests()
		mode := "barrier"
		if !barrier {
			mode = "streaming"
		}
		r := b.engine.Stats()
		total := 0.0
		for _, s := range r {
			total += float64(s.Calls)
		}
		fmt.Printf("%-9s wall %6.2fs  server requests: reasoner %d verifier %d evaluator %d  model calls/query %.2f\n",
			mode, wall.Seconds(), req["reasoner"], req["verifier"], req["evaluator"], total/float64(queries))
		if !barrier {
			txt, _ := os.ReadFile(filepath.Join(dir, "report.txt"))
			for _, l := range strings.Split(string(txt), "\n") {
				if strings.Contains(l, "upper bound") {
					fmt.Println(l)
				}
			}
		}
	}
	fmt.Printf("pipeline streaming/barrier=%.2f\n", walls[1].Seconds()/walls[0].Seconds())
}
