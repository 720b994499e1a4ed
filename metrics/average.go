package metrics

import (
	"fmt"
	"strings"
)

// Average combines per-category reports (FashionIQ dress, shirt, toptee)
// into one: each scalar metric present in every report becomes the
// arithmetic mean of the categories' values (the "Avg." the benchmark
// reports), followed by the per-category values under "<metric>/<category>".
// The category is the part of the report's Dataset after the last '-'.
func Average(name, split string, reps []*Report) (*Report, error) {
	if len(reps) == 0 {
		return nil, fmt.Errorf("average: no reports")
	}
	out := &Report{Dataset: name, Split: split, Labelled: true}
	for _, r := range reps {
		out.Queries += r.Queries
		out.Missing += r.Missing
		out.Labelled = out.Labelled && r.Labelled
	}
	if !out.Labelled {
		return out, nil
	}
	for _, m := range reps[0].Metrics {
		if m.Rounds != nil {
			continue
		}
		sum, ok := 0.0, true
		for _, r := range reps {
			v, has := r.Get(m.Key)
			if !has {
				ok = false
				break
			}
			sum += v
		}
		if ok {
			out.add(m.Key, sum/float64(len(reps)))
		}
	}
	for _, r := range reps {
		cat := r.Dataset
		if i := strings.LastIndex(cat, "-"); i >= 0 {
			cat = cat[i+1:]
		}
		for _, m := range r.Metrics {
			if m.Rounds == nil {
				out.add(m.Key+"/"+cat, m.Value)
			}
		}
	}
	return out, nil
}
