// Package breaker is the circuit breaker of one model-server endpoint:
// after Threshold consecutive failures it opens for a cool-down, then lets
// one probe through (half-open) and closes again when the probe succeeds.
// It also remembers since when the endpoint has been failing without a
// single success, which batch runs use to decide that a role is down.
package breaker

import (
	"fmt"
	"sync"
	"time"
)

// State is a breaker's state.
type State int

// The states.
const (
	// Closed: requests flow; consecutive failures are counted.
	Closed State = iota
	// Open: requests are refused until the next probe is due.
	Open
	// HalfOpen: one probe request is (or may be) in flight; its outcome
	// closes or re-opens the breaker.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "closed"
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	switch string(b) {
	case "closed":
		*s = Closed
	case "open":
		*s = Open
	case "half-open":
		*s = HalfOpen
	default:
		return fmt.Errorf("breaker state %q: want closed, open or half-open", b)
	}
	return nil
}

// Config tunes a Breaker.
type Config struct {
	// Threshold is the number of consecutive failures that opens the
	// breaker (default 3).
	Threshold int
	// Cooldown is how long the breaker stays open before a probe
	// (default 10s).
	Cooldown time.Duration
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Breaker guards one endpoint. It is safe for concurrent use.
type Breaker struct {
	cfg Config

	mu        sync.Mutex
	state     State
	fails     int
	probing   bool
	nextProbe time.Time
	// failingSince is the time of the first failure after the last
	// success (zero while the last outcome was a success).
	failingSince time.Time
	lastErr      string
	lastErrAt    time.Time
	opens        int64
}

// New returns a closed breaker.
func New(cfg Config) *Breaker {
	if cfg.Threshold <= 0 {
		cfg.Threshold = 3
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breaker{cfg: cfg}
}

// Ready reports whether Allow would let a request through now, without
// taking the probe.
func (b *Breaker) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readyLocked(b.cfg.Now())
}

func (b *Breaker) readyLocked(now time.Time) bool {
	switch b.state {
	case Closed:
		return true
	case Open:
		return !now.Before(b.nextProbe)
	default:
		return !b.probing
	}
}

// Allow reports whether a request may go to the endpoint now. When the
// breaker is open and the cool-down is over it turns half-open and the
// caller carries the probe (probe true); every Allow that returned ok
// must be followed by exactly one Success, Failure or Neutral.
func (b *Breaker) Allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	if !b.readyLocked(now) {
		return false, false
	}
	if b.state == Closed {
		return true, false
	}
	b.state, b.probing = HalfOpen, true
	return true, true
}

// Success records a working reply: the breaker closes.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.fails, b.probing = Closed, 0, false
	b.failingSince = time.Time{}
}

// Failure records a failed request (transport error, 5xx, cut-off reply).
// In the closed state the Threshold-th consecutive failure opens the
// breaker; a failed probe re-opens it for another cool-down.
func (b *Breaker) Failure(cause string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	b.fails++
	b.lastErr, b.lastErrAt = cause, now
	if b.failingSince.IsZero() {
		b.failingSince = now
	}
	if b.state == HalfOpen || b.fails >= b.cfg.Threshold {
		if b.state != Open {
			b.opens++
		}
		b.state, b.probing = Open, false
		b.nextProbe = now.Add(b.cfg.Cooldown)
	}
}

// Neutral records an outcome that says nothing about the endpoint's health
// (a 429, a request cancelled by its caller): a probe in flight is given
// back so another request can carry it.
func (b *Breaker) Neutral() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// NextProbe is when an open breaker lets its next probe through (zero
// when it is not open).
func (b *Breaker) NextProbe() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != Open {
		return time.Time{}
	}
	return b.nextProbe
}

// Status is a snapshot of a breaker.
type Status struct {
	State State `json:"state"`
	// Failures is the number of consecutive failures.
	Failures int `json:"consecutive_failures"`
	// LastError is the cause of the last failure and LastErrorAt its time.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// NextProbe is when an open breaker tries the endpoint again.
	NextProbe time.Time `json:"next_probe,omitzero"`
	// FailingSince is the first failure after the last success.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// Opens counts how often the breaker opened.
	Opens int64 `json:"opens"`
}

// Status returns a snapshot.
func (b *Breaker) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Status{State: b.state, Failures: b.fails, LastError: b.lastErr, LastErrorAt: b.lastErrAt,
		FailingSince: b.failingSince, Opens: b.opens}
	if b.state == Open {
		s.NextProbe = b.nextProbe
	}
	return s
}
