package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagescope/imagescope/thumbs"
)

//go:embed web
var webFS embed.FS

//go:embed openapi.json
var openAPI []byte

// Defaults for Config's zero values.
const (
	DefaultMaxUploadBytes = 20 << 20
	DefaultMaxPixels      = 50_000_000
	DefaultSearchTimeout  = 5 * time.Minute
	DefaultMaxLimit       = 200
	DefaultLimit          = 50
	DefaultThumbCache     = 64 << 20
	DefaultMaxSearches    = 8
	DefaultMaxTextBytes   = 4 << 10
	DefaultMaxTurns       = 32
)

// Config configures a Server. Searcher and Images are required.
type Config struct {
	// Searcher runs the searches.
	Searcher Searcher
	// Images maps gallery names to image file paths. Only these names are
	// served, and only when the resolved file lies under ImageRoot.
	Images map[string]string
	// ImageRoot is the folder every served image must resolve into
	// (symlinks followed). Empty: the deepest folder holding all Images.
	ImageRoot string
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every /api/ call and /metrics.
	Token string
	// CORSOrigins lists origins allowed to call the API from a browser
	// ("*" allows any). Empty: no CORS headers at all.
	CORSOrigins []string
	// MaxUploadBytes caps a search request body (upload included).
	MaxUploadBytes int64
	// MaxPixels caps width*height of an uploaded or served image; checked
	// from the header before any pixel is decoded.
	MaxPixels int64
	// SearchTimeout bounds one search.
	SearchTimeout time.Duration
	// MaxSearches bounds concurrently running searches; more wait in line
	// until their own deadline.
	MaxSearches int
	// MaxLimit caps Query.Limit; DefaultLimit applies when a request has none.
	MaxLimit int
	// ThumbCacheBytes bounds the in-memory thumbnail cache.
	ThumbCacheBytes int64
	// Thumbs, when set, holds thumbnails made ahead of time (served without
	// decoding the image); thumbnails made on request are added to it.
	Thumbs *thumbs.Store
	// Stages describes which stages are configured (shown by the UI).
	Stages []StageInfo
	// Ask says whether chats can be asked back (EngineAskInfo).
	Ask StageInfo
	// ModelStats reports model call counters per role for /metrics (may be nil).
	ModelStats func() []RoleStats
	// RoleEndpoints reports the circuit breaker of every endpoint of every
	// configured model role, for /readyz and /api/info (may be nil).
	RoleEndpoints func() map[string][]EndpointState
	// Description names what is being served (gallery, CLIP model), for the UI.
	Description string
	// Logger receives one line per request (never headers or tokens).
	Logger *slog.Logger
}

// Server serves the API and the web UI.
type Server struct {
	cfg     Config
	names   []string // sorted gallery names
	root    string   // resolved ImageRoot
	metrics *metrics
	thumbs  *thumbCache
	sem     chan struct{}
	mux     *http.ServeMux
	log     *slog.Logger
	decode  decodeFunc
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Searcher == nil {
		return nil, errors.New("server: no Searcher")
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = DefaultMaxPixels
	}
	if cfg.SearchTimeout <= 0 {
		cfg.SearchTimeout = DefaultSearchTimeout
	}
	if cfg.MaxSearches <= 0 {
		cfg.MaxSearches = DefaultMaxSearches
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = DefaultMaxLimit
	}
	if cfg.ThumbCacheBytes <= 0 {
		cfg.ThumbCacheBytes = DefaultThumbCache
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:    cfg,
		thumbs: newThumbCache(cfg.ThumbCacheBytes),
		sem:    make(chan struct{}, cfg.MaxSearches),
		log:    cfg.Logger,
		decode: decodeLimited,
	}
	s.names = make([]string, 0, len(cfg.Images))
	for n := range cfg.Images {
		s.names = append(s.names, n)
	}
	slices.Sort(s.names)
	s.metrics = newMetrics(scrapeSource{
		galleryImages: func() int { return len(s.names) },
		thumbBytes:    s.thumbs.bytes,
		roles:         cfg.ModelStats,
	})
	root, err := resolveRoot(cfg.ImageRoot, cfg.Images)
	if err != nil {
		return nil, err
	}
	s.root = root
	s.routes()
	return s, nil
}

// resolveRoot returns the symlink-free absolute image root: the given one,
// or the deepest common folder of all image paths.
func resolveRoot(root string, images map[string]string) (string, error) {
	if root == "" {
		for _, p := range images {
			abs, err := filepath.Abs(p)
			if err != nil {
				return "", fmt.Errorf("server: image path %q: %w", p, err)
			}
			dir := filepath.Dir(abs)
			if root == "" {
				root = dir
				continue
			}
			for !within(root, dir) {
				parent := filepath.Dir(root)
				if parent == root {
					break
				}
				root = parent
			}
		}
		if root == "" {
			return "", nil
		}
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("server: image root %q: %w", root, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("server: image root %q: %w", root, err)
	}
	return resolved, nil
}

// within reports whether path equals root or lies below it (both clean and absolute).
func within(root, path string) bool {
	if path == root {
		return true
	}
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func (s *Server) routes() {
	m := http.NewServeMux()
	api := func(pattern string, h http.HandlerFunc) {
		m.Handle(pattern, s.requireToken(h))
	}
	api("POST /api/search", s.handleSearch)
	api("POST /api/search/stream", s.handleSearchStream)
	api("GET /api/images/{name...}", s.handleImage)
	api("GET /api/thumbs/{name...}", s.handleThumb)
	api("GET /api/gallery", s.handleGallery)
	api("GET /api/info", s.handleInfo)
	m.Handle("GET /metrics", s.requireToken(s.metrics.handler(s.log)))
	api("GET /api/openapi.json", s.handleOpenAPI)
	m.HandleFunc("GET /healthz", s.handleHealth)
	m.HandleFunc("GET /readyz", s.handleReady)
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.FileServerFS(static)
	apiFallback := s.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/search", "/api/search/stream":
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "%s %s: use POST", r.Method, r.URL.Path)
			return
		}
		writeError(w, http.StatusNotFound, "no such API endpoint: %s %s", r.Method, r.URL.Path)
	}))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/metrics" {
			apiFallback.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "%s %s: use GET", r.Method, r.URL.Path)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	s.mux = m
}

// Handler returns the server's root handler: routing wrapped in logging,
// metrics, security headers and CORS.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		// Bound every response's write time (a slow or stalled reader
		// cannot hold a connection forever); the event stream sets its own.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.writeTimeout()))
		if s.cors(rec, r) {
			s.observe(r, rec, start, "CORS preflight")
			return
		}
		s.mux.ServeHTTP(rec, r)
		s.observe(r, rec, start, r.Pattern)
	})
}

func (s *Server) observe(r *http.Request, rec *statusRecorder, start time.Time, pattern string) {
	d := time.Since(start)
	if !rec.written && r.Context().Err() != nil {
		rec.status = 499 // the client went away before an answer
	}
	route := pattern
	if route == "" {
		route = "unmatched"
	}
	s.metrics.request(route, r.Method, rec.status, d)
	// Only method, escaped path, status and timing: never headers (tokens)
	// or query strings.
	s.log.Info("http", "method", r.Method, "path", r.URL.EscapedPath(), "status", rec.status,
		"bytes", rec.bytes, "ms", float64(d.Microseconds())/1000)
}

// cors sets CORS headers for allowed origins and answers preflights; it
// reports whether the request was fully handled.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.cfg.CORSOrigins) == 0 {
		return false
	}
	allowed := slices.Contains(s.cfg.CORSOrigins, "*") || slices.Contains(s.cfg.CORSOrigins, origin)
	if !allowed {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// requireToken rejects requests without the configured bearer token.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="imagescope"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status and size of a response; it keeps
// Flush and the deadline controls reachable through Unwrap.
type statusRecorder struct {
	http.ResponseWriter
	status  int
	bytes   int64
	written bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.written {
		r.status = code
		r.written = true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.written = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeTimeout bounds writing one response: long enough for a search
// answered at its time limit.
func (s *Server) writeTimeout() time.Duration {
	return max(2*time.Minute, s.cfg.SearchTimeout+30*time.Second)
}

// HTTPServer wraps the handler in an http.Server with timeouts suited to
// the API: bounded header/body reads and idle connections; writes are
// bounded per handler (searches stream for up to SearchTimeout).
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Serve serves on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := s.HTTPServer(ln.Addr().String())
	hs.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shut); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// IsLoopback reports whether addr (host:port) binds only loopback interfaces.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
