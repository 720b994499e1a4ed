package vindex

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTune times kernel parameter variants (VINDEX_TUNE=1 only).
func TestTune(t *testing.T) {
	if os.Getenv("VINDEX_TUNE") == "" {
		t.Skip("VINDEX_TUNE not set")
	}
	n, d, nq := 30000, 768, 1000
	if v, err := strconv.Atoi(os.Getenv("VINDEX_TUNE_N")); err == nil && v > 0 {
		n = v
	}
	rng := rand.New(rand.NewPCG(1, 1))
	ix := &Index{Dim: d, Image: make([]float32, n*d), Names: make([]string, n)}
	for i := 0; i < n; i++ {
		ix.Names[i] = fmt.Sprint(i)
		normal(rng, ix.Image[i*d:(i+1)*d])
	}
	qs := make([]Query, nq)
	for i := range qs {
		v := make([]float32, d)
		normal(rng, v)
		qs[i] = Query{Descriptions: [][]float32{v}}
	}
	base := pickKernel()
	var variants []kernel
	for _, kc := range tuneList("VINDEX_TUNE_KC", []int{64, 128, 256}) {
		for _, nb := range tuneList("VINDEX_TUNE_NB", []int{base.mr * 8, base.mr * 16, base.mr * 32}) {
			k := base
			k.kc, k.nb = kc, nb
			variants = append(variants, k)
		}
	}
	best := map[string]time.Duration{}
	for rep := 0; rep < tuneReps(); rep++ {
		for _, k := range variants {
			name := fmt.Sprintf("%s kc=%d nb=%d", k.name, k.kc, k.nb)
			t0 := time.Now()
			if _, err := ix.search(context.Background(), k, qs, 100); err != nil {
				t.Fatal(err)
			}
			el := time.Since(t0)
			if b, ok := best[name]; !ok || el < b {
				best[name] = el
			}
		}
	}
	for _, k := range variants {
		name := fmt.Sprintf("%s kc=%d nb=%d", k.name, k.kc, k.nb)
		t.Logf("%-28s %.0f qps", name, float64(nq)/best[name].Seconds())
	}
}

func tuneReps() int {
	if v, err := strconv.Atoi(os.Getenv("VINDEX_TUNE_REPS")); err == nil && v > 0 {
		return v
	}
	return 4
}

func tuneList(env string, def []int) []int {
	var out []int
	for _, f := range strings.Split(os.Getenv(env), ",") {
		if v, err := strconv.Atoi(f); err == nil && v > 0 {
			out = append(out, v)
		}
	}
	if out == nil {
		return def
	}
	return out
}
