package llm

import (
	"context"
	"sync"
	"time"
)

// endpoint is one replica of a role.
type endpoint struct {
	url      string
	max      int
	inflight int
	// fails counts consecutive failures; at the threshold the endpoint
	// cools down until coolUntil.
	fails     int
	coolUntil time.Time
	requests  int64
	failures  int64
}

// pool balances requests over a role's replicas: least outstanding
// requests first, at most max in flight per endpoint, failing endpoints
// taken out for a cool-down. Waiters are served in FIFO order.
type pool struct {
	mu        sync.Mutex
	eps       []*endpoint
	next      int // rotates ties
	waiters   []chan struct{}
	threshold int
	cooldown  time.Duration
	now       func() time.Time
}

func newPool(urls []string, maxInFlight, threshold int, cooldown time.Duration) *pool {
	p := &pool{threshold: threshold, cooldown: cooldown, now: time.Now}
	for _, u := range urls {
		p.eps = append(p.eps, &endpoint{url: u, max: maxInFlight})
	}
	return p
}

// errAllCooling is returned by acquire when failFast is set and every
// endpoint is cooling down.
var errAllCooling = errorString("every endpoint is cooling down after repeated failures")

type errorString string

func (e errorString) Error() string { return string(e) }

// acquire reserves a slot on the best endpoint, waiting for capacity or
// for a cool-down to end. With failFast it returns errAllCooling instead
// of waiting out a cool-down.
func (p *pool) acquire(ctx context.Context, failFast bool) (*endpoint, error) {
	for {
		p.mu.Lock()
		now := p.now()
		var best *endpoint
		var soonest time.Time
		anyHealthy := false
		n := len(p.eps)
		for i := 0; i < n; i++ {
			e := p.eps[(p.next+i)%n]
			if e.coolUntil.After(now) {
				if soonest.IsZero() || e.coolUntil.Before(soonest) {
					soonest = e.coolUntil
				}
				continue
			}
			anyHealthy = true
			if e.inflight >= e.max {
				continue
			}
			if best == nil || e.inflight < best.inflight {
				best = e
			}
		}
		if best != nil && len(p.waiters) == 0 {
			best.inflight++
			best.requests++
			p.next = (p.next + 1) % n
			p.mu.Unlock()
			return best, nil
		}
		if best != nil {
			// Others wait ahead of us: wake the first and queue behind.
			p.wakeLocked(1)
		}
		if !anyHealthy && failFast {
			p.mu.Unlock()
			return nil, errAllCooling
		}
		ch := make(chan struct{}, 1)
		p.waiters = append(p.waiters, ch)
		p.mu.Unlock()

		var timer <-chan time.Time
		var t *time.Timer
		if !anyHealthy {
			t = time.NewTimer(soonest.Sub(now))
			timer = t.C
		}
		var got *endpoint
		var err error
		select {
		case <-ch:
			got, _ = p.tryTake()
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

// tryTake is called by a woken waiter (already removed from the queue):
// it takes a free slot if there is one.
func (p *pool) tryTake() (*endpoint, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var best *endpoint
	n := len(p.eps)
	for i := 0; i < n; i++ {
		e := p.eps[(p.next+i)%n]
		if e.coolUntil.After(now) || e.inflight >= e.max {
			continue
		}
		if best == nil || e.inflight < best.inflight {
			best = e
		}
	}
	if best == nil {
		return nil, false
	}
	best.inflight++
	best.requests++
	p.next = (p.next + 1) % n
	// More free slots (e.g. an endpoint back from cool-down)? Pass the
	// wake-up on so they fill.
	if len(p.waiters) > 0 && p.freeLocked(now) {
		p.wakeLocked(1)
	}
	return best, true
}

func (p *pool) freeLocked(now time.Time) bool {
	for _, e := range p.eps {
		if !e.coolUntil.After(now) && e.inflight < e.max {
			return true
		}
	}
	return false
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
	outcomeNeutral                // 429: busy, not broken
)

// release frees the slot and records the outcome; an endpoint failing
// threshold times in a row cools down.
func (p *pool) release(e *endpoint, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.inflight--
	switch o {
	case outcomeOK:
		e.fails = 0
	case outcomeFailed:
		e.fails++
		e.failures++
		if e.fails >= p.threshold {
			e.coolUntil = p.now().Add(p.cooldown)
		}
	}
	p.wakeLocked(1)
}

// EndpointStats describes one replica.
type EndpointStats struct {
	URL         string `json:"url"`
	Requests    int64  `json:"requests"`
	Failures    int64  `json:"failures"`
	InFlight    int    `json:"in_flight"`
	CoolingDown bool   `json:"cooling_down"`
}

func (p *pool) stats() []EndpointStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	out := make([]EndpointStats, len(p.eps))
	for i, e := range p.eps {
		out[i] = EndpointStats{URL: e.url, Requests: e.requests, Failures: e.failures, InFlight: e.inflight, CoolingDown: e.coolUntil.After(now)}
	}
	return out
}
