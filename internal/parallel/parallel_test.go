package parallel

import (
	"context"
	"sync/atomic"
	"testing"
)

func TestChunksCoversEachIndexOnce(t *testing.T) {
	for _, tc := range []struct{ workers, n int }{{1, 0}, {1, 7}, {4, 1}, {4, 7}, {3, 100}, {16, 5}, {0, 33}} {
		seen := make([]atomic.Int32, tc.n)
		var calls atomic.Int32
		Chunks(tc.workers, tc.n, func(lo, hi int) {
			calls.Add(1)
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			if seen[i].Load() != 1 {
				t.Errorf("workers %d n %d: index %d seen %d times", tc.workers, tc.n, i, seen[i].Load())
			}
		}
		if w := Workers(tc.workers); int(calls.Load()) > max(1, w) {
			t.Errorf("workers %d n %d: %d chunks", tc.workers, tc.n, calls.Load())
		}
	}
}

func TestForWorkerIDsDoNotOverlap(t *testing.T) {
	const workers, n = 4, 1000
	busy := make([]atomic.Int32, workers)
	seen := make([]atomic.Int32, n)
	For(workers, n, func(w, i int) {
		if w < 0 || w >= workers {
			t.Errorf("worker id %d", w)
			return
		}
		if busy[w].Add(1) != 1 {
			t.Errorf("worker %d runs two items at once", w)
		}
		seen[i].Add(1)
		busy[w].Add(-1)
	})
	for i := range seen {
		if seen[i].Load() != 1 {
			t.Fatalf("item %d seen %d times", i, seen[i].Load())
		}
	}
}

func TestForCtxStopsHandingOut(t *testing.T) {
	for _, workers := range []int{1, 3} {
		ctx, cancel := context.WithCancel(context.Background())
		var done atomic.Int32
		err := ForCtx(ctx, workers, 1000, func(_, i int) {
			if done.Add(1) == 10 {
				cancel()
			}
		})
		if err != context.Canceled {
			t.Errorf("workers %d: err %v", workers, err)
		}
		if d := done.Load(); d >= 1000 || d < 10 {
			t.Errorf("workers %d: %d items ran after cancel at 10", workers, d)
		}
		if err := ForCtx(context.Background(), workers, 5, func(int, int) {}); err != nil {
			t.Errorf("workers %d: %v", workers, err)
		}
	}
}

func TestWorkload(t *testing.T) {
	for _, tc := range []struct{ workers, n, cost, min, want int }{
		{4, 100, 1, 1 << 20, 1},        // too little work
		{4, 100, 1 << 20, 1 << 20, 4},  // enough
		{1, 100, 1 << 20, 1 << 20, 1},  // one worker
		{4, 7, 1 << 20, 1 << 20, 1},    // fewer than two rows per worker
		{8, 1000, 1 << 10, 1 << 20, 1}, // 1000*1024 < 1<<20
	} {
		if got := Workload(tc.workers, tc.n, tc.cost, tc.min); got != tc.want {
			t.Errorf("Workload(%d, %d, %d, %d) = %d, want %d", tc.workers, tc.n, tc.cost, tc.min, got, tc.want)
		}
	}
}

func BenchmarkFor(b *testing.B) {
	var sink atomic.Int64
	for b.Loop() {
		For(2, 1024, func(_, i int) { sink.Add(int64(i)) })
	}
}
