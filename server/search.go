package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// searchRequest is the JSON body of POST /api/search (or the "request" part
// of a multipart body).
type searchRequest struct {
	Text      string       `json:"text"`
	Reference string       `json:"reference,omitempty"`
	Dialogue  []string     `json:"dialogue,omitempty"`
	Chat      bool         `json:"chat,omitempty"`
	Stages    StageOptions `json:"stages"`
	Limit     int          `json:"limit,omitempty"`
	// Conversation is the id a chat's previous result returned.
	Conversation string `json:"conversation,omitempty"`
	// Ask requests the question to ask the user next (text and chat).
	Ask bool `json:"ask,omitempty"`
}

// httpError is an error with the status code to answer it with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, a ...any) *httpError {
	return &httpError{code: code, msg: fmt.Sprintf(format, a...)}
}

func writeError(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, a...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// allowedImageTypes are the sniffed content types accepted for uploads.
var allowedImageTypes = []string{"image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp"}

// parseQuery reads and checks a search request body (JSON or multipart).
func (s *Server) parseQuery(w http.ResponseWriter, r *http.Request) (Query, error) {
	req, upload, err := s.readRequest(w, r)
	if err != nil {
		return Query{}, err
	}
	return s.query(req, upload)
}

// readRequest reads a search request body within the upload limit: the
// request and the uploaded image's bytes (nil for none).
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request) (searchRequest, []byte, error) {
	if r.ContentLength > s.cfg.MaxUploadBytes {
		// Refuse a declared oversize body at once instead of reading it.
		w.Header().Set("Connection", "close")
		return searchRequest{}, nil, errorf(http.StatusRequestEntityTooLarge, "request body of %d bytes is larger than the %d-byte limit (--max-upload-mb)", r.ContentLength, s.cfg.MaxUploadBytes)
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil && ct != "" {
		return searchRequest{}, nil, errorf(http.StatusUnsupportedMediaType, "bad Content-Type %q", ct)
	}
	switch mt {
	case "application/json", "":
		var req searchRequest
		if err := decodeJSON(r.Body, &req); err != nil {
			return searchRequest{}, nil, err
		}
		return req, nil, nil
	case "multipart/form-data":
		return s.readMultipart(multipart.NewReader(r.Body, params["boundary"]))
	default:
		return searchRequest{}, nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: send application/json or multipart/form-data", mt)
	}
}

// query makes the checked Query of a request, decoding its upload.
func (s *Server) query(req searchRequest, upload []byte) (Query, error) {
	q := Query{
		Text:      strings.TrimSpace(req.Text),
		Reference: req.Reference,
		Dialogue:  req.Dialogue,
		Chat:      req.Chat,
		Stages:    req.Stages,
		Limit:     req.Limit,

		Conversation: req.Conversation,
		Ask:          req.Ask,
	}
	if upload != nil {
		if q.Reference != "" {
			return Query{}, errorf(http.StatusBadRequest, "give either a reference name or an uploaded image, not both")
		}
		img, err := s.decode(bytes.NewReader(upload), s.cfg.MaxPixels)
		if err != nil {
			if errors.Is(err, errTooManyPixels) {
				return Query{}, errorf(http.StatusRequestEntityTooLarge, "uploaded image: %v", err)
			}
			return Query{}, errorf(http.StatusBadRequest, "uploaded image: %v", err)
		}
		q.ReferenceImage = img
	}
	if err := s.checkQuery(&q); err != nil {
		return Query{}, err
	}
	return q, nil
}

func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
		}
		return errorf(http.StatusBadRequest, "request JSON: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request JSON: extra data after the object")
	}
	return nil
}

// readMultipart reads a multipart search request: a "request" part holding
// the JSON (or plain "text", "reference", "dialogue", "limit" fields) and an
// optional "image" file part.
func (s *Server) readMultipart(mr *multipart.Reader) (searchRequest, []byte, error) {
	var req searchRequest
	var upload []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return req, nil, bodyError("multipart body", err)
		}
		name := p.FormName()
		switch name {
		case "image":
			if upload != nil {
				return req, nil, errorf(http.StatusBadRequest, "more than one image part")
			}
			data, err := io.ReadAll(p)
			if err != nil {
				return req, nil, bodyError("image part", err)
			}
			if len(data) == 0 {
				if p.FileName() == "" {
					continue // a form's file input left blank
				}
				return req, nil, errorf(http.StatusBadRequest, "image part %q is empty: upload the image file's content, or leave the image part out for a text query", p.FileName())
			}
			sniffed := http.DetectContentType(data)
			if !contains(allowedImageTypes, sniffed) {
				return req, nil, errorf(http.StatusUnsupportedMediaType, "image part %q is %s, not JPEG, PNG, GIF, BMP or WebP", p.FileName(), sniffed)
			}
			upload = data
		case "request":
			data, err := io.ReadAll(p)
			if err != nil {
				return req, nil, bodyError("request part", err)
			}
			if err := decodeJSON(bytes.NewReader(data), &req); err != nil {
				return req, nil, err
			}
		case "text", "reference", "dialogue", "limit", "chat", "conversation", "ask":
			data, err := io.ReadAll(io.LimitReader(p, DefaultMaxTextBytes+1))
			if err != nil {
				return req, nil, bodyError(name+" part", err)
			}
			v := string(data)
			switch name {
			case "text":
				req.Text = v
			case "reference":
				req.Reference = v
			case "conversation":
				req.Conversation = v
			case "dialogue":
				req.Dialogue = append(req.Dialogue, v)
			case "chat", "ask":
				b, err := strconv.ParseBool(strings.TrimSpace(v))
				if err != nil {
					return req, nil, errorf(http.StatusBadRequest, "%s part: %q is not true or false", name, v)
				}
				if name == "chat" {
					req.Chat = b
				} else {
					req.Ask = b
				}
			case "limit":
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					return req, nil, errorf(http.StatusBadRequest, "limit part: %q is not a number", v)
				}
				req.Limit = n
			}
		default:
			return req, nil, errorf(http.StatusBadRequest, "unknown multipart field %q (want request, image, text, reference, dialogue, chat, conversation, ask, limit)", name)
		}
	}
	return req, upload, nil
}

func bodyError(what string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
	}
	return errorf(http.StatusBadRequest, "%s: %v", what, err)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkQuery validates q and applies limits and defaults.
func (s *Server) checkQuery(q *Query) error {
	hasImage := q.Reference != "" || q.ReferenceImage != nil
	if q.Text == "" && (!hasImage || q.Mode() == "chat") {
		return errorf(http.StatusBadRequest, "text is empty: say what you are looking for, or send only a reference image for images like it")
	}
	if q.Ask && (q.Mode() == "composed" || q.Mode() == "similar") {
		return errorf(http.StatusBadRequest, "ask works for text and chat searches, not with a reference image")
	}
	if len(q.Conversation) > 64 {
		return errorf(http.StatusBadRequest, "conversation id is %d bytes; at most 64", len(q.Conversation))
	}
	if err := checkText("text", q.Text); err != nil {
		return err
	}
	if len(q.Dialogue) > DefaultMaxTurns {
		return errorf(http.StatusBadRequest, "dialogue has %d turns; at most %d", len(q.Dialogue), DefaultMaxTurns)
	}
	for i, t := range q.Dialogue {
		if strings.TrimSpace(t) == "" {
			return errorf(http.StatusBadRequest, "dialogue[%d] is empty", i)
		}
		if err := checkText(fmt.Sprintf("dialogue[%d]", i), t); err != nil {
			return err
		}
	}
	if q.Reference != "" {
		if q.Mode() == "chat" {
			return errorf(http.StatusBadRequest, "a chat (dialogue) takes no reference image")
		}
		if _, ok := s.cfg.Images[q.Reference]; !ok {
			return errorf(http.StatusBadRequest, "reference %q is not in the gallery", q.Reference)
		}
	}
	if q.ReferenceImage != nil && q.Mode() == "chat" {
		return errorf(http.StatusBadRequest, "a chat (dialogue) takes no reference image")
	}
	switch {
	case q.Limit < 0:
		return errorf(http.StatusBadRequest, "limit %d is negative", q.Limit)
	case q.Limit == 0:
		q.Limit = min(DefaultLimit, s.cfg.MaxLimit)
	case q.Limit > s.cfg.MaxLimit:
		q.Limit = s.cfg.MaxLimit
	}
	st := q.Stages
	if st.TopK < 0 || st.TopK > 1000 {
		return errorf(http.StatusBadRequest, "stages.top_k %d out of range 0..1000", st.TopK)
	}
	if st.Alpha < 0 || st.Alpha > 100 {
		return errorf(http.StatusBadRequest, "stages.alpha %d out of range 0..100", st.Alpha)
	}
	if st.Tau != nil && (*st.Tau < 0 || *st.Tau > 1) {
		return errorf(http.StatusBadRequest, "stages.tau %g out of range 0..1", *st.Tau)
	}
	return nil
}

func checkText(field, s string) error {
	if len(s) > DefaultMaxTextBytes {
		return errorf(http.StatusBadRequest, "%s is %d bytes; at most %d", field, len(s), DefaultMaxTextBytes)
	}
	if !utf8.ValidString(s) {
		return errorf(http.StatusBadRequest, "%s is not valid UTF-8", field)
	}
	return nil
}

// search runs q with the server's concurrency bound and timeout and fills
// in ranks and URLs.
func (s *Server) search(ctx context.Context, q Query, observe func(StageEvent)) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SearchTimeout)
	defer cancel()
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.sem }()
	s.metrics.inFlight.Add(1)
	defer s.metrics.inFlight.Add(-1)
	start := time.Now()
	res, err := s.cfg.Searcher.Search(ctx, q, observe)
	if err == nil && res == nil {
		err = errors.New("search returned no result")
	}
	if err == nil {
		// A searcher that finishes after the deadline still has its
		// result dropped: the client was told the time limit.
		err = ctx.Err()
	}
	mode := q.Mode()
	if err != nil {
		s.metrics.search(mode, outcomeOf(err), time.Since(start), nil)
		return nil, err
	}
	finish(res, q, start)
	s.metrics.search(mode, "ok", time.Since(start), res.Stages)
	return res, nil
}

// finish cuts a result to the query's limit and fills in ranks, URLs and
// the elapsed time (final and partial results alike).
func finish(res *Result, q Query, start time.Time) {
	if len(res.Hits) > q.Limit {
		res.Hits = res.Hits[:q.Limit]
	}
	for i := range res.Hits {
		h := &res.Hits[i]
		h.Rank = i + 1
		h.ImageURL = "/api/images/" + escapeName(h.Name)
		h.ThumbURL = "/api/thumbs/" + escapeName(h.Name)
	}
	if res.Hits == nil {
		res.Hits = []Hit{}
	}
	if res.Descriptions == nil {
		res.Descriptions = []string{}
	}
	if res.Stages == nil {
		res.Stages = []StageTrace{}
	}
	res.ElapsedMS = float64(time.Since(start).Microseconds()) / 1000
}

func outcomeOf(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "error"
	}
}

// escapeName turns a gallery name (which may hold '/') into a URL path.
func escapeName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// searchErrorStatus maps a search error to a status code and message.
func searchErrorStatus(err error) (int, string) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.code, he.msg
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "search timed out"
	case errors.Is(err, context.Canceled):
		return 499, "search canceled"
	default:
		return http.StatusBadGateway, "search failed: " + err.Error()
	}
}

func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	q, err := s.parseQuery(w, r)
	if err != nil {
		code, msg := searchErrorStatus(err)
		writeError(w, code, "%s", msg)
		return
	}
	res, err := s.search(r.Context(), q, nil)
	if err != nil {
		code, msg := searchErrorStatus(err)
		if code == 499 && r.Context().Err() != nil {
			return // nobody is listening
		}
		s.log.Warn("search failed", "mode", q.Mode(), "err", err)
		writeError(w, code, "%s", msg)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// sseWriter writes Server-Sent Events; safe for concurrent use.
type sseWriter struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	rc     *http.ResponseController
	closed bool
}

func (e *sseWriter) send(event string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(map[string]string{"error": err.Error()})
		event = "error"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, data)
	_ = e.rc.Flush()
}

func (e *sseWriter) comment(text string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	fmt.Fprintf(e.w, ": %s\n\n", text)
	_ = e.rc.Flush()
}

func (e *sseWriter) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
}

// openEventStream starts an event-stream answer that may last as long as
// a search.
func (s *Server) openEventStream(w http.ResponseWriter) *sseWriter {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.SearchTimeout + 30*time.Second))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: rc}
}

// keepAlive sends a comment every period (so that proxies keep the
// stream open) until stop is called.
func (e *sseWriter) keepAlive(period time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.comment("keep-alive")
			}
		}
	}()
	return func() { close(done) }
}

// handleSearchStream answers a search with Server-Sent Events: "stage"
// events as stages start and finish, "partial" events with the results as
// each stage leaves them (the first right after retrieval), then one
// "result" or "error" event.
func (s *Server) handleSearchStream(w http.ResponseWriter, r *http.Request) {
	q, err := s.parseQuery(w, r)
	if err != nil {
		code, msg := searchErrorStatus(err)
		writeError(w, code, "%s", msg)
		return
	}
	ev := s.openEventStream(w)
	ev.send("mode", map[string]string{"mode": q.Mode()})
	stop := ev.keepAlive(15 * time.Second)
	start := time.Now()
	res, err := s.search(r.Context(), q, func(e StageEvent) {
		if e.Results != nil {
			// Results as this stage left them, before the stage event so
			// the client shows them as soon as they exist.
			finish(e.Results, q, start)
			ev.send("partial", e.Results)
		}
		ev.send("stage", e)
	})
	stop()
	if err != nil {
		code, msg := searchErrorStatus(err)
		if r.Context().Err() == nil {
			s.log.Warn("search failed", "mode", q.Mode(), "err", err)
		}
		ev.send("error", map[string]any{"status": code, "error": msg})
	} else {
		ev.send("result", res)
	}
	ev.close()
}
