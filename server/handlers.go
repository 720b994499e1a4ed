package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imagescope/imagescope/internal/breaker"
)

// handleHealth answers liveness probes (the process answers HTTP); it
// reveals nothing but "ok". Readiness is /readyz.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyResponse is GET /readyz.
type readyResponse struct {
	// Status is "ready" (every model role takes requests) or "degraded"
	// (searches answer without the open roles).
	Status string      `json:"status"`
	Roles  []readyRole `json:"roles"`
}

type readyRole struct {
	Role      string    `json:"role"`
	State     string    `json:"state"`
	NextProbe time.Time `json:"next_probe,omitzero"`
}

// handleReady is the readiness check: 200 when every configured model role
// has an endpoint that takes requests, 503 "degraded" while a role's
// breakers are all open. It carries no error texts or endpoint URLs (it
// needs no token); GET /api/info has the details.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	resp := readyResponse{Status: "ready", Roles: []readyRole{}}
	for _, rs := range s.roleStates() {
		resp.Roles = append(resp.Roles, readyRole{Role: rs.Role, State: rs.State, NextProbe: rs.NextProbe})
		if rs.State == breaker.Open.String() {
			resp.Status = "degraded"
		}
	}
	code := http.StatusOK
	if resp.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, resp)
}

func (s *Server) roleStates() []RoleState {
	if s.cfg.RoleEndpoints == nil {
		return []RoleState{}
	}
	return roleStates(s.cfg.RoleEndpoints())
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openAPI)
}

// infoResponse is GET /api/info.
type infoResponse struct {
	Description string      `json:"description"`
	Images      int         `json:"images"`
	Stages      []StageInfo `json:"stages"`
	// Ask says whether the server can ask back in a chat.
	Ask    StageInfo `json:"ask"`
	Limits struct {
		MaxUploadBytes int64 `json:"max_upload_bytes"`
		MaxPixels      int64 `json:"max_pixels"`
		MaxLimit       int   `json:"max_limit"`
		DefaultLimit   int   `json:"default_limit"`
		MaxTextBytes   int   `json:"max_text_bytes"`
		MaxTurns       int   `json:"max_turns"`
	} `json:"limits"`
	ThumbSizes []int `json:"thumb_sizes"`
	// Roles are the model roles' states (circuit breakers per endpoint).
	Roles []RoleState `json:"roles"`
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	var resp infoResponse
	resp.Description = s.cfg.Description
	resp.Images = len(s.names)
	resp.Stages = s.cfg.Stages
	resp.Ask = s.cfg.Ask
	if resp.Ask.Name == "" {
		resp.Ask = StageInfo{Name: StageAsk, Reason: "not available on this server"}
	}
	if resp.Stages == nil {
		resp.Stages = []StageInfo{}
	}
	resp.Limits.MaxUploadBytes = s.cfg.MaxUploadBytes
	resp.Limits.MaxPixels = s.cfg.MaxPixels
	resp.Limits.MaxLimit = s.cfg.MaxLimit
	resp.Limits.DefaultLimit = min(DefaultLimit, s.cfg.MaxLimit)
	resp.Limits.MaxTextBytes = DefaultMaxTextBytes
	resp.Limits.MaxTurns = DefaultMaxTurns
	resp.ThumbSizes = thumbSizes
	resp.Roles = s.roleStates()
	writeJSON(w, http.StatusOK, resp)
}

// galleryEntry is one image in GET /api/gallery.
type galleryEntry struct {
	Name     string `json:"name"`
	ImageURL string `json:"image_url"`
	ThumbURL string `json:"thumb_url"`
}

// handleGallery lists gallery names (for picking a reference):
// ?q=substring (case-insensitive) &offset=N &limit=N (<= 500).
func (s *Server) handleGallery(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	offset, err := queryInt(qv.Get("offset"), 0)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, "offset %q: want a number >= 0", qv.Get("offset"))
		return
	}
	limit, err := queryInt(qv.Get("limit"), 60)
	if err != nil || limit < 1 || limit > 500 {
		writeError(w, http.StatusBadRequest, "limit %q: want 1..500", qv.Get("limit"))
		return
	}
	needle := strings.ToLower(strings.TrimSpace(qv.Get("q")))
	total := 0
	out := []galleryEntry{}
	for _, n := range s.names {
		if needle != "" && !strings.Contains(strings.ToLower(n), needle) {
			continue
		}
		if total >= offset && len(out) < limit {
			out = append(out, galleryEntry{Name: n, ImageURL: "/api/images/" + escapeName(n), ThumbURL: "/api/thumbs/" + escapeName(n)})
		}
		total++
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "offset": offset, "images": out})
}

func queryInt(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	return strconv.Atoi(v)
}
