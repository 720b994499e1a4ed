package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedServer is an OpenAI-compatible test server playing every model
// role with simple, deterministic rules that look at the images: the
// fixtures are coloured shapes, so the "models" name and check colours.
type scriptedServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  map[string]int
	bodies map[string]int // request body hash -> times seen
	// texts are the text parts of every request, per model.
	texts map[string][]string
	// maxTokens are the max_tokens values requests carried, per model.
	maxTokens map[string]map[int]bool
	latency   time.Duration
	// down makes a role answer 503.
	down map[string]bool
	// noLanguageRule counts reasoner requests whose prompt does not ask
	// for English output (queries may come in any language).
	noLanguageRule int
	// downAfter is the roles' down_after window in the configuration.
	downAfter time.Duration
	// faulty makes 35% of attempts fail: 20% HTTP 500, 10% 429 with
	// Retry-After, 5% a reply body cut off mid-way; faults counts them.
	faulty bool
	rng    *rand.Rand
	faults map[string]int
}

// injectFault plays one of the faults for a share of the attempts and
// reports whether it did.
func (s *scriptedServer) injectFault(w http.ResponseWriter) bool {
	s.mu.Lock()
	if !s.faulty {
		s.mu.Unlock()
		return false
	}
	x := s.rng.IntN(100)
	kind := ""
	switch {
	case x < 20:
		kind = "500"
	case x < 30:
		kind = "429"
	case x < 35:
		kind = "cut"
	}
	if kind != "" {
		s.faults[kind]++
	}
	s.mu.Unlock()
	switch kind {
	case "500":
		http.Error(w, `{"error":{"message":"engine hiccup","type":"server_error"}}`, http.StatusInternalServerError)
	case "429":
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"object":"error","message":"too many requests"}`, http.StatusTooManyRequests)
	case "cut":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "300")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Thin`))
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	default:
		return false
	}
	return true
}

var palette = []struct {
	name    string
	r, g, b float64
}{
	{"red", 220, 30, 30}, {"blue", 30, 60, 220}, {"green", 30, 170, 50}, {"yellow", 240, 220, 30},
	{"purple", 140, 40, 170}, {"orange", 250, 140, 20}, {"black", 10, 10, 10}, {"grey", 128, 128, 128},
	{"pink", 250, 150, 190},
}

func colourWords(s string) []string {
	s = strings.ToLower(s)
	var out []string
	for _, p := range palette {
		if regexp.MustCompile(`\b` + p.name + `\b`).MatchString(s) {
			out = append(out, p.name)
		}
	}
	return out
}

// dominantColour names the mean colour of the non-white pixels of a region.
func dominantColour(img image.Image, r image.Rectangle) string {
	var sr, sg, sb, n float64
	step := max(1, min(r.Dx(), r.Dy())/64) // sample large images sparsely
	for y := r.Min.Y; y < r.Max.Y; y += step {
		for x := r.Min.X; x < r.Max.X; x += step {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			fr, fg, fb := float64(cr>>8), float64(cg>>8), float64(cb>>8)
			if fr > 235 && fg > 235 && fb > 235 {
				continue
			}
			sr, sg, sb, n = sr+fr, sg+fg, sb+fb, n+1
		}
	}
	if n == 0 {
		return "white"
	}
	sr, sg, sb = sr/n, sg/n, sb/n
	best, bd := "", math.Inf(1)
	for _, p := range palette {
		d := (sr-p.r)*(sr-p.r) + (sg-p.g)*(sg-p.g) + (sb-p.b)*(sb-p.b)
		if d < bd {
			best, bd = p.name, d
		}
	}
	return best
}

type wireReq struct {
	Model     string `json:"model"`
	MaxTokens int    `json:"max_tokens"`
	Messages  []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

func (w wireReq) parts() (text string, img image.Image) {
	var b strings.Builder
	for _, m := range w.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			b.WriteString(s)
			continue
		}
		var parts []struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			ImageURL struct {
				URL string `json:"url"`
			} `json:"image_url"`
		}
		json.Unmarshal(m.Content, &parts)
		for _, p := range parts {
			if p.Type == "text" {
				b.WriteString(p.Text)
			} else if i := strings.Index(p.ImageURL.URL, ";base64,"); i >= 0 {
				raw, err := base64.StdEncoding.DecodeString(p.ImageURL.URL[i+8:])
				if err == nil {
					img, _, _ = image.Decode(bytes.NewReader(raw))
				}
			}
		}
	}
	return b.String(), img
}

// lineAfter returns the rest of the first line starting with one of the prefixes.
func lineAfter(text string, prefixes ...string) string {
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				return strings.TrimSpace(strings.TrimPrefix(l, p))
			}
		}
	}
	return ""
}

func (s *scriptedServer) reply(role, text string, img image.Image) string {
	switch role {
	case "captioner":
		c := "white"
		if img != nil {
			c = dominantColour(img, img.Bounds())
		}
		return "A " + c + " shape on a white background."
	case "reasoner", "questioner":
		if !strings.Contains(text, "English") {
			s.mu.Lock()
			s.noLanguageRule++
			s.mu.Unlock()
		}
		if strings.Contains(text, "Propose up to") { // asking back
			return askColours(text)
		}
		if strings.Contains(text, "[question,") { // propositions
			instr := lineAfter(text, "Request:", "A user asked for a picture with this request:")
			if instr == "" {
				// The request sits on the line after the heading.
				if i := strings.Index(text, "with this request:\n"); i >= 0 {
					instr = strings.SplitN(text[i+len("with this request:\n"):], "\n", 2)[0]
				}
			}
			var qs []string
			for _, c := range colourWords(instr) {
				qs = append(qs, fmt.Sprintf(`["Is the shape %s?", "True"]`, c))
			}
			qs = append(qs, `["Is the background black?", "False"]`)
			return "Facts first.\n```json\n{\"step1\": [\"a fact\"], \"step2\": [" + strings.Join(qs, ", ") + "]}\n```"
		}
		instr := lineAfter(text, "Request:", "Requested change:", "Shopper's words:", "New piece of the conversation:")
		ref := lineAfter(text, "Starting picture (as a caption):", "Starting photo (as a caption):", "Running description so far:", "Shown dress (as a caption):", "Shown shirt (as a caption):", "Shown top or t-shirt (as a caption):")
		if strings.Contains(instr, "same image") {
			return "I am not sure what to do here." // no JSON: the method's fallback
		}
		if strings.Contains(text, "Running description so far:") {
			d := instr
			if ref != "" && ref != "a blank image" {
				d = ref + "; " + instr
			}
			b, _ := json.Marshal(map[string]any{"step1": [][]string{{"Addition", instr}}, "step2": []string{d}})
			return "Updating.\n```json\n" + string(b) + "\n```"
		}
		descs := []string{instr, instr + " shape", "a picture of " + instr + ", like " + ref}
		b, _ := json.Marshal(map[string]any{"step1": [][]string{{"Modification", instr}, {"Retention", "the shape"}}, "step2": descs})
		// A trailing comma exercises the repair.
		return "Thinking.\n```json\n" + strings.Replace(string(b), "]}", "],}", 1) + "\n```"
	case "verifier":
		q := strings.ToLower(text)
		if strings.Contains(q, "background black") {
			return "no"
		}
		cs := colourWords(q)
		if img == nil || len(cs) == 0 {
			return "no"
		}
		if dominantColour(img, img.Bounds()) == cs[0] {
			return "Yes"
		}
		return "No"
	case "evaluator":
		instr := lineAfter(text, "Request:")
		if img == nil {
			return "ANSWER: No\nREASON: no image"
		}
		b := img.Bounds()
		right := image.Rect(b.Min.X+b.Dx()/2+30, b.Min.Y+70, b.Max.X, b.Max.Y)
		c := dominantColour(img, right)
		for _, w := range colourWords(instr) {
			if w == c {
				return "ANSWER: Yes\nREASON: the candidate is " + c + "."
			}
		}
		return "ANSWER: No\nREASON: the candidate is " + c + "."
	}
	return ""
}

// german names the palette colours for questions shown to a German user.
var german = map[string]string{"red": "rot", "blue": "blau", "green": "grün", "yellow": "gelb", "purple": "lila",
	"orange": "orange", "black": "schwarz", "grey": "grau", "pink": "rosa"}

// askColours proposes one question per colour named in the candidates'
// captions, in caption order, shown in German when the conversation opens
// with "eine" (a German opening line).
func askColours(text string) string {
	var cands, dialogue string
	if i := strings.Index(text, "each described by a one-sentence caption:\n"); i >= 0 {
		cands = text[i:]
		if j := strings.Index(cands, "\n\n"); j >= 0 {
			cands = cands[:j]
		}
	}
	if i := strings.Index(text, "\n(0) "); i >= 0 {
		dialogue = strings.SplitN(text[i+1:], "\n\n", 2)[0]
	}
	de := strings.Contains(dialogue, "eine ")
	seen := map[string]bool{}
	var qs []map[string]string
	for _, l := range strings.Split(cands, "\n") {
		for _, c := range colourWords(l) {
			if seen[c] {
				continue
			}
			seen[c] = true
			q := map[string]string{"en": "Is the shape " + c + "?", "user": "Is the shape " + c + "?"}
			if de {
				q["user"] = "Ist die Form " + german[c] + "?"
			}
			qs = append(qs, q)
		}
	}
	lang := "English"
	if de {
		lang = "German"
	}
	b, _ := json.Marshal(map[string]any{"language": lang, "questions": qs})
	return "Candidates differ by colour.\n```json\n" + string(b) + "\n```"
}

func newScriptedServer(t testing.TB) *scriptedServer {
	s := &scriptedServer{calls: map[string]int{}, bodies: map[string]int{}, texts: map[string][]string{}, maxTokens: map[string]map[int]bool{}, down: map[string]bool{},
		downAfter: 500 * time.Millisecond, rng: rand.New(rand.NewPCG(12, 35)), faults: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"captioner"},{"id":"reasoner"},{"id":"verifier"},{"id":"evaluator"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		var req wireReq
		if err := json.Unmarshal(body.Bytes(), &req); err != nil {
			http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
			return
		}
		h := sha256.Sum256(body.Bytes())
		s.mu.Lock()
		s.calls[req.Model]++
		s.bodies[hex.EncodeToString(h[:])]++
		down := s.down[req.Model]
		lat := s.latency
		s.mu.Unlock()
		if lat > 0 {
			time.Sleep(lat)
		}
		if down {
			http.Error(w, `{"error":{"message":"unavailable"}}`, http.StatusServiceUnavailable)
			return
		}
		if s.injectFault(w) {
			return
		}
		text, img := req.parts()
		s.mu.Lock()
		s.texts[req.Model] = append(s.texts[req.Model], text)
		if s.maxTokens[req.Model] == nil {
			s.maxTokens[req.Model] = map[int]bool{}
		}
		s.maxTokens[req.Model][req.MaxTokens] = true
		s.mu.Unlock()
		out := s.reply(req.Model, text, img)
		resp := map[string]any{
			"id": "x", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": out}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": len(text) / 4, "completion_tokens": len(out) / 4, "total_tokens": (len(text) + len(out)) / 4},
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// requestTexts returns the text of every request a model received.
func (s *scriptedServer) requestTexts(model string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.texts[model]...)
}

// maxTokensSeen returns the distinct max_tokens values a model's requests carried.
func (s *scriptedServer) maxTokensSeen(model string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for n := range s.maxTokens[model] {
		out = append(out, n)
	}
	return out
}

func (s *scriptedServer) count(role string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[role]
}

// configYAML is a configuration pointing every role at the server.
func (s *scriptedServer) configYAML(home, clipDir string, cache bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "home: %s\nclip:\n  model: %s\n  threads: 1\ncache:\n  disabled: %v\nroles:\n", home, clipDir, !cache)
	for _, r := range []string{"captioner", "reasoner", "verifier", "evaluator"} {
		fmt.Fprintf(&b, "  %s:\n    endpoints: [%s/v1]\n    model: %s\n    max_in_flight: 4\n    retries: 0\n    timeout: 20s\n    cooldown: 100ms\n    backoff: 5ms\n    retry_after_max: 20ms\n    down_after: %v\n", r, s.URL, r, s.downAfter)
	}
	return b.String()
}
