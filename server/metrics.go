package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets are the histogram upper bounds in seconds.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// metrics holds one server's instruments in a registry of its own (never
// the process-wide default one), so two servers in a process keep apart.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec   // route, method, code
	latency     *prometheus.HistogramVec // route
	searches    *prometheus.CounterVec   // mode, outcome
	searchLat   *prometheus.HistogramVec // mode; successful searches
	stages      *prometheus.CounterVec   // stage, status
	inFlight    prometheus.Gauge
	thumbHits   prometheus.Counter
	thumbMisses prometheus.Counter
}

// scrapeSource supplies the values read when /metrics is scraped.
type scrapeSource struct {
	galleryImages func() int
	thumbBytes    func() int64
	roles         func() []RoleStats // may be nil
}

func newMetrics(src scrapeSource) *metrics {
	start := time.Now()
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagescope_http_requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagescope_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		searches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagescope_searches_total",
			Help: "Searches by mode (text, composed, chat) and outcome.",
		}, []string{"mode", "outcome"}),
		searchLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagescope_search_duration_seconds",
			Help:    "Duration of successful searches by mode.",
			Buckets: latencyBuckets,
		}, []string{"mode"}),
		stages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagescope_search_stages_total",
			Help: "Stages of finished searches by stage and status (done, skipped, failed).",
		}, []string{"stage", "status"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagescope_searches_in_flight",
			Help: "Searches running now.",
		}),
		thumbHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagescope_thumbnail_cache_hits_total",
			Help: "Thumbnails served from cache or by 304 Not Modified.",
		}),
		thumbMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagescope_thumbnail_cache_misses_total",
			Help: "Thumbnails computed.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.searches, m.searchLat, m.stages,
		m.inFlight, m.thumbHits, m.thumbMisses,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imagescope_thumbnail_cache_bytes",
			Help: "Bytes held by the thumbnail cache.",
		}, func() float64 { return float64(src.thumbBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imagescope_gallery_images",
			Help: "Images in the served gallery.",
		}, func() float64 { return float64(src.galleryImages()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imagescope_uptime_seconds",
			Help: "Seconds since the server started.",
		}, func() float64 { return time.Since(start).Seconds() }),
	)
	if src.roles != nil {
		m.reg.MustRegister(newRoleCollector(src.roles))
	}
	return m
}

func (m *metrics) request(route, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) search(mode, outcome string, d time.Duration, stages []StageTrace) {
	m.searches.WithLabelValues(mode, outcome).Inc()
	if outcome == "ok" {
		m.searchLat.WithLabelValues(mode).Observe(d.Seconds())
	}
	for _, st := range stages {
		m.stages.WithLabelValues(st.Name, st.Status).Inc()
	}
}

// roleCollector reports the model clients' per-role counters, which they
// keep themselves, as read at scrape time.
type roleCollector struct {
	stats    func() []RoleStats
	counters []roleCounter
}

type roleCounter struct {
	desc *prometheus.Desc
	get  func(RoleStats) int64
}

func newRoleCollector(stats func() []RoleStats) *roleCollector {
	c := func(name, help string, get func(RoleStats) int64) roleCounter {
		return roleCounter{prometheus.NewDesc(name, help, []string{"role"}, nil), get}
	}
	return &roleCollector{stats: stats, counters: []roleCounter{
		c("imagescope_model_calls_total", "Model calls by role (cache hits included).", func(r RoleStats) int64 { return r.Calls }),
		c("imagescope_model_cache_hits_total", "Model answers served from the answer cache, by role.", func(r RoleStats) int64 { return r.CacheHits }),
		c("imagescope_model_cache_misses_total", "Model answers not in the answer cache, by role.", func(r RoleStats) int64 { return r.CacheMisses }),
		c("imagescope_model_failures_total", "Model calls that failed after retries, by role.", func(r RoleStats) int64 { return r.Failures }),
		c("imagescope_model_retries_total", "Model call retries, by role.", func(r RoleStats) int64 { return r.Retries }),
	}}
}

func (c *roleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, rc := range c.counters {
		ch <- rc.desc
	}
}

func (c *roleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.stats() {
		for _, rc := range c.counters {
			ch <- prometheus.MustNewConstMetric(rc.desc, prometheus.CounterValue, float64(rc.get(r)), r.Role)
		}
	}
}

// handler serves the registry in the exposition format the scraper asks
// for (text 0.0.4 by default); the route's token check wraps it. A metric
// that cannot be gathered (say, two model roles of one name) is logged and
// left out; the rest is still served.
func (m *metrics) handler(log *slog.Logger) http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
