package server

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics and parses it as the text exposition format; a
// scrape that does not parse fails the test.
func scrape(t *testing.T, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	r := e.do("GET", "/metrics", nil, nil)
	if r.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", r.StatusCode, readBody(t, r))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics content type %q", ct)
	}
	body := readBody(t, r)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, body)
	}
	return fams
}

// sample returns the value of the sample of family name whose labels are
// exactly labels (for a histogram, its count), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if !maps.Equal(got, labels) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func wantSample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := sample(fams, name, labels)
	if !ok {
		t.Errorf("metrics lack %s%v", name, labels)
	} else if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestMetricsExposition(t *testing.T) {
	odd := "odd \"role\"\nwith \\ and newline"
	e := newEnv(t, func(c *Config) {
		c.ModelStats = func() []RoleStats {
			return []RoleStats{{Role: "verifier", Calls: 7, CacheHits: 3, CacheMisses: 4, Failures: 1, Retries: 2}, {Role: odd, Calls: 5}}
		}
	})
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "dog"}, nil))
	wantError(t, e.postJSON("/api/search", map[string]any{"text": ""}, nil), 400, "")
	readBody(t, e.do("GET", "/api/thumbs/red_dog", nil, nil))
	readBody(t, e.do("GET", "/api/nothing", nil, nil))

	fams := scrape(t, e)
	// Every metric is there with its type and help.
	types := map[string]dto.MetricType{
		"imagescope_http_requests_total":           dto.MetricType_COUNTER,
		"imagescope_http_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"imagescope_searches_total":                dto.MetricType_COUNTER,
		"imagescope_search_duration_seconds":       dto.MetricType_HISTOGRAM,
		"imagescope_search_stages_total":           dto.MetricType_COUNTER,
		"imagescope_searches_in_flight":            dto.MetricType_GAUGE,
		"imagescope_thumbnail_cache_hits_total":    dto.MetricType_COUNTER,
		"imagescope_thumbnail_cache_misses_total":  dto.MetricType_COUNTER,
		"imagescope_thumbnail_cache_bytes":         dto.MetricType_GAUGE,
		"imagescope_gallery_images":                dto.MetricType_GAUGE,
		"imagescope_uptime_seconds":                dto.MetricType_GAUGE,
		"imagescope_model_calls_total":             dto.MetricType_COUNTER,
		"imagescope_model_cache_hits_total":        dto.MetricType_COUNTER,
		"imagescope_model_cache_misses_total":      dto.MetricType_COUNTER,
		"imagescope_model_failures_total":          dto.MetricType_COUNTER,
		"imagescope_model_retries_total":           dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		f := fams[name]
		if f == nil {
			t.Errorf("metrics lack %s", name)
			continue
		}
		if f.GetType() != typ || f.GetHelp() == "" {
			t.Errorf("%s: type %v help %q, want type %v", name, f.GetType(), f.GetHelp(), typ)
		}
	}
	// Nothing else leaks in (no Go runtime or process collectors).
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		if _, ok := types[name]; !ok {
			t.Errorf("unexpected metric %s", name)
		}
	}

	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "200"}, 1)
	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "400"}, 1)
	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "GET /api/thumbs/{name...}", "method": "GET", "code": "200"}, 1)
	wantSample(t, fams, "imagescope_http_request_duration_seconds", map[string]string{"route": "POST /api/search"}, 2)
	wantSample(t, fams, "imagescope_searches_total", map[string]string{"mode": "text", "outcome": "ok"}, 1)
	wantSample(t, fams, "imagescope_search_duration_seconds", map[string]string{"mode": "text"}, 1)
	wantSample(t, fams, "imagescope_search_stages_total", map[string]string{"stage": "evaluate", "status": "skipped"}, 1)
	wantSample(t, fams, "imagescope_searches_in_flight", map[string]string{}, 0)
	wantSample(t, fams, "imagescope_thumbnail_cache_misses_total", map[string]string{}, 1)
	wantSample(t, fams, "imagescope_gallery_images", map[string]string{}, 8)
	wantSample(t, fams, "imagescope_model_calls_total", map[string]string{"role": "verifier"}, 7)
	wantSample(t, fams, "imagescope_model_cache_hits_total", map[string]string{"role": "verifier"}, 3)
	wantSample(t, fams, "imagescope_model_cache_misses_total", map[string]string{"role": "verifier"}, 4)
	wantSample(t, fams, "imagescope_model_failures_total", map[string]string{"role": "verifier"}, 1)
	wantSample(t, fams, "imagescope_model_retries_total", map[string]string{"role": "verifier"}, 2)
	// A label value with a quote, a backslash and a newline survives the
	// round trip through the text format.
	wantSample(t, fams, "imagescope_model_calls_total", map[string]string{"role": odd}, 5)
	if b, _ := sample(fams, "imagescope_thumbnail_cache_bytes", map[string]string{}); b <= 0 {
		t.Errorf("thumbnail cache bytes %v after a thumbnail was made", b)
	}
	if up, _ := sample(fams, "imagescope_uptime_seconds", map[string]string{}); up <= 0 {
		t.Errorf("uptime %v", up)
	}

	// Histogram buckets are the documented ones and +Inf, cumulative.
	h := fams["imagescope_http_request_duration_seconds"].GetMetric()[0].GetHistogram()
	bounds := append(slices.Clone(latencyBuckets), math.Inf(1))
	if len(h.GetBucket()) != len(bounds) {
		t.Fatalf("%d buckets, want %d", len(h.GetBucket()), len(bounds))
	}
	var prev uint64
	for i, b := range h.GetBucket() {
		if b.GetUpperBound() != bounds[i] || b.GetCumulativeCount() < prev {
			t.Errorf("bucket %d: %v", i, b)
		}
		prev = b.GetCumulativeCount()
	}
	if prev != h.GetSampleCount() {
		t.Errorf("+Inf bucket %d, count %d", prev, h.GetSampleCount())
	}

	// A scrape is counted once it has been answered (so by the next one),
	// and a second server keeps its own registry.
	fams = scrape(t, e)
	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "GET /metrics", "method": "GET", "code": "200"}, 1)
	other := scrape(t, newEnv(t, nil))
	if _, ok := sample(other, "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "200"}); ok {
		t.Error("a second server sees the first one's requests")
	}
}

func TestMetricsNeedToken(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Token = "s3cret" })
	wantError(t, e.do("GET", "/metrics", nil, nil), 401, "")
	r := e.do("GET", "/metrics", nil, map[string]string{"Authorization": "Bearer s3cret"})
	if r.StatusCode != 200 || !strings.Contains(string(readBody(t, r)), "imagescope_gallery_images 8") {
		t.Fatalf("GET /metrics with token: %d", r.StatusCode)
	}
}

func TestMetricsDuplicateRole(t *testing.T) {
	// Two roles of one name cannot both be exported; the scrape still
	// answers with everything else and the problem is logged.
	e := newEnv(t, func(c *Config) {
		c.ModelStats = func() []RoleStats { return []RoleStats{{Role: "verifier", Calls: 1}, {Role: "verifier", Calls: 2}} }
	})
	fams := scrape(t, e)
	wantSample(t, fams, "imagescope_gallery_images", map[string]string{}, 8)
	if !strings.Contains(e.logs.String(), "verifier") {
		t.Errorf("duplicate role not logged:\n%s", e.logs.String())
	}
}
