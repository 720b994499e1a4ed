// Package pipeline implements the ImageScope method: stage 1 (the reasoner
// rewrites the query into target descriptions; CLIP ranks the gallery by a
// tau-fused image/caption score), stage 2 (yes/no propositions checked by a
// verifier on the top K candidates; stable re-rank by agreement), stage 3
// (an evaluator judges reference-vs-candidate compositions for the top
// alpha; the first Yes moves to the front) and chat rounds.
//
// The package talks to models and indexes through the small interfaces
// below; cmd/imagescope wires the concrete implementations.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"strings"
	"sync"

	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/vindex"
)

// TextEmbedder embeds texts with the CLIP text tower. Vectors need not be
// normalised (the pipeline normalises them). A per-text failure is reported
// as an error for the whole call.
type TextEmbedder interface {
	EmbedTexts(ctx context.Context, texts []string) ([][]float32, error)
}

// SearchQuery is one fused-score query over the gallery: the one query
// type of the module, vindex.Query (mean over Descriptions of
// (1-Tau)*dot(t, image) + Tau*dot(t, caption), optionally restricted to or
// excluding gallery positions).
type SearchQuery = vindex.Query

// Hit is one ranked gallery image (vindex.Hit).
type Hit = vindex.Hit

// Searcher ranks the gallery for fused-score queries (vindex.Index and the
// external engines share this shape). k <= 0 asks for the full ranking;
// ties keep gallery order.
type Searcher interface {
	Search(ctx context.Context, qs []SearchQuery, k int) ([][]Hit, error)
}

// Gallery maps image names to search indexes and holds the captions.
type Gallery interface {
	// Lookup returns the search index of a gallery image.
	Lookup(name string) (int, bool)
	// Caption returns the stored caption of a gallery image.
	Caption(name string) (string, bool)
	// HasCaptions reports whether the gallery was captioned (otherwise the
	// caption term of the score is dropped: tau is treated as 0).
	HasCaptions() bool
}

// ImageEmbedder embeds images with the CLIP image tower (a reference image
// from outside the gallery, for image-only queries). Vectors need not be
// normalised.
type ImageEmbedder interface {
	EmbedImage(ctx context.Context, img image.Image) ([]float32, error)
}

// GalleryVectors is implemented by galleries that hold their image and
// caption embeddings in memory: image-only queries take a gallery
// reference's vector from there instead of embedding the file again, and
// results report each image's own image-vs-caption similarity.
type GalleryVectors interface {
	// ImageVector returns the normalised image embedding of a gallery image.
	ImageVector(name string) ([]float32, bool)
	// CaptionSimilarity returns the cosine similarity between a gallery
	// image and its caption (false without a caption).
	CaptionSimilarity(name string) (float32, bool)
}

// ImageData is an encoded image ready to send to a model server.
type ImageData struct {
	Bytes []byte
	MIME  string
	// Memo, when set, is shared by every request that sends this same
	// image (a candidate is verified once per proposition), so a client
	// can keep its own prepared form of the image there.
	Memo *Memo
}

// Memo holds one lazily computed value.
type Memo struct {
	mu sync.Mutex
	v  any
}

// Get returns the stored value, computing it with f the first time.
func (m *Memo) Get(f func() any) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.v == nil {
		m.v = f()
	}
	return m.v
}

// ImageSource loads a gallery image (the file as stored) by name.
type ImageSource interface {
	Image(ctx context.Context, name string) (ImageData, error)
}

// Part is one piece of a chat message: text or an image.
type Part struct {
	Text  string
	Image *ImageData
}

// Message is one chat turn.
type Message struct {
	Role  string
	Parts []Part
}

// ChatRequest is one generation request (decoding is greedy; the client
// applies the role's configured sampling settings).
type ChatRequest struct {
	Messages    []Message
	MaxTokens   int
	Stop        []string
	Logprobs    bool
	TopLogprobs int
	// Extra holds server extensions (e.g. repetition_penalty).
	Extra map[string]any
}

// ChatResponse is one generation result.
type ChatResponse struct {
	Text         string
	FinishReason string
	// PYes is the probability of "yes" read from the top log-probabilities
	// of the first token, when the server returned them.
	PYes             *float64
	Cached           bool
	PromptTokens     int
	CompletionTokens int
}

// Chatter is one model role behind an OpenAI-compatible server
// (llm.Client satisfies it through a thin adapter).
type Chatter interface {
	Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error)
}

// ErrRoleDown is returned (wrapped in *RoleDownError) once a role has failed
// too many times in a row: no new calls are made to it, the affected query
// stage is left unfinished and the run stays resumable.
var ErrRoleDown = errors.New("model role is down")

// RoleDownError names the role that is down and the last failure.
type RoleDownError struct {
	Role modelrole.Name
	Last error
}

func (e *RoleDownError) Error() string {
	last := e.Last
	// A nested role-down error names the role already: report the cause once.
	for {
		var inner *RoleDownError
		if !errors.As(last, &inner) || inner == e {
			break
		}
		e, last = inner, inner.Last
	}
	if last == nil {
		return string(e.Role) + " is unavailable"
	}
	if msg := last.Error(); strings.HasPrefix(msg, string(e.Role)) {
		return msg
	}
	return fmt.Sprintf("%s is unavailable: %v", e.Role, last)
}

// Unwrap makes errors.Is(err, ErrRoleDown) work.
func (e *RoleDownError) Unwrap() error { return ErrRoleDown }

// Atomic is one atomic instruction [TYPE, content] from stage 1.
type Atomic struct {
	Type    string `json:"type"`
	Content string `json:"content"`
}

// Proposition is one yes/no question with the answer the target should get.
type Proposition struct {
	Question string `json:"question"`
	Expected bool   `json:"expected"`
}

// Query is one unit of work: a benchmark query, a user query, or one round
// of a chat query.
type Query struct {
	ID string `json:"id"`
	// Round is the chat round (0..10); -1 for non-chat queries.
	Round int `json:"round"`
	// Chat selects the chat prompts: one cumulative description, Previous
	// used in place of the reference caption.
	Chat bool `json:"chat,omitempty"`
	// Domain selects the prompt set (general, cirr, fashion-*, chat).
	Domain      string `json:"domain"`
	Instruction string `json:"instruction"`
	// Reference is the gallery name of the reference image ("" = none).
	Reference string `json:"reference,omitempty"`
	// ReferenceImage is a reference image that is not in the gallery.
	ReferenceImage image.Image `json:"-"`
	// ReferenceCaption overrides the gallery caption of the reference.
	ReferenceCaption string `json:"reference_caption,omitempty"`
	// Previous is, for chat rounds, the previous target description.
	Previous string `json:"previous,omitempty"`
	// Subset restricts the ranking to these gallery names (CIRR subset
	// protocol: the img_set members other than the reference).
	Subset []string `json:"subset,omitempty"`
	// ExcludeReference removes the reference image from the ranking.
	ExcludeReference bool `json:"exclude_reference,omitempty"`
	// RankSubset, with Subset nil, also ranks these gallery names on their
	// own (Stage1.SubsetRanking) so subset metrics and submissions can be
	// taken from a full-gallery run.
	RankSubset []string `json:"rank_subset,omitempty"`
	// EvalText, when set, is what the evaluator judges instead of the
	// instruction (chat rounds use the cumulative description).
	EvalText string `json:"eval_text,omitempty"`
}

// NoTextToVerify is why stages 2 and 3 skip an image-only ("more like
// this") query: there is no request to write propositions about or to judge.
const NoTextToVerify = "no text to verify"

// ImageOnly reports whether q searches by its reference image alone (no
// instruction): stage 1 ranks by image-to-image similarity and stages 2
// and 3 are skipped.
func (q Query) ImageOnly() bool {
	return !q.Chat && strings.TrimSpace(q.Instruction) == "" && (q.Reference != "" || q.ReferenceImage != nil)
}

// Scored is a gallery name with its stage-1 fused score.
type Scored struct {
	Name  string  `json:"name"`
	Score float32 `json:"score"`
}

// Calls counts what one stage of one query asked of the model roles.
type Calls struct {
	// Calls are the requests sent to a model server, per role (answers
	// served from the answer cache are not sent: they count in CacheHits).
	Calls map[string]int `json:"calls,omitempty"`
	// Failures are the requests that failed (after retries).
	Failures map[string]int `json:"failures,omitempty"`
	// CacheHits are the answers served from the answer cache.
	CacheHits map[string]int `json:"cache_hits,omitempty"`
	// Fallbacks lists the fallbacks taken (see docs/trace.md).
	Fallbacks []string `json:"fallbacks,omitempty"`
}

func (c *Calls) add(name modelrole.Name, resp *ChatResponse, err error) {
	if resp != nil && resp.Cached {
		if c.CacheHits == nil {
			c.CacheHits = map[string]int{}
		}
		c.CacheHits[string(name)]++
		return
	}
	if c.Calls == nil {
		c.Calls = map[string]int{}
	}
	c.Calls[string(name)]++
	if err != nil {
		if c.Failures == nil {
			c.Failures = map[string]int{}
		}
		c.Failures[string(name)]++
	}
}

func (c *Calls) fallback(kind string) { c.Fallbacks = append(c.Fallbacks, kind) }

// merge adds o's counters (not its fallbacks) to c.
func (c *Calls) merge(o Calls) {
	add := func(dst *map[string]int, src map[string]int) {
		for r, n := range src {
			if *dst == nil {
				*dst = map[string]int{}
			}
			(*dst)[r] += n
		}
	}
	add(&c.Calls, o.Calls)
	add(&c.Failures, o.Failures)
	add(&c.CacheHits, o.CacheHits)
}

// Stage1 is what stage 1 did for one query.
type Stage1 struct {
	ReferenceCaption string `json:"reference_caption"`
	// Reply is the reasoner's raw reply ("" when the call failed).
	Reply string `json:"reasoner_reply"`
	// Error is the reasoner call's failure, if any.
	Error        string   `json:"reasoner_error,omitempty"`
	Atomic       []Atomic `json:"atomic"`
	Descriptions []string `json:"descriptions"`
	// Embedded are the texts that were embedded (the descriptions, or the
	// raw instruction when there were none).
	Embedded []string `json:"embedded"`
	// Tau is the caption weight used (0 when the gallery has no captions).
	Tau float32 `json:"tau"`
	// Restricted is the number of candidates under the subset protocol (0 = whole gallery).
	Restricted int `json:"restricted,omitempty"`
	// ReferenceExcluded is true when the reference was removed from the ranking.
	ReferenceExcluded bool `json:"reference_excluded,omitempty"`
	// ByImage is true for an image-only query: the reference image's CLIP
	// embedding was the query vector (no reasoner, no descriptions).
	ByImage bool     `json:"by_image,omitempty"`
	Ranking []Scored `json:"ranking"`
	// SubsetRanking is Query.RankSubset ranked by the same score.
	SubsetRanking []string `json:"subset_ranking,omitempty"`
	// Degraded says which role was unavailable and what was done instead
	// (searches only: a benchmark run leaves the unit unfinished).
	Degraded string `json:"degraded,omitempty"`
	Calls
}

// Names returns the stage-1 ranking's names.
func (s *Stage1) Names() []string {
	out := make([]string, len(s.Ranking))
	for i, r := range s.Ranking {
		out[i] = r.Name
	}
	return out
}

// Verification is one verifier answer for (candidate, question).
type Verification struct {
	Candidate string   `json:"candidate"`
	Question  int      `json:"question"`
	Reply     string   `json:"reply"`
	Yes       bool     `json:"yes"`
	Agrees    bool     `json:"agrees"`
	PYes      *float64 `json:"p_yes,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// CandidateScore is a stage-2 score of one top-K candidate.
type CandidateScore struct {
	Name      string `json:"name"`
	Agreement int    `json:"agreement"`
	// Soft is the expected agreement from yes/no log-probabilities
	// (reported beside the hard count; nil when not available).
	Soft   *float64 `json:"soft,omitempty"`
	Failed bool     `json:"failed,omitempty"`
}

// Stage2 is what stage 2 did for one query.
type Stage2 struct {
	Skipped string `json:"skipped,omitempty"`
	// Degraded is set when the stage was skipped because a role was
	// unavailable (searches only).
	Degraded      string           `json:"degraded,omitempty"`
	Reply         string           `json:"proposer_reply"`
	Error         string           `json:"proposer_error,omitempty"`
	Statements    []string         `json:"statements"`
	Propositions  []Proposition    `json:"propositions"`
	Depth         int              `json:"depth"`
	Verifications []Verification   `json:"verifications"`
	Scores        []CandidateScore `json:"scores"`
	// Ranking is the full re-ranked list (top K re-sorted, the rest as in stage 1).
	Ranking []string `json:"ranking"`
	// SoftRanking is the same list re-sorted by soft score (only with soft
	// scoring on and every score available); it never feeds stage 3.
	SoftRanking []string `json:"soft_ranking,omitempty"`
	Calls
}

// Evaluation is one evaluator judgement.
type Evaluation struct {
	Candidate string `json:"candidate"`
	Rank      int    `json:"rank"`
	Reply     string `json:"reply"`
	Yes       bool   `json:"yes"`
	Error     string `json:"error,omitempty"`
}

// Stage3 is what stage 3 did for one query.
type Stage3 struct {
	Skipped string `json:"skipped,omitempty"`
	// Degraded is set when the stage was skipped because the evaluator was
	// unavailable (searches only).
	Degraded    string       `json:"degraded,omitempty"`
	Instruction string       `json:"instruction"`
	Evaluations []Evaluation `json:"evaluations"`
	// Chosen is the first candidate judged Yes ("" if none).
	Chosen  string   `json:"chosen,omitempty"`
	Ranking []string `json:"ranking"`
	Calls
}
