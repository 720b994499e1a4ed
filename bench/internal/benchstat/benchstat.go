// Package benchstat holds the small measurements the bench programs share:
// percentiles, means and the process's memory figures.
package benchstat

import (
	"cmp"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Percentile is the nearest-rank p-th percentile (p in 0..100) of xs, which
// it does not reorder; the zero value for no samples.
func Percentile[T cmp.Ordered](xs []T, p float64) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Mean is the arithmetic mean of xs (NaN for none).
func Mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// StatusKB reads a kB figure of /proc/self/status (VmRSS, VmHWM, ...);
// -1 when it cannot.
func StatusKB(key string) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if v, err := strconv.Atoi(f[0]); err == nil {
					return v
				}
			}
		}
	}
	return -1
}
