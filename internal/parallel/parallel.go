// Package parallel runs the iterations of a loop on a bounded number of
// goroutines: the one parallel-for of the module.
//
// Two shapes cover the callers: Chunks hands each goroutine one contiguous
// range (even work, cache-friendly: rows of a matrix or an image), and For
// hands out single items from a shared counter (uneven work: attention
// heads, query batches, blocks of a gallery). Both run on an errgroup whose
// goroutine count is the worker bound.
package parallel

import (
	"context"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// Workers returns n, or GOMAXPROCS when n <= 0: the meaning of a "threads"
// option throughout the module.
func Workers(n int) int {
	if n <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return n
}

// Chunks splits [0,n) into at most workers contiguous ranges of near-equal
// length and calls fn(lo, hi) for each, concurrently, returning when all
// have returned. With one worker (or n <= 1) fn runs once on the calling
// goroutine. workers <= 0 means GOMAXPROCS.
func Chunks(workers, n int, fn func(lo, hi int)) {
	workers = min(Workers(workers), n)
	if workers <= 1 {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var g errgroup.Group
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		g.Go(func() error {
			fn(lo, hi)
			return nil
		})
	}
	g.Wait()
}

// For calls fn(w, i) for every i in [0,n) on up to workers goroutines,
// handing items out one at a time so that uneven items balance. w
// (0 <= w < workers) names the goroutine running the call, for per-worker
// scratch space; calls with the same w never overlap. With one worker fn
// runs on the calling goroutine in order. workers <= 0 means GOMAXPROCS.
func For(workers, n int, fn func(w, i int)) {
	forEach(func() bool { return false }, workers, n, fn)
}

// ForCtx is For that stops handing out items once ctx is done; items
// already started finish. It returns ctx.Err() when the loop was cut short
// (or ctx was done on return), else nil.
func ForCtx(ctx context.Context, workers, n int, fn func(w, i int)) error {
	forEach(func() bool { return ctx.Err() != nil }, workers, n, fn)
	return ctx.Err()
}

// Workload returns how many workers a loop of n items of cost each should
// use so that every worker gets at least minWork units: 1 when the whole
// loop is smaller than that. workers <= 0 means GOMAXPROCS.
func Workload(workers, n, cost, minWork int) int {
	workers = Workers(workers)
	if n*cost < minWork || workers < 2 || n < 2*workers {
		return 1
	}
	return workers
}

// forEach hands out [0,n) until stopped reports true.
func forEach(stopped func() bool, workers, n int, fn func(w, i int)) {
	workers = min(Workers(workers), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			if stopped() {
				return
			}
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var g errgroup.Group
	for w := 0; w < workers; w++ {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || stopped() {
					return nil
				}
				fn(w, i)
			}
		})
	}
	g.Wait()
}
