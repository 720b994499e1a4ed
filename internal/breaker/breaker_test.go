package breaker

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLifecycle(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	b := New(Config{Threshold: 2, Cooldown: 10 * time.Second, Now: c.now})
	step := func(want State) {
		t.Helper()
		if got := b.Status().State; got != want {
			t.Fatalf("state %v, want %v", got, want)
		}
	}
	if ok, probe := b.Allow(); !ok || probe {
		t.Fatal("closed breaker refused")
	}
	b.Failure("refused")
	step(Closed)
	b.Allow()
	b.Failure("refused again")
	step(Open)
	if ok, _ := b.Allow(); ok {
		t.Fatal("open breaker let a request through")
	}
	if got := b.NextProbe(); !got.Equal(c.t.Add(10 * time.Second)) {
		t.Fatalf("next probe %v", got)
	}
	c.advance(10 * time.Second)
	ok, probe := b.Allow()
	if !ok || !probe {
		t.Fatal("no probe after the cool-down")
	}
	step(HalfOpen)
	if ok, _ := b.Allow(); ok {
		t.Fatal("a second request went through while the probe is in flight")
	}
	b.Failure("still refused")
	step(Open)
	st := b.Status()
	if st.LastError != "still refused" || st.Opens != 2 || st.Failures != 3 || !st.FailingSince.Equal(time.Unix(1000, 0)) {
		t.Fatalf("status %+v", st)
	}
	c.advance(10 * time.Second)
	b.Allow()
	b.Neutral() // a 429 on the probe: another request may probe
	if ok, probe := b.Allow(); !ok || !probe {
		t.Fatal("probe not handed on after a neutral outcome")
	}
	b.Success()
	step(Closed)
	if st := b.Status(); st.Failures != 0 || !st.FailingSince.IsZero() || !st.NextProbe.IsZero() {
		t.Fatalf("status after success %+v", st)
	}
}

func TestStateText(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half-open"} {
		if b, _ := s.MarshalText(); string(b) != want {
			t.Errorf("%d -> %s", s, b)
		}
		var back State
		if err := back.UnmarshalText([]byte(want)); err != nil || back != s {
			t.Errorf("%s -> %v %v", want, back, err)
		}
	}
}

func ExampleBreaker() {
	b := New(Config{Threshold: 1, Cooldown: time.Minute})
	if ok, _ := b.Allow(); ok {
		b.Failure("connection refused")
	}
	ok, _ := b.Allow()
	fmt.Println(b.Status().State, ok)
	// Output: open false
}
