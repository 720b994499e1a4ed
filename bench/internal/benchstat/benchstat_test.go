package benchstat

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct{ p, want float64 }{{0, 1}, {10, 1}, {50, 5}, {90, 9}, {99, 10}, {100, 10}} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("Percentile reordered its input")
	}
	if got := Percentile([]time.Duration{3 * time.Second, time.Second}, 50); got != time.Second {
		t.Errorf("durations p50 = %v", got)
	}
	if got := Percentile([]float64(nil), 50); got != 0 {
		t.Errorf("empty p50 = %v", got)
	}
}

func TestStatusKB(t *testing.T) {
	if v := StatusKB("VmRSS"); v <= 0 {
		t.Skipf("no /proc/self/status here (%d)", v)
	}
	if v := StatusKB("NoSuchKey"); v != -1 {
		t.Errorf("unknown key = %d", v)
	}
}
