// Package server is imagescope's HTTP face: a JSON API (search, streaming
// search, gallery images and thumbnails, health, metrics) and an embedded web
// UI for text, composed and chat retrieval that explains every ranking.
//
// The package does not know how a search runs: it calls a Searcher, which the
// command wires to the pipeline engine.
package server

import (
	"context"
	"image"
	"slices"
	"strings"
	"time"

	"github.com/imagescope/imagescope/internal/breaker"
)

// Stage names used in traces and events.
const (
	StageReason   = "reason"   // stage 1a: the reasoner writes target descriptions
	StageRetrieve = "retrieve" // stage 1b: CLIP ranks the gallery
	StageVerify   = "verify"   // stage 2: propositions checked by the verifier, re-rank
	StageEvaluate = "evaluate" // stage 3: the evaluator judges the top few
	StageAsk      = "ask"      // chat: choosing the question to ask back
)

// Stage statuses.
const (
	StatusStarted = "started"
	StatusDone    = "done"
	StatusSkipped = "skipped"
	StatusFailed  = "failed"
	StatusPending = "pending" // on partial results: not finished yet
)

// Searcher runs one query through the configured stages. observe, when not
// nil, is called (from the searching goroutine) as each stage starts and
// finishes. Search must stop promptly, model calls included, when ctx ends.
type Searcher interface {
	Search(ctx context.Context, q Query, observe func(StageEvent)) (*Result, error)
}

// Query is one search as the Searcher receives it.
type Query struct {
	// Text is the instruction: a description (text-to-image), the change to
	// make (composed) or the newest turn (chat).
	Text string
	// Reference is a gallery name used as the reference image ("" if none).
	Reference string
	// ReferenceImage is an uploaded reference image (nil if none). At most
	// one of Reference and ReferenceImage is set.
	ReferenceImage image.Image
	// Dialogue holds the earlier turns of a chat, oldest first (Dialogue[0]
	// is the opening description); Text is the newest turn.
	Dialogue []string
	// Chat marks a chat query even before it has earlier turns (the
	// opening description alone).
	Chat bool
	// Stages selects stages and parameters.
	Stages StageOptions
	// Limit is the number of ranked results wanted (> 0).
	Limit int
	// Conversation names a chat whose earlier turns the searcher may have
	// kept ("" for a new one); the result says which conversation it was.
	Conversation string
	// Ask asks for the question to ask the user next (Result.Ask); text
	// and chat queries only.
	Ask bool
}

// Mode names the kind of retrieval a query asks for: "text", "composed",
// "chat", or "similar" (a reference image and no text: more like this).
func (q Query) Mode() string {
	switch {
	case q.Chat || len(q.Dialogue) > 0:
		return "chat"
	case (q.Reference != "" || q.ReferenceImage != nil) && q.Text == "":
		return "similar"
	case q.Reference != "" || q.ReferenceImage != nil:
		return "composed"
	default:
		return "text"
	}
}

// StageOptions selects which stages run and with what parameters. Nil or
// zero fields mean "the engine's default".
type StageOptions struct {
	// Verify and Evaluate switch stages 2 and 3 off (false) or leave them to
	// the configuration (nil or true: run when the role is configured).
	Verify   *bool `json:"verify,omitempty"`
	Evaluate *bool `json:"evaluate,omitempty"`
	// Reason false skips the reasoner and embeds the raw text.
	Reason *bool `json:"reason,omitempty"`
	// TopK is stage 2's K (candidates verified); Alpha is stage 3's count.
	TopK  int `json:"top_k,omitempty"`
	Alpha int `json:"alpha,omitempty"`
	// Tau weighs caption similarity against image similarity.
	Tau *float64 `json:"tau,omitempty"`
}

// Result is a finished search.
type Result struct {
	// Hits is the final ranking, best first, at most Query.Limit long.
	Hits []Hit `json:"results"`
	// Descriptions are the target descriptions stage 1 embedded.
	Descriptions []string `json:"descriptions"`
	// Instructions are the atomic instructions of stage 1a, [type, content].
	Instructions [][2]string `json:"instructions,omitempty"`
	// Propositions are stage 2's yes/no questions with the answer the
	// target should give.
	Propositions []Proposition `json:"propositions,omitempty"`
	// Stages traces every stage, skipped ones included.
	Stages []StageTrace `json:"stages"`
	// Notes are plain remarks on how the search ran (fallbacks, dropped
	// caption term, ...).
	Notes []string `json:"notes,omitempty"`
	// Degraded lists the stages that did without an unavailable model
	// role, and why; empty for a full answer.
	Degraded []Degradation `json:"degraded,omitempty"`
	// ElapsedMS is the search's wall time, filled by the server.
	ElapsedMS float64 `json:"elapsed_ms"`
	// Partial, on the early results a stream sends before the search ends,
	// names the stage they were taken after ("retrieve", "verify"); later
	// stages may still re-order them. Empty on the final result.
	Partial string `json:"partial,omitempty"`
	// Conversation names a chat so its next turn continues from this one
	// (send it back with the dialogue).
	Conversation string `json:"conversation,omitempty"`
	// Ask is the question proposed to the user next (requests with
	// "ask": true); its answer becomes the next chat turn.
	Ask *AskProposal `json:"ask,omitempty"`
}

// AskProposal is the question the engine asks back, and how it was chosen.
type AskProposal struct {
	// Question is the chosen question in the user's language ("" when no
	// question could be proposed; Note says why), English the same in
	// English.
	Question string `json:"question"`
	English  string `json:"english,omitempty"`
	// Language is the user's language as the questioner named it; Yes and
	// No are the quick answers in it (the next turn is "question? yes").
	Language string `json:"language,omitempty"`
	Yes      string `json:"yes"`
	No       string `json:"no"`
	// Rule is how the question was chosen: "verifier-split" (the
	// yes-fraction over the probed top candidates closest to 1/2) or
	// "first" (no verifier: the questioner's first question).
	Rule string `json:"rule"`
	// Probed is how many top candidates each question was checked on.
	Probed int `json:"probed"`
	// Candidates are every proposed question with its split, in the
	// questioner's order; Chosen indexes them (-1: none).
	Candidates []AskCandidate `json:"candidates"`
	Chosen     int            `json:"chosen"`
	Note       string         `json:"note,omitempty"`
}

// AskCandidate is one proposed question and how the probed candidates
// answered it.
type AskCandidate struct {
	Question string `json:"question"`
	English  string `json:"english"`
	Yes      int    `json:"yes"`
	Answered int    `json:"answered"`
	// Split is |yes/answered - 1/2|: 0 splits the candidates in half.
	Split float64 `json:"split"`
}

// Hit is one ranked gallery image with the reasons for its place.
type Hit struct {
	Rank  int     `json:"rank"` // 1-based final rank
	Name  string  `json:"name"`
	Score float64 `json:"score"` // stage-1 fused similarity
	// Stage1Rank is the rank after retrieval (before re-ranking).
	Stage1Rank int `json:"stage1_rank"`
	// Ranks is the rank after each stage that ran, with why it is there.
	Ranks []StageRank `json:"ranks,omitempty"`
	// Caption is the image's stored caption, and CaptionSimilarity the
	// cosine similarity between the image and that caption (both absent
	// when the gallery has none).
	Caption           string   `json:"caption,omitempty"`
	CaptionSimilarity *float64 `json:"caption_similarity,omitempty"`
	// Verification is stage 2's check of this image (nil if not verified).
	Verification *Verification `json:"verification,omitempty"`
	// Verdict is stage 3's judgement of this image (nil if not evaluated).
	Verdict *Verdict `json:"verdict,omitempty"`
	// ImageURL and ThumbURL are filled by the server.
	ImageURL string `json:"image_url"`
	ThumbURL string `json:"thumb_url"`
}

// StageRank is a result's rank after one stage and why it moved there.
type StageRank struct {
	Stage string `json:"stage"` // retrieve, verify, evaluate
	Rank  int    `json:"rank"`
	Why   string `json:"why"`
}

// Proposition is one yes/no question with the answer the target should give.
type Proposition struct {
	Question string `json:"question"`
	Expected bool   `json:"expected"`
}

// Verification is the verifier's answers for one candidate.
type Verification struct {
	// Score is the number of answers that matched (or the expected
	// agreement with soft scoring).
	Score   float64  `json:"score"`
	Answers []Answer `json:"answers"`
	Error   string   `json:"error,omitempty"`
}

// Answer is the verifier's answer to one proposition for one image.
type Answer struct {
	Question string   `json:"question"`
	Expected bool     `json:"expected"`
	Answer   bool     `json:"answer"`
	Match    bool     `json:"match"`
	PYes     *float64 `json:"p_yes,omitempty"`
	Raw      string   `json:"raw,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Verdict is the evaluator's judgement of one candidate.
type Verdict struct {
	Yes bool `json:"yes"`
	// Text is the evaluator's reply as written.
	Text string `json:"text"`
	// Reasoning is the reply without its "ANSWER: Yes/No" line: the
	// evaluator's explanation, to show beside the decision.
	Reasoning string `json:"reasoning,omitempty"`
	Error     string `json:"error,omitempty"`
}

// StageTrace reports how one stage went.
type StageTrace struct {
	Name       string  `json:"name"`
	Status     string  `json:"status"` // done, skipped, failed
	Reason     string  `json:"reason,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	// Calls is the number of model calls the stage made.
	Calls int `json:"calls,omitempty"`
}

// StageEvent reports a stage starting or finishing while a search runs.
type StageEvent struct {
	Stage      string  `json:"stage"`
	Status     string  `json:"status"` // started, done, skipped, failed
	Reason     string  `json:"reason,omitempty"`
	DurationMS float64 `json:"duration_ms,omitempty"`
	// Detail is a short human-readable summary ("3 descriptions",
	// "20 candidates x 4 questions").
	Detail string `json:"detail,omitempty"`
	// Results, when set on a stage's "done" event, are the results as that
	// stage left them (Result.Partial names the stage); a stream sends them
	// at once as a "partial" event so the client shows results before
	// later stages finish.
	Results *Result `json:"-"`
}

// StageInfo says whether a stage can run with the current configuration.
type StageInfo struct {
	Name       string `json:"name"`
	Configured bool   `json:"configured"`
	Reason     string `json:"reason,omitempty"` // why it is skipped
}

// RoleStats are one model role's call counters, for /metrics.
type RoleStats struct {
	Role        string
	Calls       int64
	CacheHits   int64
	CacheMisses int64
	Failures    int64
	Retries     int64
}

// Degradation says which stage of a search did without an unavailable
// model role and what was done instead.
type Degradation struct {
	Stage string `json:"stage"` // reason, retrieve, verify, evaluate
	// Round is the chat round (-1 for other queries).
	Round  int    `json:"round"`
	Reason string `json:"reason"`
}

// EndpointState is one model-server endpoint's circuit breaker.
type EndpointState struct {
	URL string `json:"url"`
	breaker.Status
}

// RoleState is a model role's availability: "closed" when an endpoint
// takes requests, "half-open" when a probe is being let through, "open"
// when every endpoint is in its cool-down (searches then do without it).
type RoleState struct {
	Role      string          `json:"role"`
	State     string          `json:"state"`
	LastError string          `json:"last_error,omitempty"`
	NextProbe time.Time       `json:"next_probe,omitzero"`
	Endpoints []EndpointState `json:"endpoints"`
}

// roleStates summarises endpoint breakers per role, sorted by role.
func roleStates(eps map[string][]EndpointState) []RoleState {
	out := []RoleState{}
	for role, es := range eps {
		rs := RoleState{Role: role, State: breaker.Open.String(), Endpoints: es}
		if len(es) == 0 {
			rs.State = breaker.Closed.String()
		}
		var lastAt time.Time
		for _, e := range es {
			switch e.State {
			case breaker.Closed:
				rs.State = breaker.Closed.String()
			case breaker.HalfOpen:
				if rs.State == breaker.Open.String() {
					rs.State = breaker.HalfOpen.String()
				}
			}
			if e.LastError != "" && !e.LastErrorAt.Before(lastAt) {
				rs.LastError, lastAt = e.URL+": "+e.LastError, e.LastErrorAt
			}
			if !e.NextProbe.IsZero() && (rs.NextProbe.IsZero() || e.NextProbe.Before(rs.NextProbe)) {
				rs.NextProbe = e.NextProbe
			}
		}
		if rs.State != breaker.Open.String() {
			rs.NextProbe = time.Time{}
		}
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b RoleState) int { return strings.Compare(a.Role, b.Role) })
	return out
}
