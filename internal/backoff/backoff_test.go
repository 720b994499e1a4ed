package backoff

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {100, time.Minute}, {0, time.Second}} {
		if got := p.Delay(tc.n); got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	if got := (Policy{Base: time.Second}).Delay(5); got != 16*time.Second {
		t.Errorf("no cap: %v", got)
	}
	j := Policy{Base: 100 * time.Millisecond, Max: time.Second, Jitter: true}
	for n := 1; n < 10; n++ {
		ceil := min(100*time.Millisecond<<(n-1), time.Second)
		for range 50 {
			if d := j.Delay(n); d < 0 || d > ceil {
				t.Fatalf("jittered Delay(%d) = %v, outside [0, %v]", n, d, ceil)
			}
		}
	}
}

func TestAfterHonoursServer(t *testing.T) {
	p := Policy{Base: time.Millisecond, Max: time.Millisecond, RetryAfterMax: 5 * time.Second}
	for _, tc := range []struct {
		server, want time.Duration
	}{{2 * time.Second, 2 * time.Second}, {time.Hour, 5 * time.Second}, {0, time.Millisecond}} {
		if got := p.After(1, tc.server); got != tc.want {
			t.Errorf("After(1, %v) = %v, want %v", tc.server, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	future := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		h        string
		min, max time.Duration
	}{{"", 0, 0}, {"3", 3 * time.Second, 3 * time.Second}, {" 1.5 ", 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"-1", 0, 0}, {"soon", 0, 0}, {future, 28 * time.Second, 30 * time.Second}, {"Mon, 01 Jan 2001 00:00:00 GMT", 0, 0}} {
		if got := ParseRetryAfter(tc.h); got < tc.min || got > tc.max {
			t.Errorf("ParseRetryAfter(%q) = %v, want in [%v, %v]", tc.h, got, tc.min, tc.max)
		}
	}
}

func TestSleepStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep after cancel: %v", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
