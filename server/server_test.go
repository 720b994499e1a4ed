package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagescope/imagescope/thumbs"
)

// fakeSearcher is a test double for the pipeline: it ranks gallery names by
// how many query words they contain, reports each stage, and records the
// queries it received.
type fakeSearcher struct {
	names []string
	mu    sync.Mutex
	got   []Query
	// block, when set, makes Search wait for ctx to end and report it on
	// canceled.
	block    bool
	canceled chan error
	started  chan struct{}
	fail     error
	// evaluate makes stage 3 run (judging the top two) instead of being
	// skipped.
	evaluate atomic.Bool
	// degraded, when set, is reported as the result's degradations.
	degraded atomic.Pointer[[]Degradation]
}

func (f *fakeSearcher) queries() []Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

func (f *fakeSearcher) Search(ctx context.Context, q Query, observe func(StageEvent)) (*Result, error) {
	f.mu.Lock()
	f.got = append(f.got, q)
	f.mu.Unlock()
	if observe == nil {
		observe = func(StageEvent) {}
	}
	if f.block {
		if f.started != nil {
			close(f.started)
		}
		<-ctx.Done()
		if f.canceled != nil {
			f.canceled <- ctx.Err()
		}
		return nil, ctx.Err()
	}
	if f.fail != nil {
		return nil, f.fail
	}
	observe(StageEvent{Stage: StageReason, Status: StatusStarted})
	desc := []string{"a photo of " + q.Text}
	observe(StageEvent{Stage: StageReason, Status: StatusDone, Detail: "1 description"})
	observe(StageEvent{Stage: StageRetrieve, Status: StatusStarted})
	words := strings.Fields(strings.ToLower(q.Text))
	type scored struct {
		name  string
		score float64
	}
	var ss []scored
	for _, n := range f.names {
		s := 0.0
		for _, w := range words {
			if strings.Contains(n, w) {
				s++
			}
		}
		ss = append(ss, scored{n, s})
	}
	slices.SortStableFunc(ss, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	observe(StageEvent{Stage: StageRetrieve, Status: StatusDone})
	props := []Proposition{{Question: "Is there a " + words[0] + "?", Expected: true}}
	observe(StageEvent{Stage: StageVerify, Status: StatusStarted})
	res := &Result{Descriptions: desc, Propositions: props}
	if d := f.degraded.Load(); d != nil {
		res.Degraded = *d
	}
	for i, s := range ss {
		h := Hit{Name: s.name, Score: s.score, Stage1Rank: i + 1}
		if i < 2 {
			ans := strings.Contains(s.name, words[0])
			h.Verification = &Verification{Score: b2f(ans), Answers: []Answer{{Question: props[0].Question, Expected: true, Answer: ans, Match: ans}}}
		}
		res.Hits = append(res.Hits, h)
	}
	observe(StageEvent{Stage: StageVerify, Status: StatusDone})
	res.Instructions = [][2]string{{"Addition", q.Text}}
	if q.Reference != "" || q.ReferenceImage != nil {
		res.Instructions = append(res.Instructions, [2]string{"Retention", "the rest of the reference"})
	}
	if f.evaluate.Load() {
		observe(StageEvent{Stage: StageEvaluate, Status: StatusStarted})
		if len(res.Hits) > 1 {
			res.Hits[0].Verdict = &Verdict{Yes: false, Text: "ANSWER: No\nThe candidate does not show " + q.Text + ".", Reasoning: "The candidate does not show " + q.Text + "."}
			res.Hits[1].Verdict = &Verdict{Yes: true, Text: "ANSWER: Yes\nThe candidate shows " + q.Text + ".", Reasoning: "The candidate shows " + q.Text + "."}
			res.Hits[0], res.Hits[1] = res.Hits[1], res.Hits[0]
		}
		observe(StageEvent{Stage: StageEvaluate, Status: StatusDone})
		res.Stages = []StageTrace{
			{Name: StageReason, Status: StatusDone, DurationMS: 120}, {Name: StageRetrieve, Status: StatusDone, DurationMS: 8},
			{Name: StageVerify, Status: StatusDone, DurationMS: 900}, {Name: StageEvaluate, Status: StatusDone, DurationMS: 400},
		}
		return res, nil
	}
	observe(StageEvent{Stage: StageEvaluate, Status: StatusSkipped, Reason: "evaluator role not configured"})
	res.Stages = []StageTrace{
		{Name: StageReason, Status: StatusDone}, {Name: StageRetrieve, Status: StatusDone},
		{Name: StageVerify, Status: StatusDone}, {Name: StageEvaluate, Status: StatusSkipped, Reason: "evaluator role not configured"},
	}
	return res, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writePNG writes a w x h PNG with a colour gradient.
func writePNG(t *testing.T, path string, w, h int) {
	t.Helper()
	// A different picture per file name: a tinted gradient with a disc.
	seed := crc32.ChecksumIEEE([]byte(filepath.Base(path)))
	tint := color.NRGBA{uint8(seed), uint8(seed >> 8), uint8(seed >> 16), 255}
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	cx, cy, r := w*int(seed>>24%5+2)/8, h/2, min(w, h)/4
	for y := range h {
		for x := range w {
			c := color.NRGBA{uint8((int(tint.R) + x*96/max(1, w)) % 256), uint8((int(tint.G) + y*96/max(1, h)) % 256), tint.B, 255}
			if (x-cx)*(x-cx)+(y-cy)*(y-cy) < r*r {
				c = color.NRGBA{255 - c.R, 255 - c.G, 255 - c.B, 255}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.png")
	writePNG(t, p, w, h)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bombPNG is a valid PNG signature + IHDR announcing w x h pixels and no
// image data: decoding its pixels would need w*h*4 bytes.
func bombPNG(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&buf, binary.BigEndian, uint32(len(data)))
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		buf.WriteString(typ)
		buf.Write(data)
		binary.Write(&buf, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return buf.Bytes()
}

type env struct {
	t       *testing.T
	srv     *Server
	ts      *httptest.Server
	fake    *fakeSearcher
	dir     string
	logs    *lockedWriter
	outside string
}

// newEnv builds a gallery folder with a few PNGs, a symlink that escapes
// it and a decompression bomb, and a server over it.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "gallery")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dir, outside, filepath.Join(dir, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	images := map[string]string{}
	for i, n := range []string{"red_dog", "blue_cat", "green_car", "dog_on_beach"} {
		p := filepath.Join(dir, n+".png")
		writePNG(t, p, 300+i*10, 200)
		images[n] = p
	}
	writePNG(t, filepath.Join(dir, "sub", "nested cat.png"), 64, 48)
	images["sub/nested cat.png"] = filepath.Join(dir, "sub", "nested cat.png")
	// A secret outside the gallery, reachable only through a symlink.
	writePNG(t, filepath.Join(outside, "secret.png"), 10, 10)
	if err := os.Symlink(filepath.Join(outside, "secret.png"), filepath.Join(dir, "escape.png")); err != nil {
		t.Fatal(err)
	}
	images["escape"] = filepath.Join(dir, "escape.png")
	if err := os.WriteFile(filepath.Join(dir, "bomb.png"), bombPNG(100000, 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	images["bomb"] = filepath.Join(dir, "bomb.png")
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("just text, not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	images["notes"] = filepath.Join(dir, "notes.txt")

	names := []string{}
	for n := range images {
		if n != "escape" && n != "bomb" && n != "notes" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	fake := &fakeSearcher{names: names}
	logs := &lockedWriter{w: &bytes.Buffer{}}
	cfg := Config{
		Searcher:  fake,
		Images:    images,
		ImageRoot: dir,
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		Stages: []StageInfo{
			{Name: StageReason, Configured: true}, {Name: StageRetrieve, Configured: true},
			{Name: StageVerify, Configured: true}, {Name: StageEvaluate, Reason: "evaluator role not configured"},
		},
		ModelStats: func() []RoleStats {
			return []RoleStats{{Role: "verifier", Calls: 7, CacheHits: 3, CacheMisses: 4}, {Role: "reasoner", Calls: 2}}
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &env{t: t, srv: srv, ts: ts, fake: fake, dir: dir, logs: logs, outside: outside}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

// String returns what was written so far.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (e *env) do(method, path string, body io.Reader, hdr map[string]string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (e *env) postJSON(path string, v any, hdr map[string]string) *http.Response {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range hdr {
		h[k] = v
	}
	return e.do("POST", path, bytes.NewReader(b), h)
}

func readBody(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeResult(t *testing.T, r *http.Response) Result {
	t.Helper()
	b := readBody(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, b)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return res
}

func wantError(t *testing.T, r *http.Response, code int, contains string) {
	t.Helper()
	b := readBody(t, r)
	if r.StatusCode != code {
		t.Fatalf("status %d, want %d: %s", r.StatusCode, code, b)
	}
	if contains != "" && !strings.Contains(string(b), contains) {
		t.Fatalf("body %s does not mention %q", b, contains)
	}
}

func multipartBody(t *testing.T, fields map[string]string, image []byte, filename string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		mw.WriteField(k, fields[k])
	}
	if image != nil {
		fw, err := mw.CreateFormFile("image", filename)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(image)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestSearchModes(t *testing.T) {
	e := newEnv(t, nil)

	// Text to image.
	res := decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "dog beach", "limit": 3}, nil))
	if len(res.Hits) != 3 || res.Hits[0].Name != "dog_on_beach" || res.Hits[0].Rank != 1 {
		t.Fatalf("hits = %+v", res.Hits)
	}
	if res.Hits[0].ImageURL != "/api/images/dog_on_beach" || res.Hits[0].ThumbURL != "/api/thumbs/dog_on_beach" {
		t.Fatalf("urls = %q %q", res.Hits[0].ImageURL, res.Hits[0].ThumbURL)
	}
	if len(res.Stages) != 4 || res.Stages[3].Status != StatusSkipped || res.Stages[3].Reason == "" {
		t.Fatalf("stages = %+v", res.Stages)
	}
	if res.Hits[0].Verification == nil || !res.Hits[0].Verification.Answers[0].Match {
		t.Fatalf("verification missing: %+v", res.Hits[0])
	}

	// Composed with a gallery reference.
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "make it a cat", "reference": "red_dog",
		"stages": map[string]any{"verify": false, "top_k": 5}}, nil))
	// Composed with an uploaded image (multipart, JSON request part).
	body, ct := multipartBody(t, map[string]string{"request": `{"text":"same but blue"}`}, pngBytes(t, 40, 30), "ref.png")
	decodeResult(t, e.do("POST", "/api/search", body, map[string]string{"Content-Type": ct}))
	// Composed with an upload and plain form fields.
	body, ct = multipartBody(t, map[string]string{"text": "greener", "limit": "2"}, pngBytes(t, 20, 10), "ref.png")
	res = decodeResult(t, e.do("POST", "/api/search", body, map[string]string{"Content-Type": ct}))
	if len(res.Hits) != 2 {
		t.Fatalf("limit from form field ignored: %d hits", len(res.Hits))
	}
	// Chat.
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "is it outdoors? yes", "dialogue": []string{"a dog", "is it red? no"}}, nil))
	// The opening turn of a chat.
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "a dog", "chat": true}, nil))

	got := e.fake.queries()
	if len(got) != 6 {
		t.Fatalf("searcher got %d queries", len(got))
	}
	if got[0].Mode() != "text" || got[0].Limit != 3 {
		t.Errorf("text query = %+v", got[0])
	}
	if got[1].Mode() != "composed" || got[1].Reference != "red_dog" || got[1].Stages.Verify == nil || *got[1].Stages.Verify || got[1].Stages.TopK != 5 {
		t.Errorf("composed query = %+v", got[1])
	}
	if got[2].ReferenceImage == nil || got[2].ReferenceImage.Bounds().Dx() != 40 || got[2].Text != "same but blue" {
		t.Errorf("upload query = %+v", got[2])
	}
	if got[3].ReferenceImage == nil || got[3].Text != "greener" || got[3].Limit != 2 {
		t.Errorf("form upload query = %+v", got[3])
	}
	if got[4].Mode() != "chat" || len(got[4].Dialogue) != 2 || got[4].Limit != DefaultLimit {
		t.Errorf("chat query = %+v", got[4])
	}
	if got[5].Mode() != "chat" || len(got[5].Dialogue) != 0 || got[5].Text != "a dog" {
		t.Errorf("opening chat query = %+v", got[5])
	}
}

func TestSearchStream(t *testing.T) {
	e := newEnv(t, nil)
	resp := e.postJSON("/api/search/stream", map[string]any{"text": "cat"}, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	var stages []StageEvent
	var result Result
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
			events = append(events, name)
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			switch name {
			case "stage":
				var ev StageEvent
				if err := json.Unmarshal(data, &ev); err != nil {
					t.Fatal(err)
				}
				stages = append(stages, ev)
			case "result":
				if err := json.Unmarshal(data, &result); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if events[0] != "mode" || events[len(events)-1] != "result" {
		t.Fatalf("events = %v", events)
	}
	if len(stages) != 7 || stages[0].Stage != StageReason || stages[0].Status != StatusStarted ||
		stages[6].Stage != StageEvaluate || stages[6].Status != StatusSkipped || stages[6].Reason == "" {
		t.Fatalf("stage events = %+v", stages)
	}
	if len(result.Hits) == 0 || !strings.Contains(result.Hits[0].Name, "cat") {
		t.Fatalf("result = %+v", result)
	}

	// A bad request is answered before the stream starts.
	wantError(t, e.postJSON("/api/search/stream", map[string]any{"text": ""}, nil), 400, "empty")
	// A failing search ends the stream with an error event.
	e.fake.fail = io.ErrUnexpectedEOF
	resp = e.postJSON("/api/search/stream", map[string]any{"text": "cat"}, nil)
	b := readBody(t, resp)
	if !strings.Contains(string(b), "event: error") || !strings.Contains(string(b), "unexpected EOF") {
		t.Fatalf("stream = %s", b)
	}
}

func TestSearchErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploadBytes = 64 << 10; c.MaxPixels = 1_000_000 })
	js := map[string]string{"Content-Type": "application/json"}
	cases := []struct {
		name string
		resp func() *http.Response
		code int
		msg  string
	}{
		{"empty text", func() *http.Response { return e.postJSON("/api/search", map[string]any{"text": "  "}, nil) }, 400, "empty"},
		{"bad json", func() *http.Response { return e.do("POST", "/api/search", strings.NewReader("{"), js) }, 400, "request JSON"},
		{"unknown field", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "refrence": "red_dog"}, nil)
		}, 400, "refrence"},
		{"trailing data", func() *http.Response { return e.do("POST", "/api/search", strings.NewReader(`{"text":"x"} {}`), js) }, 400, "extra data"},
		{"unknown reference", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "reference": "nope"}, nil)
		}, 400, `nope`},
		{"reference traversal", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "reference": "../outside/secret.png"}, nil)
		}, 400, "not in the gallery"},
		{"chat with reference", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "reference": "red_dog", "dialogue": []string{"a"}}, nil)
		}, 400, "no reference"},
		{"opening chat with reference", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "reference": "red_dog", "chat": true}, nil)
		}, 400, "no reference"},
		{"empty turn", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "dialogue": []string{"a", " "}}, nil)
		}, 400, "dialogue[1]"},
		{"too many turns", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "dialogue": slices.Repeat([]string{"t"}, 40)}, nil)
		}, 400, "turns"},
		{"long text", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": strings.Repeat("a", 5000)}, nil)
		}, 400, "at most"},
		{"negative limit", func() *http.Response { return e.postJSON("/api/search", map[string]any{"text": "x", "limit": -1}, nil) }, 400, "negative"},
		{"bad tau", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "stages": map[string]any{"tau": 2}}, nil)
		}, 400, "tau"},
		{"wrong content type", func() *http.Response {
			return e.do("POST", "/api/search", strings.NewReader("text=x"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		}, 415, "multipart"},
		{"wrong method", func() *http.Response { return e.do("GET", "/api/search", nil, nil) }, 405, ""},
		{"unknown endpoint", func() *http.Response { return e.do("GET", "/api/nothing", nil, nil) }, 404, "no such API endpoint"},
		{"body too large", func() *http.Response {
			return e.postJSON("/api/search", map[string]any{"text": "x", "dialogue": []string{strings.Repeat("b", 70<<10)}}, nil)
		}, 413, "larger than"},
		{"upload too large", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x"}, append(pngBytes(t, 40, 40), make([]byte, 80<<10)...), "big.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 413, "larger than"},
		{"upload not an image", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x"}, []byte("<html><script>alert(1)</script></html>"), "x.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 415, "text/html"},
		{"upload svg", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x"}, []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>`), "x.svg")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 415, "not JPEG"},
		{"upload bomb", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x"}, bombPNG(100000, 100000), "bomb.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 413, "image too large"},
		{"upload just over pixel limit", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x"}, bombPNG(1001, 1000), "b.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 413, "1001000 pixels"},
		{"upload truncated", func() *http.Response {
			p := pngBytes(t, 50, 50)
			b, ct := multipartBody(t, map[string]string{"text": "x"}, p[:len(p)/2], "cut.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 400, "uploaded image"},
		{"upload and reference", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x", "reference": "red_dog"}, pngBytes(t, 5, 5), "r.png")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 400, "not both"},
		{"unknown multipart field", func() *http.Response {
			b, ct := multipartBody(t, map[string]string{"text": "x", "file": "y"}, nil, "")
			return e.do("POST", "/api/search", b, map[string]string{"Content-Type": ct})
		}, 400, `unknown multipart field`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantError(t, c.resp(), c.code, c.msg) })
	}
	if n := len(e.fake.queries()); n != 0 {
		t.Fatalf("searcher called %d times for bad requests", n)
	}
	// Searcher failures.
	e.fake.fail = io.ErrUnexpectedEOF
	wantError(t, e.postJSON("/api/search", map[string]any{"text": "x"}, nil), 502, "search failed")
}

func TestAuth(t *testing.T) {
	const token = "s3cret-token-value"
	e := newEnv(t, func(c *Config) { c.Token = token })
	good := map[string]string{"Authorization": "Bearer " + token}
	for _, p := range []struct{ method, path string }{
		{"POST", "/api/search"}, {"POST", "/api/search/stream"}, {"GET", "/api/images/red_dog"},
		{"GET", "/api/thumbs/red_dog"}, {"GET", "/api/gallery"}, {"GET", "/api/info"}, {"GET", "/metrics"}, {"GET", "/api/nothing"}, {"GET", "/api/openapi.json"},
	} {
		for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": "Basic " + token}} {
			r := e.do(p.method, p.path, strings.NewReader(`{"text":"dog"}`), h)
			if r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %v: status %d", p.method, p.path, h, r.StatusCode)
			}
		}
	}
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "dog"}, good))
	for _, p := range []string{"/api/images/red_dog", "/api/thumbs/red_dog", "/api/info", "/metrics", "/api/openapi.json"} {
		if r := e.do("GET", p, nil, good); r.StatusCode != 200 {
			t.Errorf("GET %s with token: %d", p, r.StatusCode)
		}
	}
	// Open without a token: liveness, readiness and the UI files.
	for _, p := range []string{"/healthz", "/readyz", "/", "/app.js", "/style.css"} {
		if r := e.do("GET", p, nil, nil); r.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, r.StatusCode)
		}
	}
	if r := e.do("GET", "/api/images/red_dog", nil, good); r.Header.Get("Cache-Control") != "private, max-age=3600" {
		t.Errorf("protected image Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	if strings.Contains(e.logs.String(), token) || strings.Contains(e.logs.String(), "wrong") {
		t.Fatalf("token in logs:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "status=401") {
		t.Fatalf("requests not logged:\n%s", e.logs.String())
	}
}

func TestImages(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("GET", "/api/images/red_dog", nil, nil)
	b := readBody(t, r)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("status %d type %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	want, _ := os.ReadFile(filepath.Join(e.dir, "red_dog.png"))
	if !bytes.Equal(b, want) {
		t.Fatal("original bytes differ")
	}
	etag := r.Header.Get("ETag")
	if etag == "" || r.Header.Get("Cache-Control") != "public, max-age=3600" {
		t.Fatalf("caching headers: etag %q cache-control %q", etag, r.Header.Get("Cache-Control"))
	}
	if r := e.do("GET", "/api/images/red_dog", nil, map[string]string{"If-None-Match": etag}); r.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", r.StatusCode)
	}
	if r := e.do("GET", "/api/images/sub/nested%20cat.png", nil, nil); r.StatusCode != 200 {
		t.Fatalf("nested name: %d", r.StatusCode)
	}

	// Thumbnails.
	r = e.do("GET", "/api/thumbs/green_car", nil, nil)
	b = readBody(t, r)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("thumb: status %d type %q: %s", r.StatusCode, r.Header.Get("Content-Type"), b)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 256 || img.Bounds().Dy() != 160 { // 320x200 -> 256x160
		t.Fatalf("thumb size %v", img.Bounds())
	}
	tag := r.Header.Get("ETag")
	if tag == "" || tag == etag || r.Header.Get("Cache-Control") == "" {
		t.Fatalf("thumb etag %q", tag)
	}
	if r := e.do("GET", "/api/thumbs/green_car", nil, map[string]string{"If-None-Match": tag}); r.StatusCode != 304 {
		t.Fatalf("thumb If-None-Match: %d", r.StatusCode)
	}
	r = e.do("GET", "/api/thumbs/green_car?size=128", nil, nil)
	if b := readBody(t, r); r.StatusCode != 200 || r.Header.Get("ETag") == tag {
		t.Fatalf("thumb 128: %d %s", r.StatusCode, b)
	}
	e.do("GET", "/api/thumbs/green_car", nil, nil) // from cache
	wantError(t, e.do("GET", "/api/thumbs/green_car?size=4000", nil, nil), 400, "size")
	wantError(t, e.do("GET", "/api/thumbs/bomb", nil, nil), 422, "image too large")
	wantError(t, e.do("GET", "/api/images/notes", nil, nil), 415, "not a raster image")
	wantError(t, e.do("GET", "/api/thumbs/notes", nil, nil), 422, "")

	// Metrics show thumbnail cache hits.
	fams := scrape(t, e)
	wantSample(t, fams, "imagescope_thumbnail_cache_hits_total", map[string]string{}, 2)
	if _, ok := sample(fams, "imagescope_thumbnail_cache_misses_total", map[string]string{}); !ok {
		t.Error("metrics lack imagescope_thumbnail_cache_misses_total")
	}
}

func TestImageTraversal(t *testing.T) {
	e := newEnv(t, nil)
	for _, p := range []string{
		"/api/images/..%2f..%2fetc%2fpasswd",
		"/api/images/..%2Foutside%2Fsecret.png",
		"/api/images/%2e%2e/outside/secret.png",
		"/api/images/../outside/secret.png",
		"/api/images/..%5c..%5cwindows",
		"/api/thumbs/..%2f..%2fetc%2fpasswd",
		"/api/images/%2fetc%2fpasswd",
		"/api/images/red_dog.png",        // a file name, not a gallery name
		"/api/images/red_dog%00.png",     // NUL
		"/api/images/sub%2fnested%20cat", // no such name
		"/api/images/",
	} {
		r := e.do("GET", p, nil, nil)
		b := readBody(t, r)
		if r.StatusCode == 200 || bytes.Contains(b, []byte("root:")) {
			t.Errorf("GET %s: status %d", p, r.StatusCode)
		}
	}
	// A gallery entry whose file is a symlink leading outside the folder.
	for _, p := range []string{"/api/images/escape", "/api/thumbs/escape"} {
		wantError(t, e.do("GET", p, nil, nil), 403, "outside the gallery folder")
	}
	// A gallery entry pointing outside the configured root.
	e2 := newEnv(t, func(c *Config) {
		c.Images["stray"] = "/etc/passwd"
	})
	wantError(t, e2.do("GET", "/api/images/stray", nil, nil), 403, "outside")
}

func TestCancelOnDisconnect(t *testing.T) {
	for _, path := range []string{"/api/search", "/api/search/stream"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, nil)
			e.fake.block = true
			e.fake.started = make(chan struct{})
			e.fake.canceled = make(chan error, 1)
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+path, strings.NewReader(`{"text":"dog"}`))
			req.Header.Set("Content-Type", "application/json")
			errc := make(chan error, 1)
			go func() {
				resp, err := e.ts.Client().Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				errc <- err
			}()
			<-e.fake.started
			cancel()
			if err := <-e.fake.canceled; err != context.Canceled {
				t.Fatalf("searcher saw %v, want context.Canceled", err)
			}
			if err := <-errc; err == nil {
				t.Fatal("client request did not fail")
			}
			// The search is counted as canceled (and a JSON request as
			// abandoned, 499) once its handler ends; the stream had already
			// sent its 200.
			name, labels := "imagescope_searches_total", map[string]string{"mode": "text", "outcome": "canceled"}
			if path == "/api/search" {
				name, labels = "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "499"}
			}
			for i := 0; ; i++ {
				if n, _ := sample(scrape(t, e), name, labels); n == 1 {
					break
				}
				if i == 500 {
					t.Fatalf("metrics lack %s%v = 1", name, labels)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestSearchTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SearchTimeout = 20 * time.Millisecond })
	e.fake.block = true
	e.fake.canceled = make(chan error, 1)
	wantError(t, e.postJSON("/api/search", map[string]any{"text": "dog"}, nil), 504, "timed out")
	if err := <-e.fake.canceled; err != context.DeadlineExceeded {
		t.Fatalf("searcher saw %v", err)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("GET", "/api/info", nil, map[string]string{"Origin": "https://evil.example"})
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header without configuration")
	}
	r = e.do("OPTIONS", "/api/search", nil, map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
	if r.Header.Get("Access-Control-Allow-Origin") != "" || r.StatusCode == 204 {
		t.Fatalf("preflight answered without configuration: %d", r.StatusCode)
	}

	e = newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	r = e.do("OPTIONS", "/api/search", nil, map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
	if r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.StatusCode, r.Header)
	}
	r = e.do("GET", "/api/info", nil, map[string]string{"Origin": "https://app.example"})
	if r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatal("allowed origin got no header")
	}
	r = e.do("GET", "/api/info", nil, map[string]string{"Origin": "https://other.example"})
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("other origin got a header")
	}
}

func TestMetricsAndInfo(t *testing.T) {
	e := newEnv(t, nil)
	decodeResult(t, e.postJSON("/api/search", map[string]any{"text": "dog"}, nil))
	wantError(t, e.postJSON("/api/search", map[string]any{"text": ""}, nil), 400, "")
	// The full scrape is checked in TestMetricsExposition; here the
	// counters that /api/info's figures come from.
	fams := scrape(t, e)
	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "200"}, 1)
	wantSample(t, fams, "imagescope_http_requests_total", map[string]string{"route": "POST /api/search", "method": "POST", "code": "400"}, 1)
	wantSample(t, fams, "imagescope_model_calls_total", map[string]string{"role": "reasoner"}, 2)
	wantSample(t, fams, "imagescope_gallery_images", map[string]string{}, 8)

	var info infoResponse
	if err := json.Unmarshal(readBody(t, e.do("GET", "/api/info", nil, nil)), &info); err != nil {
		t.Fatal(err)
	}
	if info.Images != 8 || len(info.Stages) != 4 || info.Stages[3].Reason == "" || info.Limits.MaxUploadBytes != DefaultMaxUploadBytes {
		t.Fatalf("info = %+v", info)
	}
	var gal struct {
		Total  int            `json:"total"`
		Images []galleryEntry `json:"images"`
	}
	if err := json.Unmarshal(readBody(t, e.do("GET", "/api/gallery?q=CAT&limit=1", nil, nil)), &gal); err != nil {
		t.Fatal(err)
	}
	if gal.Total != 2 || len(gal.Images) != 1 || gal.Images[0].Name != "blue_cat" {
		t.Fatalf("gallery = %+v", gal)
	}
	wantError(t, e.do("GET", "/api/gallery?limit=0", nil, nil), 400, "limit")
	var doc map[string]any
	if err := json.Unmarshal(readBody(t, e.do("GET", "/api/openapi.json", nil, nil)), &doc); err != nil || doc["openapi"] == nil {
		t.Fatalf("openapi: %v", err)
	}
	r := e.do("GET", "/", nil, nil)
	if b := readBody(t, r); !bytes.Contains(b, []byte(`id="search-form"`)) || r.Header.Get("Content-Security-Policy") == "" {
		t.Fatal("index page or CSP missing")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:80": true, "localhost:1": true,
		"0.0.0.0:8080": false, ":8080": false, "192.168.1.2:80": false, "bad": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestThumbStore(t *testing.T) {
	// Thumbnails made ahead of time are served from the store as they are;
	// one made on request is added to it.
	st, err := thumbs.Open(filepath.Join(t.TempDir(), "db.thumbs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Thumbs = st })
	fi, err := os.Stat(filepath.Join(e.dir, "red_dog.png"))
	if err != nil {
		t.Fatal(err)
	}
	marker := pngBytes(t, 7, 5) // not what a fresh thumbnail would be
	if err := st.Put("red_dog", fi, 256, marker); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/api/thumbs/red_dog", nil, nil)
	if b := readBody(t, r); r.StatusCode != 200 || !bytes.Equal(b, marker) {
		t.Fatalf("status %d: the stored thumbnail was not served", r.StatusCode)
	}
	if _, ok := st.Get("blue_cat", mustStat(t, filepath.Join(e.dir, "blue_cat.png")), 512); ok {
		t.Fatal("512 thumbnail exists before it was asked for")
	}
	r = e.do("GET", "/api/thumbs/blue_cat?size=512", nil, nil)
	b := readBody(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if got, ok := st.Get("blue_cat", mustStat(t, filepath.Join(e.dir, "blue_cat.png")), 512); !ok || !bytes.Equal(got, b) {
		t.Fatal("a thumbnail made on request was not stored")
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
