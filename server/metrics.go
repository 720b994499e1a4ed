package server

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBuckets are the histogram upper bounds in seconds.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// histogram is a Prometheus-style cumulative histogram.
type histogram struct {
	counts []uint64 // per bucket, not cumulative; last = +Inf
	sum    float64
	count  uint64
}

func newHistogram() *histogram { return &histogram{counts: make([]uint64, len(latencyBuckets)+1)} }

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(latencyBuckets, v)
	h.counts[i]++
	h.sum += v
	h.count++
}

type reqKey struct {
	route, method string
	code          int
}

type searchKey struct{ mode, outcome string }

type stageKey struct{ stage, status string }

// metrics holds the server's counters; written by hand in the Prometheus
// text exposition format (version 0.0.4).
type metrics struct {
	mu          sync.Mutex
	requests    map[reqKey]uint64
	latency     map[string]*histogram // by route
	searches    map[searchKey]uint64
	searchLat   map[string]*histogram // by mode, successful searches
	stages      map[stageKey]uint64
	inFlight    atomic.Int64
	thumbHits   atomic.Uint64
	thumbMisses atomic.Uint64
	start       time.Time
}

func newMetrics() *metrics {
	return &metrics{
		requests:  map[reqKey]uint64{},
		latency:   map[string]*histogram{},
		searches:  map[searchKey]uint64{},
		searchLat: map[string]*histogram{},
		stages:    map[stageKey]uint64{},
		start:     time.Now(),
	}
}

func (m *metrics) request(route, method string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[reqKey{route, method, code}]++
	h := m.latency[route]
	if h == nil {
		h = newHistogram()
		m.latency[route] = h
	}
	h.observe(d.Seconds())
}

func (m *metrics) search(mode, outcome string, d time.Duration, stages []StageTrace) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.searches[searchKey{mode, outcome}]++
	if outcome == "ok" {
		h := m.searchLat[mode]
		if h == nil {
			h = newHistogram()
			m.searchLat[mode] = h
		}
		h.observe(d.Seconds())
	}
	for _, st := range stages {
		m.stages[stageKey{st.Name, st.Status}]++
	}
}

// escapeLabel escapes a label value per the text format.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(v)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func writeHistogram(w io.Writer, name, labels string, h *histogram) {
	var cum uint64
	for i, ub := range latencyBuckets {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%sle=\"%s\"} %d\n", name, labels, formatFloat(ub), cum)
	}
	cum += h.counts[len(latencyBuckets)]
	fmt.Fprintf(w, "%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, cum)
	trimmed := strings.TrimSuffix(labels, ",")
	if trimmed != "" {
		trimmed = "{" + trimmed + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n", name, trimmed, formatFloat(h.sum))
	fmt.Fprintf(w, "%s_count%s %d\n", name, trimmed, h.count)
}

func sortedKeys[K comparable, V any](m map[K]V, less func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, less)
	return keys
}

// write renders all metrics. roles may be nil.
func (m *metrics) write(w io.Writer, galleryImages int, thumbBytes int64, roles []RoleStats) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	m.mu.Lock()
	defer m.mu.Unlock()

	fmt.Fprintln(bw, "# HELP imagescope_http_requests_total HTTP requests by route pattern, method and status code.")
	fmt.Fprintln(bw, "# TYPE imagescope_http_requests_total counter")
	for _, k := range sortedKeys(m.requests, func(a, b reqKey) int {
		return strings.Compare(fmt.Sprint(a.route, a.method, a.code), fmt.Sprint(b.route, b.method, b.code))
	}) {
		fmt.Fprintf(bw, "imagescope_http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} %d\n",
			escapeLabel(k.route), escapeLabel(k.method), k.code, m.requests[k])
	}

	fmt.Fprintln(bw, "# HELP imagescope_http_request_duration_seconds HTTP request latency by route pattern.")
	fmt.Fprintln(bw, "# TYPE imagescope_http_request_duration_seconds histogram")
	for _, route := range sortedKeys(m.latency, strings.Compare) {
		writeHistogram(bw, "imagescope_http_request_duration_seconds", fmt.Sprintf("route=\"%s\",", escapeLabel(route)), m.latency[route])
	}

	fmt.Fprintln(bw, "# HELP imagescope_searches_total Searches by mode (text, composed, chat) and outcome.")
	fmt.Fprintln(bw, "# TYPE imagescope_searches_total counter")
	for _, k := range sortedKeys(m.searches, func(a, b searchKey) int {
		return strings.Compare(a.mode+"\x00"+a.outcome, b.mode+"\x00"+b.outcome)
	}) {
		fmt.Fprintf(bw, "imagescope_searches_total{mode=\"%s\",outcome=\"%s\"} %d\n", k.mode, k.outcome, m.searches[k])
	}

	fmt.Fprintln(bw, "# HELP imagescope_search_duration_seconds Duration of successful searches by mode.")
	fmt.Fprintln(bw, "# TYPE imagescope_search_duration_seconds histogram")
	for _, mode := range sortedKeys(m.searchLat, strings.Compare) {
		writeHistogram(bw, "imagescope_search_duration_seconds", fmt.Sprintf("mode=\"%s\",", mode), m.searchLat[mode])
	}

	fmt.Fprintln(bw, "# HELP imagescope_search_stages_total Stages of finished searches by stage and status (done, skipped, failed).")
	fmt.Fprintln(bw, "# TYPE imagescope_search_stages_total counter")
	for _, k := range sortedKeys(m.stages, func(a, b stageKey) int {
		return strings.Compare(a.stage+"\x00"+a.status, b.stage+"\x00"+b.status)
	}) {
		fmt.Fprintf(bw, "imagescope_search_stages_total{stage=\"%s\",status=\"%s\"} %d\n", escapeLabel(k.stage), escapeLabel(k.status), m.stages[k])
	}

	fmt.Fprintln(bw, "# HELP imagescope_searches_in_flight Searches running now.")
	fmt.Fprintln(bw, "# TYPE imagescope_searches_in_flight gauge")
	fmt.Fprintf(bw, "imagescope_searches_in_flight %d\n", m.inFlight.Load())

	fmt.Fprintln(bw, "# HELP imagescope_thumbnail_cache_hits_total Thumbnails served from cache or by 304 Not Modified.")
	fmt.Fprintln(bw, "# TYPE imagescope_thumbnail_cache_hits_total counter")
	fmt.Fprintf(bw, "imagescope_thumbnail_cache_hits_total %d\n", m.thumbHits.Load())
	fmt.Fprintln(bw, "# HELP imagescope_thumbnail_cache_misses_total Thumbnails computed.")
	fmt.Fprintln(bw, "# TYPE imagescope_thumbnail_cache_misses_total counter")
	fmt.Fprintf(bw, "imagescope_thumbnail_cache_misses_total %d\n", m.thumbMisses.Load())
	fmt.Fprintln(bw, "# HELP imagescope_thumbnail_cache_bytes Bytes held by the thumbnail cache.")
	fmt.Fprintln(bw, "# TYPE imagescope_thumbnail_cache_bytes gauge")
	fmt.Fprintf(bw, "imagescope_thumbnail_cache_bytes %d\n", thumbBytes)

	fmt.Fprintln(bw, "# HELP imagescope_gallery_images Images in the served gallery.")
	fmt.Fprintln(bw, "# TYPE imagescope_gallery_images gauge")
	fmt.Fprintf(bw, "imagescope_gallery_images %d\n", galleryImages)

	fmt.Fprintln(bw, "# HELP imagescope_uptime_seconds Seconds since the server started.")
	fmt.Fprintln(bw, "# TYPE imagescope_uptime_seconds gauge")
	fmt.Fprintf(bw, "imagescope_uptime_seconds %s\n", formatFloat(time.Since(m.start).Seconds()))

	roles = slices.Clone(roles)
	slices.SortFunc(roles, func(a, b RoleStats) int { return strings.Compare(a.Role, b.Role) })
	counters := []struct {
		name, help string
		get        func(RoleStats) int64
	}{
		{"imagescope_model_calls_total", "Model calls by role (cache hits included).", func(r RoleStats) int64 { return r.Calls }},
		{"imagescope_model_cache_hits_total", "Model answers served from the answer cache, by role.", func(r RoleStats) int64 { return r.CacheHits }},
		{"imagescope_model_cache_misses_total", "Model answers not in the answer cache, by role.", func(r RoleStats) int64 { return r.CacheMisses }},
		{"imagescope_model_failures_total", "Model calls that failed after retries, by role.", func(r RoleStats) int64 { return r.Failures }},
		{"imagescope_model_retries_total", "Model call retries, by role.", func(r RoleStats) int64 { return r.Retries }},
	}
	for _, c := range counters {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
		for _, r := range roles {
			fmt.Fprintf(bw, "%s{role=\"%s\"} %d\n", c.name, escapeLabel(r.Role), c.get(r))
		}
	}
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var roles []RoleStats
	if s.cfg.ModelStats != nil {
		roles = s.cfg.ModelStats()
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	s.metrics.write(w, len(s.names), s.thumbs.bytes(), roles)
}
