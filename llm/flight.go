package llm

import (
	"context"
	"errors"
	"sync"
)

// flights sends identical requests in flight at the same time once: the
// first caller of a key makes the request, later callers wait for its
// answer (the encoded reply, as the cache stores it).
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  []byte
	err  error
}

// do runs fn for key unless a call for key is already in flight, in which
// case it waits for that call's result (shared true). A waiter whose
// leader was cancelled by its own caller tries again itself.
func (f *flights) do(ctx context.Context, key string, fn func() ([]byte, error)) (val []byte, shared bool, err error) {
	for {
		f.mu.Lock()
		if f.m == nil {
			f.m = map[string]*flight{}
		}
		if fl, ok := f.m[key]; ok {
			f.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if fl.err != nil && (errors.Is(fl.err, context.Canceled) || errors.Is(fl.err, context.DeadlineExceeded)) && ctx.Err() == nil {
				continue
			}
			return fl.val, true, fl.err
		}
		fl := &flight{done: make(chan struct{})}
		f.m[key] = fl
		f.mu.Unlock()
		fl.val, fl.err = fn()
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(fl.done)
		return fl.val, false, fl.err
	}
}
