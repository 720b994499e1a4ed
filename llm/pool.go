package llm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imagescope/imagescope/internal/breaker"
)

// endpoint is one replica of a role, guarded by its circuit breaker.
type endpoint struct {
	url      string
	max      int
	inflight int
	br       *breaker.Breaker
	requests int64
	failures int64
}

// pool balances requests over a role's replicas: least outstanding
// requests first, at most max in flight per endpoint, endpoints whose
// breaker is open skipped until their probe is due. Waiters are served in
// FIFO order.
type pool struct {
	mu      sync.Mutex
	eps     []*endpoint
	next    int // rotates ties
	waiters []chan struct{}
	now     func() time.Time
	// failingSince is the first failure after the last success on any
	// endpoint: the role has been unreachable since then.
	failingSince time.Time
	lastErr      string
}

func newPool(urls []string, maxInFlight, threshold int, cooldown time.Duration, now func() time.Time) *pool {
	if now == nil {
		now = time.Now
	}
	p := &pool{now: now}
	for _, u := range urls {
		p.eps = append(p.eps, &endpoint{url: u, max: maxInFlight,
			br: breaker.New(breaker.Config{Threshold: threshold, Cooldown: cooldown, Now: now})})
	}
	return p
}

// allOpenError is returned by acquire when no endpoint may be tried.
type allOpenError struct {
	n         int
	nextProbe time.Time
	now       time.Time
	last      string
}

func (e *allOpenError) Error() string {
	s := "every endpoint's circuit is open after repeated failures"
	if e.n == 1 {
		s = "the endpoint's circuit is open after repeated failures"
	}
	if !e.nextProbe.IsZero() {
		s += fmt.Sprintf(" (next probe in %v)", max(e.nextProbe.Sub(e.now), 0).Round(100*time.Millisecond))
	} else {
		s += " (a probe is in flight)"
	}
	if e.last != "" {
		s += "; last error: " + e.last
	}
	return s
}

// acquire reserves a slot on the best endpoint whose breaker lets a
// request through, waiting for capacity or for a probe to fall due. When
// no endpoint may be tried it returns an *allOpenError at once with
// failFast, or once giveUp (when not zero) has passed.
func (p *pool) acquire(ctx context.Context, failFast bool, giveUp time.Time) (*endpoint, error) {
	for {
		p.mu.Lock()
		now := p.now()
		best, anyReady, soonest := p.pickLocked()
		if best != nil && len(p.waiters) == 0 {
			p.takeLocked(best)
			p.mu.Unlock()
			return best, nil
		}
		if best != nil {
			// Others wait ahead of us: wake the first and queue behind.
			p.wakeLocked(1)
		}
		if !anyReady && (failFast || (!giveUp.IsZero() && !now.Before(giveUp))) {
			err := &allOpenError{n: len(p.eps), nextProbe: soonest, now: now, last: p.lastErr}
			p.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{}, 1)
		p.waiters = append(p.waiters, ch)
		p.mu.Unlock()

		var timer <-chan time.Time
		var t *time.Timer
		if !anyReady {
			wake := soonest
			if !giveUp.IsZero() && (wake.IsZero() || giveUp.Before(wake)) {
				wake = giveUp
			}
			if !wake.IsZero() {
				t = time.NewTimer(max(wake.Sub(now), time.Millisecond))
				timer = t.C
			}
		}
		var got *endpoint
		var err error
		select {
		case <-ch:
			got = p.tryTake()
		case <-timer:
			p.removeWaiter(ch)
		case <-ctx.Done():
			p.removeWaiter(ch)
			err = ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
		if got != nil || err != nil {
			return got, err
		}
	}
}

// pickLocked finds the least loaded endpoint that may take a request;
// anyReady is false when every breaker refuses, soonest is then the
// earliest probe (zero while a probe is in flight).
func (p *pool) pickLocked() (best *endpoint, anyReady bool, soonest time.Time) {
	n := len(p.eps)
	for i := 0; i < n; i++ {
		e := p.eps[(p.next+i)%n]
		if !e.br.Ready() {
			if np := e.br.NextProbe(); !np.IsZero() && (soonest.IsZero() || np.Before(soonest)) {
				soonest = np
			}
			continue
		}
		anyReady = true
		if e.inflight >= e.max {
			continue
		}
		if best == nil || e.inflight < best.inflight {
			best = e
		}
	}
	return best, anyReady, soonest
}

func (p *pool) takeLocked(e *endpoint) {
	e.br.Allow() // Ready was checked under the same lock
	e.inflight++
	e.requests++
	p.next = (p.next + 1) % len(p.eps)
}

// tryTake is called by a woken waiter (already removed from the queue):
// it takes a free slot if there is one.
func (p *pool) tryTake() *endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	best, _, _ := p.pickLocked()
	if best == nil {
		return nil
	}
	p.takeLocked(best)
	// More free slots (e.g. an endpoint back from cool-down)? Pass the
	// wake-up on so they fill.
	if b, _, _ := p.pickLocked(); b != nil && len(p.waiters) > 0 {
		p.wakeLocked(1)
	}
	return best
}

// wakeLocked signals up to k waiters (removing them from the queue).
func (p *pool) wakeLocked(k int) {
	for ; k > 0 && len(p.waiters) > 0; k-- {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		ch <- struct{}{}
	}
}

func (p *pool) removeWaiter(ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return
		}
	}
	// Already woken: pass the wake-up on so no slot is lost.
	select {
	case <-ch:
		p.wakeLocked(1)
	default:
	}
}

// outcome of one request on an endpoint.
type outcome int

const (
	outcomeOK      outcome = iota // the endpoint worked (even if it rejected the request)
	outcomeFailed                 // transport error, 5xx, timeout, malformed reply
	outcomeNeutral                // 429, or cancelled by the caller: busy, not broken
)

// release frees the slot and records the outcome in the endpoint's
// breaker.
func (p *pool) release(e *endpoint, o outcome, cause string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.inflight--
	switch o {
	case outcomeOK:
		e.br.Success()
		p.failingSince = time.Time{}
	case outcomeFailed:
		e.failures++
		e.br.Failure(cause)
		p.lastErr = e.url + ": " + cause
		if p.failingSince.IsZero() {
			p.failingSince = p.now()
		}
	default:
		e.br.Neutral()
	}
	// A freed slot, a closed breaker or a probe handed back: wake every
	// waiter that can now go (the rest queue again).
	p.wakeLocked(len(p.waiters))
}

// unreachableFor is how long the role has gone without a successful
// reply since its first failure (0 when the last outcome was a success).
func (p *pool) unreachableFor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failingSince.IsZero() {
		return 0
	}
	return p.now().Sub(p.failingSince)
}

// EndpointStats describes one replica.
type EndpointStats struct {
	URL      string `json:"url"`
	Requests int64  `json:"requests"`
	Failures int64  `json:"failures"`
	InFlight int    `json:"in_flight"`
	// CoolingDown is true while the breaker is open.
	CoolingDown bool           `json:"cooling_down"`
	Breaker     breaker.Status `json:"breaker"`
}

func (p *pool) stats() []EndpointStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointStats, len(p.eps))
	for i, e := range p.eps {
		bs := e.br.Status()
		out[i] = EndpointStats{URL: e.url, Requests: e.requests, Failures: e.failures, InFlight: e.inflight,
			CoolingDown: bs.State == breaker.Open, Breaker: bs}
	}
	return out
}
