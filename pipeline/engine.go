package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
)

// Options are the method's parameters and the project's extensions.
type Options struct {
	// Tau weighs caption similarity against image similarity (0.15).
	Tau float32 `json:"tau"`
	// TopK is how many stage-1 candidates stage 2 verifies (20).
	TopK int `json:"top_k"`
	// Alpha is how many stage-2 candidates stage 3 evaluates (3).
	Alpha int `json:"alpha"`
	// Depth is how many ranked names results keep (100).
	Depth int `json:"depth"`
	// YesRule decides when a verifier reply means yes: "word" (yes as a
	// word, default) or "substring" (the reference code's rule).
	YesRule string `json:"yes_rule"`
	// Soft asks the verifier for log-probabilities and reports the soft
	// expected agreement beside the hard count.
	Soft bool `json:"soft"`
	// ReasonerMaxTokens, VerifierMaxTokens, EvaluatorMaxTokens cap replies
	// when set; 0 (the default) leaves the budget to the role's own
	// configuration (config roles.<role>.max_tokens), so that the budget
	// a run records for a role is the one its requests carry.
	ReasonerMaxTokens  int `json:"reasoner_max_tokens,omitempty"`
	VerifierMaxTokens  int `json:"verifier_max_tokens,omitempty"`
	EvaluatorMaxTokens int `json:"evaluator_max_tokens,omitempty"`
	// VerifierImageSide resizes the candidate to a square of this side
	// before verification (0: send the stored file; the paper used 400 for
	// chat-style VLMs).
	VerifierImageSide int `json:"verifier_image_side,omitempty"`
	// FailureThreshold is how many consecutive failed calls make a role's
	// next failure count as the role being unavailable (8); the next
	// success clears it.
	FailureThreshold int `json:"failure_threshold"`
	// InFlight bounds concurrent requests per role (role name -> limit;
	// missing = 8).
	InFlight map[modelrole.Name]int `json:"in_flight,omitempty"`
	// AskQuestions is how many questions the questioner proposes when the
	// engine asks back (3); AskProbe is how many top candidates each is
	// checked on by the verifier (10). See ask.go for the rule and cost.
	AskQuestions int `json:"ask_questions,omitempty"`
	AskProbe     int `json:"ask_probe,omitempty"`
}

// DefaultOptions returns the paper's parameters.
func DefaultOptions() Options {
	return Options{
		Tau: 0.15, TopK: 20, Alpha: 3, Depth: 100, YesRule: "word",
		FailureThreshold: 8, AskQuestions: 3, AskProbe: 10,
	}
}

func (o *Options) fill() error {
	d := DefaultOptions()
	o.TopK = cmp.Or(o.TopK, d.TopK)
	o.Alpha = cmp.Or(o.Alpha, d.Alpha)
	o.Depth = cmp.Or(o.Depth, d.Depth)
	o.YesRule = cmp.Or(o.YesRule, d.YesRule)
	o.FailureThreshold = cmp.Or(o.FailureThreshold, d.FailureThreshold)
	o.AskQuestions = cmp.Or(o.AskQuestions, d.AskQuestions)
	o.AskProbe = cmp.Or(o.AskProbe, d.AskProbe)
	switch {
	case o.Tau < 0 || o.Tau > 1:
		return fmt.Errorf("tau %g: must be within [0, 1]", o.Tau)
	case o.TopK < 0:
		return fmt.Errorf("top-k %d: must be positive", o.TopK)
	case o.Alpha < 0:
		return fmt.Errorf("alpha %d: must be positive", o.Alpha)
	case o.Depth < 0:
		return fmt.Errorf("depth %d: must be positive", o.Depth)
	case o.AskQuestions < 0 || o.AskProbe < 0:
		return fmt.Errorf("ask questions %d, ask probe %d: must be positive", o.AskQuestions, o.AskProbe)
	case o.ReasonerMaxTokens < 0 || o.VerifierMaxTokens < 0 || o.EvaluatorMaxTokens < 0:
		return fmt.Errorf("max tokens: must be >= 0 (0: the role's configured budget)")
	case o.YesRule != "word" && o.YesRule != "substring":
		return fmt.Errorf("yes rule %q: want word or substring", o.YesRule)
	}
	return nil
}

// Roles are the model roles; a nil role is not configured and the stages
// that need it are skipped.
type Roles struct {
	Captioner Chatter
	Reasoner  Chatter
	// Proposer writes stage-2 propositions; nil means the reasoner does.
	Proposer Chatter
	// Questioner proposes the next question of a chat; nil means the
	// reasoner does.
	Questioner Chatter
	Verifier   Chatter
	Evaluator  Chatter
}

// Config wires an Engine.
type Config struct {
	Embedder TextEmbedder
	Searcher Searcher
	Gallery  Gallery
	Images   ImageSource
	// ImageEmbedder embeds reference images that are not in the gallery
	// (or whose vectors the gallery does not hold) for image-only queries;
	// nil refuses such queries with an error that says so.
	ImageEmbedder ImageEmbedder
	// Decode decodes image bytes (stage 3 composition, resizing); nil uses
	// the standard library decoders registered in the binary.
	Decode func(b []byte) (image.Image, error)
	// Compose builds the stage-3 evaluator image; nil uses
	// imageio.SideBySide (the method's layout).
	Compose func(ref, cand image.Image) image.Image
	Roles   Roles
	Prompts *prompt.Library
	Options Options
	Log     *slog.Logger
}

// Engine runs the method for single queries (Search) and for benchmark
// runs (the Stage1/Stage2/Stage3 steps the run package schedules).
type Engine struct {
	cfg   Config
	opt   Options
	roles map[modelrole.Name]*role
	embed *limiter
	log   *slog.Logger
	// degrade answers with what the available roles allow when a role is
	// unavailable, saying so (Search); without it the query stage fails
	// and a benchmark unit stays unfinished, resumable.
	degrade bool
}

// New checks the wiring and returns an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Embedder == nil || cfg.Searcher == nil || cfg.Gallery == nil {
		return nil, errors.New("pipeline: embedder, searcher and gallery are required")
	}
	if cfg.Prompts == nil {
		lib, err := prompt.Load("")
		if err != nil {
			return nil, err
		}
		cfg.Prompts = lib
	}
	if err := cfg.Options.fill(); err != nil {
		return nil, fmt.Errorf("pipeline options: %w", err)
	}
	if cfg.Decode == nil {
		cfg.Decode = decodeStd
	}
	if cfg.Compose == nil {
		cfg.Compose = imageio.SideBySide
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, opt: cfg.Options, roles: map[modelrole.Name]*role{}, log: cfg.Log}
	add := func(name modelrole.Name, c Chatter) {
		if c == nil {
			return
		}
		n := 8
		if v, ok := cfg.Options.InFlight[name]; ok && v > 0 {
			n = v
		}
		e.roles[name] = &role{name: name, c: c, lim: newLimiter(n), threshold: int64(cfg.Options.FailureThreshold)}
	}
	add(modelrole.Captioner, cfg.Roles.Captioner)
	add(modelrole.Reasoner, cfg.Roles.Reasoner)
	add(modelrole.Proposer, cfg.Roles.Proposer)
	add(modelrole.Questioner, cfg.Roles.Questioner)
	add(modelrole.Verifier, cfg.Roles.Verifier)
	add(modelrole.Evaluator, cfg.Roles.Evaluator)
	for _, name := range []modelrole.Name{modelrole.Proposer, modelrole.Questioner} {
		if _, ok := e.roles[name]; !ok {
			if r, ok := e.roles[modelrole.Reasoner]; ok {
				e.roles[name] = r
			}
		}
	}
	ne := 2
	if v, ok := cfg.Options.InFlight[modelrole.Embedder]; ok && v > 0 {
		ne = v
	}
	e.embed = newLimiter(ne)
	return e, nil
}

// Options returns the effective options.
func (e *Engine) Options() Options { return e.opt }

// Prompts returns the prompt library in use.
func (e *Engine) Prompts() *prompt.Library { return e.cfg.Prompts }

// Has reports whether a role is configured.
func (e *Engine) Has(roleName modelrole.Name) bool { _, ok := e.roles[roleName]; return ok }

// SkipReason says why a stage cannot run ("" when it can).
func (e *Engine) SkipReason(stage int) string {
	switch stage {
	case 2:
		if !e.Has(modelrole.Proposer) {
			return "no reasoner or proposer configured (stage 2 needs one to write propositions)"
		}
		if !e.Has(modelrole.Verifier) {
			return "no verifier configured"
		}
	case 3:
		if !e.Has(modelrole.Evaluator) {
			return "no evaluator configured"
		}
	}
	return ""
}

// RoleStats are a role's counters since the engine started. Calls are the
// requests sent to the role's servers (failed ones included); CacheHits the
// answers the answer cache gave instead.
type RoleStats struct {
	Calls            int64 `json:"calls"`
	Failures         int64 `json:"failures"`
	CacheHits        int64 `json:"cache_hits"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	Down             bool  `json:"down,omitempty"`
}

// Stats returns counters per role.
func (e *Engine) Stats() map[string]RoleStats {
	out := map[string]RoleStats{}
	seen := map[*role]bool{}
	for _, name := range modelrole.Chat() {
		r, ok := e.roles[name]
		if !ok || seen[r] {
			continue
		}
		seen[r] = true
		out[string(name)] = RoleStats{
			Calls: r.calls.Load(), Failures: r.failures.Load(), CacheHits: r.hits.Load(),
			PromptTokens: r.ptok.Load(), CompletionTokens: r.ctok.Load(), Down: r.down.Load(),
		}
	}
	return out
}

// Down returns the roles whose last call found them unavailable.
func (e *Engine) Down() []modelrole.Name {
	var out []modelrole.Name
	for _, name := range modelrole.Chat() {
		if r, ok := e.roles[name]; ok && r.down.Load() && r.name == name {
			out = append(out, name)
		}
	}
	return out
}

// limiter bounds concurrent work. Waiters are served by priority (a later
// stage first, so queries already under way finish before new ones start
// on a shared role), then in arrival order.
type limiter struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters []*waiter
}

type waiter struct {
	prio  int
	seq   uint64
	ready chan struct{}
}

func newLimiter(n int) *limiter { return &limiter{free: n} }

func (l *limiter) acquire(ctx context.Context) error { return l.acquirePrio(ctx, 0) }

func (l *limiter) acquirePrio(ctx context.Context, prio int) error {
	l.mu.Lock()
	if l.free > 0 && len(l.waiters) == 0 {
		l.free--
		l.mu.Unlock()
		return nil
	}
	l.seq++
	w := &waiter{prio: prio, seq: l.seq, ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for i, x := range l.waiters {
			if x == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				l.mu.Unlock()
				return ctx.Err()
			}
		}
		l.mu.Unlock()
		// The slot was handed over just as ctx ended: give it back.
		l.release()
		return ctx.Err()
	}
}

func (l *limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiters) == 0 {
		l.free++
		return
	}
	best := 0
	for i, w := range l.waiters[1:] {
		b := l.waiters[best]
		if w.prio > b.prio || (w.prio == b.prio && w.seq < b.seq) {
			best = i + 1
		}
	}
	w := l.waiters[best]
	l.waiters = append(l.waiters[:best], l.waiters[best+1:]...)
	close(w.ready)
}

// role is one configured model role: bounded in-flight calls, counters,
// and whether its last calls found it unavailable. Calls are never refused
// here: the model client's per-endpoint circuit breakers decide, so a role
// that comes back is used again at once.
type role struct {
	name      modelrole.Name
	c         Chatter
	lim       *limiter
	threshold int64

	consecutive atomic.Int64
	down        atomic.Bool
	// trips counts the times a call found the role down; a call waiting
	// for a slot, or a fan-out of calls, that sees it change stops.
	trips atomic.Int64

	mu   sync.Mutex
	last error

	calls, failures, hits, ptok, ctok atomic.Int64
}

// chat sends one request through the role's in-flight limit. since is the
// role's trip count when the caller began (see role.trips): a role that
// went down after that is not asked again; the call fails at once with
// the role-down error that was reported.
func (r *role) chat(ctx context.Context, req ChatRequest, prio int, since int64) (*ChatResponse, error) {
	if err := r.lim.acquirePrio(ctx, prio); err != nil {
		return nil, err
	}
	defer r.lim.release()
	if r.trips.Load() != since {
		return nil, r.downErr()
	}
	resp, err := r.c.Chat(ctx, req)
	if err == nil && resp == nil {
		err = errors.New("empty response")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.calls.Add(1)
		r.failures.Add(1)
		r.mu.Lock()
		r.last = err
		r.mu.Unlock()
		if errors.Is(err, ErrRoleDown) {
			r.goDown()
			return nil, err
		}
		if r.consecutive.Add(1) >= r.threshold {
			// Too many calls failed in a row: report the role unavailable.
			r.goDown()
			return nil, &RoleDownError{Role: r.name, Last: err}
		}
		if msg := err.Error(); strings.HasPrefix(msg, string(r.name)) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", r.name, err)
	}
	r.consecutive.Store(0)
	r.down.Store(false)
	if resp.Cached {
		r.hits.Add(1) // answered from the cache: no request was sent
	} else {
		r.calls.Add(1)
	}
	r.ptok.Add(int64(resp.PromptTokens))
	r.ctok.Add(int64(resp.CompletionTokens))
	return resp, nil
}

// goDown marks the role down and counts the trip.
func (r *role) goDown() {
	r.down.Store(true)
	r.trips.Add(1)
}

func (r *role) downErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rd *RoleDownError
	if errors.As(r.last, &rd) {
		return rd
	}
	return &RoleDownError{Role: r.name, Last: r.last}
}

// call runs one chat through a role and records it in calls. A role that is
// down is reported as an error the caller must propagate.
func (e *Engine) call(ctx context.Context, roleName modelrole.Name, req ChatRequest, c *Calls) (*ChatResponse, error) {
	return e.callSince(ctx, roleName, e.trips(roleName), req, c)
}

// trips is the role's trip count (see role.trips); 0 for a role not
// configured.
func (e *Engine) trips(roleName modelrole.Name) int64 {
	if r, ok := e.roles[roleName]; ok {
		return r.trips.Load()
	}
	return 0
}

// callSince is call for one of several calls begun together when the
// role's trip count was since: once any of them finds the role down, the
// others are not sent.
func (e *Engine) callSince(ctx context.Context, roleName modelrole.Name, since int64, req ChatRequest, c *Calls) (*ChatResponse, error) {
	r, ok := e.roles[roleName]
	if !ok {
		return nil, fmt.Errorf("%s not configured", roleName)
	}
	resp, err := r.chat(ctx, req, stagePriority(roleName), since)
	if errors.Is(err, ErrRoleDown) || (err != nil && ctx.Err() != nil) {
		return nil, err
	}
	c.add(roleName, resp, err)
	return resp, err
}

// stagePriority orders waiting calls on a role: later stages first.
func stagePriority(roleName modelrole.Name) int {
	switch roleName {
	case modelrole.Reasoner:
		return 1
	case modelrole.Proposer, modelrole.Verifier, modelrole.Questioner:
		return 2
	case modelrole.Evaluator:
		return 3
	}
	return 0
}

// roleDownAfter reports a role-down error for a stage that saw failures
// while the role went down: its results would carry failures caused by the
// outage, so the stage is left unfinished (resumable) instead.
func (e *Engine) roleDownAfter(roleName modelrole.Name, c *Calls) error {
	r, ok := e.roles[roleName]
	if !ok || !r.down.Load() {
		return nil
	}
	if c.Failures[string(roleName)] > 0 {
		return r.downErr()
	}
	return nil
}
