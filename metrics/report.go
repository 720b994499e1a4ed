package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/dataset"
)

// Metric is one reported value: a fraction, or a list of fractions over
// VisDial rounds.
type Metric struct {
	Key    string
	Value  float64
	Rounds []float64 // non-nil for per-round metrics; Value is then unused
}

// Report is the result of Score. It marshals to one flat JSON object:
// "dataset", "split", "queries" (scored), "missing" (queries without a
// ranking, counted as misses), "labelled", then the metric keys in order
// (recall@K, recall_subset@K, map@K, hits@K as a list over rounds, ...).
type Report struct {
	Dataset  string
	Split    string
	Queries  int
	Missing  int
	Labelled bool
	Metrics  []Metric
}

func (r *Report) add(key string, v float64) {
	r.Metrics = append(r.Metrics, Metric{Key: key, Value: v})
}

func (r *Report) addRounds(key string, v []float64) {
	r.Metrics = append(r.Metrics, Metric{Key: key, Rounds: v})
}

// Get returns a scalar metric.
func (r *Report) Get(key string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Key == key && m.Rounds == nil {
			return m.Value, true
		}
	}
	return 0, false
}

// GetRounds returns a per-round metric (VisDial).
func (r *Report) GetRounds(key string) ([]float64, bool) {
	for _, m := range r.Metrics {
		if m.Key == key && m.Rounds != nil {
			return m.Rounds, true
		}
	}
	return nil, false
}

// MarshalJSON writes the flat object described on Report, keys in report
// order.
func (r *Report) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	field := func(k string, v any) error {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("metric %s: %w", k, err)
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
		return nil
	}
	for _, f := range []struct {
		k string
		v any
	}{{"dataset", r.Dataset}, {"split", r.Split}, {"queries", r.Queries}, {"missing", r.Missing}, {"labelled", r.Labelled}} {
		if err := field(f.k, f.v); err != nil {
			return nil, err
		}
	}
	for _, m := range r.Metrics {
		var v any = m.Value
		if m.Rounds != nil {
			v = m.Rounds
		}
		if err := field(m.Key, v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes (metric order is the
// object's key order).
func (r *Report) UnmarshalJSON(data []byte) error {
	keys, vals, _, err := dataset.SplitJSONObject("report", data)
	if err != nil {
		return err
	}
	*r = Report{}
	for i, k := range keys {
		var err error
		switch k {
		case "dataset":
			err = json.Unmarshal(vals[i], &r.Dataset)
		case "split":
			err = json.Unmarshal(vals[i], &r.Split)
		case "queries":
			err = json.Unmarshal(vals[i], &r.Queries)
		case "missing":
			err = json.Unmarshal(vals[i], &r.Missing)
		case "labelled":
			err = json.Unmarshal(vals[i], &r.Labelled)
		default:
			m := Metric{Key: k}
			if bytes.HasPrefix(bytes.TrimSpace(vals[i]), []byte("[")) {
				err = json.Unmarshal(vals[i], &m.Rounds)
			} else {
				err = json.Unmarshal(vals[i], &m.Value)
			}
			r.Metrics = append(r.Metrics, m)
		}
		if err != nil {
			return fmt.Errorf("report key %q: %w", k, err)
		}
	}
	return nil
}

// WriteTable writes the report as an aligned, readable table (values as
// percentages with two decimals, the way papers print them; the JSON form
// keeps fractions). Per-round metrics get one column per round.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d queries scored", r.Dataset, r.Split, r.Queries)
	if r.Missing > 0 {
		fmt.Fprintf(&b, ", %d without a ranking (counted as misses)", r.Missing)
	}
	b.WriteByte('\n')
	if !r.Labelled {
		b.WriteString("no labels in this split: nothing to score (the rankings were validated)\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	width, rounds := 5, 0
	for _, m := range r.Metrics {
		width = max(width, len(m.Key))
		rounds = max(rounds, len(m.Rounds))
	}
	for _, m := range r.Metrics {
		if m.Rounds == nil {
			fmt.Fprintf(&b, "  %-*s %7s\n", width, m.Key, pct(m.Value))
		}
	}
	if rounds > 0 {
		fmt.Fprintf(&b, "  %-*s", width, "round")
		for j := range rounds {
			fmt.Fprintf(&b, " %6d", j+11-rounds)
		}
		b.WriteByte('\n')
		for _, m := range r.Metrics {
			if m.Rounds == nil {
				continue
			}
			fmt.Fprintf(&b, "  %-*s", width, m.Key)
			// Shorter lists (the reference-code variant starts at round 1)
			// are aligned to their last round.
			for range rounds - len(m.Rounds) {
				fmt.Fprintf(&b, " %6s", "-")
			}
			for _, v := range m.Rounds {
				fmt.Fprintf(&b, " %6s", pct(v))
			}
			b.WriteByte('\n')
		}
	}
	for _, n := range r.legend() {
		b.WriteString(n + "\n")
	}
	b.WriteString("(values in %; the JSON form has fractions)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// legend says which protocol each family of keys follows, for the families
// present: official numbers beside the variants under their own keys.
func (r *Report) legend() []string {
	has := func(prefix string) bool {
		for _, m := range r.Metrics {
			if strings.HasPrefix(m.Key, prefix) {
				return true
			}
		}
		return false
	}
	var out []string
	if has("refcode_") {
		official := "recall@K"
		variant := "the reference image left in the ranking"
		if has("refcode_hits@") {
			official, variant = "hits@K", "cumulative over rounds 1..10 only"
		}
		out = append(out, fmt.Sprintf("%s: official protocol; refcode_*: the reference ImageScope code's variant (%s), not comparable with published official numbers", official, variant))
	}
	if has("soft_recall@") {
		out = append(out, "soft_recall@K: the CIRR authors' soft-target validation variant (not the official recall@K)")
	}
	return out
}

func pct(v float64) string { return strconv.FormatFloat(100*v, 'f', 2, 64) }
