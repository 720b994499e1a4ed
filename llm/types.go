// Package llm calls the model roles (captioner, reasoner, proposer,
// verifier, evaluator, embedder) over the OpenAI-compatible HTTP API served
// by vLLM, SGLang, llama.cpp or Ollama: chat completions with images,
// log-probabilities, retries with backoff, endpoint pools with
// least-outstanding-requests balancing, and a persistent answer cache.
package llm

import (
	"image"
	"math"
	"strings"
	"sync"
	"unicode"
)

// ImageData is an image to send: encoded bytes (JPEG, PNG, GIF, BMP or
// WebP) with their MIME type, or a decoded image. Encoded bytes in the
// role's format that need no resizing are sent as they are; everything else
// is decoded, resized as the role asks and re-encoded. The encoded form is
// memoised, so reuse one *ImageData for an image sent many times (the
// verifier sees each candidate once per proposition). Use it by pointer only.
type ImageData struct {
	Bytes []byte
	MIME  string
	Image image.Image

	mu  sync.Mutex
	enc map[imageOptions]encodedImage
}

// ImageBytes wraps encoded image bytes. mime may be "" to sniff it.
func ImageBytes(b []byte, mime string) *ImageData { return &ImageData{Bytes: b, MIME: mime} }

// ImageOf wraps a decoded image (orientation already applied).
func ImageOf(img image.Image) *ImageData { return &ImageData{Image: img} }

// Part is one piece of a message: text or an image.
type Part struct {
	Text  string
	Image *ImageData
}

// TextPart returns a text part.
func TextPart(s string) Part { return Part{Text: s} }

// ImagePart returns an image part.
func ImagePart(img *ImageData) Part { return Part{Image: img} }

// Message is one chat turn. Role is "system", "user" or "assistant".
type Message struct {
	Role  string
	Parts []Part
}

// UserText is a user message holding only text.
func UserText(s string) Message { return Message{Role: "user", Parts: []Part{{Text: s}}} }

// UserImages is a user message with the images first, then the text (the
// order most chat templates and the seed models expect).
func UserImages(text string, imgs ...*ImageData) Message {
	m := Message{Role: "user"}
	for _, im := range imgs {
		m.Parts = append(m.Parts, Part{Image: im})
	}
	m.Parts = append(m.Parts, Part{Text: text})
	return m
}

// ChatRequest is one chat completion. Zero fields take the role's
// configured values.
type ChatRequest struct {
	Messages  []Message
	MaxTokens int
	// Stop replaces the role's stop strings when non-nil.
	Stop []string
	Seed *int
	// Temperature replaces the role's temperature (default 0) when set.
	Temperature *float64
	// Logprobs asks for log-probabilities (also on when the role asks);
	// TopLogprobs alternatives per position.
	Logprobs    bool
	TopLogprobs int
	// Extra fields merged over the role's extra body fields.
	Extra map[string]any
}

// Usage is the token accounting the server reported.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// TopLogprob is one alternative at a position.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// TokenLogprob is one generated token with its alternatives.
type TokenLogprob struct {
	Token   string       `json:"token"`
	Logprob float64      `json:"logprob"`
	Top     []TopLogprob `json:"top_logprobs,omitempty"`
}

// ChatResponse is the first choice of a completion.
type ChatResponse struct {
	Text         string         `json:"text"`
	FinishReason string         `json:"finish_reason"`
	Logprobs     []TokenLogprob `json:"logprobs,omitempty"`
	Usage        Usage          `json:"usage"`
	// Model is the model name the server reported.
	Model string `json:"model,omitempty"`
	// Cached is true when the answer came from the answer cache (no
	// network); Endpoint is the replica that answered otherwise.
	Cached   bool   `json:"-"`
	Endpoint string `json:"-"`
}

// Truncated reports whether generation stopped at the token limit.
func (r *ChatResponse) Truncated() bool { return r.FinishReason == "length" }

// YesNoScore is the soft yes/no score from log-probabilities.
type YesNoScore struct {
	// P is p(yes) / (p(yes) + p(no)) at the first non-blank position.
	P float64
	// Bounded is true when "yes" or "no" was absent from the returned
	// alternatives and its mass was bounded by the smallest returned one.
	Bounded bool
}

// YesNo returns the soft score p(yes) from the top log-probabilities of the
// first non-blank generated position; ok is false when there are no
// log-probabilities or neither a yes-like nor a no-like token appears.
func (r *ChatResponse) YesNo() (pYes float64, ok bool) {
	s, ok := r.YesNoDetail()
	return s.P, ok
}

// YesNoDetail is YesNo with the bounded flag.
func (r *ChatResponse) YesNoDetail() (YesNoScore, bool) {
	pos := -1
	for i, t := range r.Logprobs {
		if normToken(t.Token) != "" {
			pos = i
			break
		}
	}
	if pos < 0 {
		return YesNoScore{}, false
	}
	t := r.Logprobs[pos]
	cands := append([]TopLogprob{{Token: t.Token, Logprob: t.Logprob}}, t.Top...)
	seen := map[string]bool{}
	var yes, no []float64
	minLP := math.Inf(1)
	for _, c := range cands {
		if seen[c.Token] {
			continue
		}
		seen[c.Token] = true
		if c.Logprob < minLP {
			minLP = c.Logprob
		}
		switch normToken(c.Token) {
		case "yes":
			yes = append(yes, c.Logprob)
		case "no":
			no = append(no, c.Logprob)
		}
	}
	if len(yes) == 0 && len(no) == 0 {
		return YesNoScore{}, false
	}
	var s YesNoScore
	sy, sn := logSumExp(yes), logSumExp(no)
	if len(yes) == 0 {
		sy, s.Bounded = minLP, true
	}
	if len(no) == 0 {
		sn, s.Bounded = minLP, true
	}
	m := math.Max(sy, sn)
	ey, en := math.Exp(sy-m), math.Exp(sn-m)
	s.P = ey / (ey + en)
	return s, true
}

func logSumExp(xs []float64) float64 {
	if len(xs) == 0 {
		return math.Inf(-1)
	}
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	var s float64
	for _, x := range xs {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// normToken trims blanks, SentencePiece/BPE space markers and trailing
// punctuation, lower-cases, and maps BOS-like markers to "".
func normToken(tok string) string {
	t := strings.TrimFunc(tok, func(r rune) bool {
		return unicode.IsSpace(r) || r == '\u2581' || r == '\u0120' || r == '\u010a'
	})
	switch t {
	case "<s>", "</s>", "<bos>", "<|begin_of_text|>", "<|im_start|>":
		return ""
	}
	t = strings.TrimRightFunc(t, func(r rune) bool { return strings.ContainsRune(".,!?:;\"'", r) })
	return strings.ToLower(t)
}
