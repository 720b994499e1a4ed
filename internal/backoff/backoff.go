// Package backoff is the one retry-wait policy of the module: model
// clients, queue redeliveries, Weaviate node failover and resumed hub
// downloads all wait before a retry through a Policy.
package backoff

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy is an exponential backoff: the wait before retry n (1-based) is
// Base*2^(n-1), capped at Max. With Jitter the wait is drawn uniformly
// from [0, that] instead ("full jitter", which spreads the retries of many
// clients that failed together). A server-given wait (HTTP Retry-After)
// takes precedence when the caller passes one, capped at RetryAfterMax.
type Policy struct {
	Base, Max time.Duration
	Jitter    bool
	// RetryAfterMax caps a server-given wait; 0 leaves it uncapped.
	RetryAfterMax time.Duration
}

// Delay is the wait before retry n (n >= 1).
func (p Policy) Delay(n int) time.Duration {
	ceil := p.Base << min(max(n-1, 0), 30)
	if ceil <= 0 || (p.Max > 0 && ceil > p.Max) {
		ceil = p.Max
	}
	if ceil <= 0 {
		return 0
	}
	if p.Jitter {
		return time.Duration(rand.Int64N(int64(ceil) + 1))
	}
	return ceil
}

// After is the wait before retry n given the server's own request to wait
// (0 when it made none): the server's wait capped at RetryAfterMax when
// positive, else Delay(n).
func (p Policy) After(n int, server time.Duration) time.Duration {
	if server > 0 {
		if p.RetryAfterMax > 0 {
			return min(server, p.RetryAfterMax)
		}
		return server
	}
	return p.Delay(n)
}

// Sleep waits d, or until ctx is done (then it returns ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ParseRetryAfter reads an HTTP Retry-After header (seconds, or an HTTP
// date); 0 when the header is absent, malformed or in the past.
func ParseRetryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(strings.TrimSpace(h), 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
