package pipeline

import (
	"context"
	"fmt"
	"image"
	"strings"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

// Request is one query for Engine.Search.
type Request struct {
	// Instruction is the query text (text-to-image: the description;
	// composed: the change to make to the reference).
	Instruction string `json:"instruction"`
	// Reference is a gallery image name used as the reference.
	Reference string `json:"reference,omitempty"`
	// ReferenceImage is a reference image from outside the gallery.
	ReferenceImage image.Image `json:"-"`
	// ReferenceCaption overrides the reference's caption (otherwise the
	// gallery caption, or the captioner when configured).
	ReferenceCaption string `json:"reference_caption,omitempty"`
	// Dialogue makes this a chat query: Dialogue[0] is the caption and
	// Dialogue[1..] the "question? answer" turns. Instruction is ignored.
	Dialogue []string `json:"dialogue,omitempty"`
	// Domain selects the prompt set (default "general", "chat" for dialogues).
	Domain string `json:"domain,omitempty"`
	// MaxStage is the last stage to run (1..3; 0 = 3).
	MaxStage int `json:"max_stage,omitempty"`
	// Subset restricts the ranking to these gallery names.
	Subset []string `json:"subset,omitempty"`
	// ExcludeReference removes the reference image from the ranking.
	ExcludeReference bool `json:"exclude_reference,omitempty"`
	// Depth is how many results to return (0 = the engine's depth).
	Depth int `json:"depth,omitempty"`
	// Per-query overrides of the engine's options (zero/nil = keep).
	Tau   *float32 `json:"tau,omitempty"`
	TopK  int      `json:"top_k,omitempty"`
	Alpha int      `json:"alpha,omitempty"`
	// NoReason embeds the raw text instead of asking the reasoner;
	// NoVerify and NoEvaluate switch stages 2 and 3 off.
	NoReason   bool `json:"no_reason,omitempty"`
	NoVerify   bool `json:"no_verify,omitempty"`
	NoEvaluate bool `json:"no_evaluate,omitempty"`
	// Resume is the state a chat's previous turn returned (Result.Chat):
	// when its turns begin the dialogue, only the new rounds run.
	Resume *ChatState `json:"-"`
	// Ask proposes the next question to ask the user after the last round
	// (Result.Ask): a text query is taken as a dialogue's opening line.
	// Composed queries (with a reference) cannot be asked back.
	Ask bool `json:"ask,omitempty"`
}

// Candidate is one ranked result.
type Candidate struct {
	Name string `json:"name"`
	// Score is the stage-1 fused similarity.
	Score float32 `json:"score"`
	// Agreement is the stage-2 count of verified propositions (nil when
	// the candidate was not verified).
	Agreement *int `json:"agreement,omitempty"`
	// Soft is the stage-2 expected agreement from log-probabilities.
	Soft *float64 `json:"soft,omitempty"`
	// Verdict is the stage-3 decision ("yes", "no", "failed"; "" when not evaluated).
	Verdict string `json:"verdict,omitempty"`
	// Caption is the image's stored caption ("" without one).
	Caption string `json:"caption,omitempty"`
	// CaptionSimilarity is the cosine similarity between the image and its
	// caption (nil when the gallery cannot tell).
	CaptionSimilarity *float32 `json:"caption_similarity,omitempty"`
	// Ranks is the image's rank after each stage that ran, with why.
	Ranks []StageRank `json:"ranks,omitempty"`
}

// StageRank is a result's 1-based rank after one stage and why it is there.
type StageRank struct {
	Stage int    `json:"stage"`
	Rank  int    `json:"rank"`
	Why   string `json:"why"`
}

// StageTrace is what one stage did for one query (or chat round).
type StageTrace struct {
	Stage int `json:"stage"`
	// Round is the chat round (-1 for other queries).
	Round   int           `json:"round"`
	Skipped string        `json:"skipped,omitempty"`
	Stage1  *Stage1       `json:"stage1,omitempty"`
	Stage2  *Stage2       `json:"stage2,omitempty"`
	Stage3  *Stage3       `json:"stage3,omitempty"`
	Ranking []string      `json:"ranking"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Started marks the start notice RunQuery sends before a stage.
	Started bool `json:"-"`
}

// StageEvent is reported to Search's observer as each stage starts
// (Started true, no trace) and finishes.
type StageEvent struct {
	StageTrace
	Started bool `json:"started,omitempty"`
	// Rounds is the number of chat rounds (0 for other queries).
	Rounds int `json:"rounds,omitempty"`
	// Ranking is, when a stage of the final round finishes, the results as
	// that stage left them (first results at once, refined by later stages).
	Ranking []Candidate `json:"ranking,omitempty"`
}

// Result is the outcome of Engine.Search.
type Result struct {
	// Ranking is the final ranking (the last round's, for chat queries).
	Ranking []Candidate `json:"ranking"`
	// Stages holds every stage trace in order (all rounds for chat).
	Stages []StageTrace `json:"stages"`
	// Skipped maps a stage ("stage2", "stage3") to why it did not run.
	Skipped map[string]string `json:"skipped,omitempty"`
	// Chat is the state to resume the chat from on its next turn.
	Chat *ChatState `json:"chat,omitempty"`
	// Resumed is the number of chat rounds taken from Request.Resume
	// instead of being run again.
	Resumed int `json:"resumed,omitempty"`
	// Ask is the proposed next question (Request.Ask), and AskElapsed the
	// time choosing it took.
	Ask        *Ask          `json:"ask,omitempty"`
	AskElapsed time.Duration `json:"ask_elapsed_ns,omitempty"`
	// Degraded lists what was done without an unavailable role (empty
	// for a full answer).
	Degraded []Degradation `json:"degraded,omitempty"`
}

// Degradation says which stage of a search did without which role, and why.
type Degradation struct {
	Stage int `json:"stage"`
	// Round is the chat round (-1 for other queries).
	Round  int    `json:"round"`
	Reason string `json:"reason"`
}

// ChatState is what a chat keeps between turns, so that the next turn
// runs its own round only (no replay): the turns already run (the caption
// first) and the description carried into the next round.
type ChatState struct {
	Turns []string `json:"turns"`
	Carry string   `json:"carry,omitempty"`
}

// continues reports whether the dialogue extends the turns of st.
func (st *ChatState) continues(dialogue []string) bool {
	if st == nil || len(st.Turns) == 0 || len(st.Turns) >= len(dialogue) {
		return false
	}
	for i, t := range st.Turns {
		if dialogue[i] != t {
			return false
		}
	}
	return true
}

// Search runs one query through stages 1..MaxStage, calling observe (if
// not nil) as each stage starts and finishes. Stages whose roles are not
// configured are skipped and the reason is recorded in Result.Skipped.
//
// A chat continues from req.Resume when its turns are a prefix of the
// dialogue: only the new rounds run. Without it, earlier rounds run stage 1
// only (all a later round takes from them is the carried description);
// the last round runs every stage.
//
// A query with a reference image and no instruction searches by the image
// alone ("more like this"): stage 1 ranks by CLIP image-to-image
// similarity fused with caption similarity, the reference left out, and
// stages 2 and 3 are skipped (NoTextToVerify).
//
// A role that is unavailable does not fail the search: it is answered
// with what the other roles allow (a failed reasoner: CLIP on the raw
// text) and Result.Degraded says what was skipped and why.
func (e *Engine) Search(ctx context.Context, req Request, observe func(StageEvent)) (*Result, error) {
	maxStage := req.MaxStage
	if maxStage == 0 {
		maxStage = 3
	}
	if maxStage < 1 || maxStage > 3 {
		return nil, fmt.Errorf("max stage %d: want 1, 2 or 3", maxStage)
	}
	e, err := e.override(req)
	if err != nil {
		return nil, err
	}
	if !e.degrade {
		c := *e
		c.degrade = true
		e = &c
	}
	domain := req.Domain
	chat := len(req.Dialogue) > 0
	byImage := !chat && strings.TrimSpace(req.Instruction) == "" && (req.Reference != "" || req.ReferenceImage != nil)
	res := &Result{Skipped: map[string]string{}}
	for st := 2; st <= 3; st++ {
		key := fmt.Sprintf("stage%d", st)
		if byImage {
			res.Skipped[key] = NoTextToVerify
		} else if (st == 2 && req.NoVerify) || (st == 3 && req.NoEvaluate) {
			res.Skipped[key] = "switched off for this query"
		} else if st > maxStage {
			res.Skipped[key] = fmt.Sprintf("not requested (last stage %d)", maxStage)
		} else if r := e.SkipReason(st); r != "" {
			res.Skipped[key] = r
		}
	}
	if byImage {
		res.Skipped["reasoning"] = "search by image: the reference image's embedding is the query"
	} else if !e.Has(modelrole.Reasoner) {
		res.Skipped["reasoning"] = "no reasoner configured: stage 1 embeds the raw query text"
	}
	if !e.cfg.Gallery.HasCaptions() {
		res.Skipped["captions"] = "the gallery has no captions: the caption term is dropped (tau treated as 0)"
	}
	if domain == "" {
		domain = "general"
		if chat {
			domain = "chat"
		}
	}
	if !e.cfg.Prompts.HasDomain(domain) {
		return nil, fmt.Errorf("unknown prompt domain %q (known: %s)", domain, strings.Join(e.cfg.Prompts.DomainNames(), ", "))
	}
	if !chat && !byImage && strings.TrimSpace(req.Instruction) == "" {
		return nil, fmt.Errorf("empty query: give an instruction, a reference image or a dialogue")
	}
	if req.Ask && !chat && (req.Reference != "" || req.ReferenceImage != nil) {
		return nil, fmt.Errorf("asking back works for text and chat queries, not composed ones (with a reference image)")
	}
	if req.Ask && !e.Has(modelrole.Questioner) {
		return nil, fmt.Errorf("asking back needs a questioner or a reasoner: configure roles.reasoner (or roles.questioner)")
	}
	depth := req.Depth
	if depth <= 0 {
		depth = e.opt.Depth
	}
	var queries []Query
	first := 0
	carry := ""
	if chat {
		if req.Resume.continues(req.Dialogue) {
			first, carry = len(req.Resume.Turns), req.Resume.Carry
			res.Resumed = first
		}
		for r := first; r < len(req.Dialogue); r++ {
			queries = append(queries, Query{ID: "query", Round: r, Chat: true, Domain: domain, Instruction: req.Dialogue[r], Subset: req.Subset})
		}
	} else {
		queries = []Query{{
			ID: "query", Round: -1, Domain: domain, Instruction: req.Instruction,
			Reference: req.Reference, ReferenceImage: req.ReferenceImage, ReferenceCaption: req.ReferenceCaption,
			Subset: req.Subset, ExcludeReference: req.ExcludeReference || byImage,
		}}
	}
	var cur Outcome
	lastRound := len(req.Dialogue) - 1
	if !chat {
		lastRound = -1
	}
	emit := func(t StageTrace) {
		if t.Started {
			if observe != nil {
				t.Started = false
				observe(StageEvent{StageTrace: t, Started: true, Rounds: len(req.Dialogue)})
			}
			return
		}
		res.Stages = append(res.Stages, t)
		note := ""
		switch {
		case t.Stage1 != nil:
			note = t.Stage1.Degraded
		case t.Stage2 != nil:
			note = t.Stage2.Degraded
		case t.Stage3 != nil:
			note = t.Stage3.Degraded
		}
		if note != "" {
			res.Degraded = append(res.Degraded, Degradation{Stage: t.Stage, Round: t.Round, Reason: note})
		}
		if observe == nil {
			return
		}
		ev := StageEvent{StageTrace: t, Rounds: len(req.Dialogue)}
		if t.Round == lastRound {
			switch {
			case t.Stage1 != nil:
				cur = Outcome{S1: t.Stage1}
			case t.Stage2 != nil:
				cur.S2 = t.Stage2
			case t.Stage3 != nil:
				cur.S3 = t.Stage3
			}
			if cur.S1 != nil {
				ev.Ranking = e.candidates(&cur, depth)
			}
		}
		observe(ev)
	}
	var last []Candidate
	var final []string
	for qi := range queries {
		q := queries[qi]
		stages := maxStage
		if chat {
			q.Previous = ChatPrevious(q.Round, req.Dialogue, carry)
			if q.Round < lastRound {
				stages = 1
			}
		}
		out, err := e.RunQuery(ctx, q, stages, emit)
		if err != nil {
			return nil, err
		}
		if chat {
			carry = NextCarry(q.Round, req.Dialogue, carry, out.S1)
		}
		last = e.candidates(out, depth)
		final = out.Final()
	}
	if chat {
		res.Chat = &ChatState{Turns: append([]string(nil), req.Dialogue...), Carry: carry}
	}
	res.Ranking = last
	if req.Ask {
		dialogue := req.Dialogue
		if !chat {
			dialogue = []string{req.Instruction}
		}
		if observe != nil {
			observe(StageEvent{StageTrace: StageTrace{Stage: AskStage, Round: lastRound}, Started: true, Rounds: len(req.Dialogue)})
		}
		t0 := time.Now()
		a, err := e.AskNext(ctx, dialogue, final)
		if err != nil {
			return nil, err
		}
		res.Ask = a
		res.AskElapsed = time.Since(t0)
	}
	return res, nil
}

// ChatPrevious is the text standing in for the reference caption in chat
// round r: nothing at round 0, the dialogue caption at round 1, and the
// carried description after that.
func ChatPrevious(round int, dialogue []string, carry string) string {
	switch {
	case round <= 0:
		return ""
	case round == 1 || carry == "":
		return dialogue[0]
	}
	return carry
}

// NextCarry returns the description carried into the next round: the
// first description stage 1 produced in this round, unless the reasoner
// fell back, in which case the last good one is kept.
func NextCarry(round int, dialogue []string, carry string, s1 *Stage1) string {
	good := s1 != nil && len(s1.Descriptions) > 0 && strings.TrimSpace(s1.Descriptions[0]) != "" && !s1.fellBack()
	if good {
		return s1.Descriptions[0]
	}
	if carry == "" && round >= 0 && len(dialogue) > 0 {
		return dialogue[0]
	}
	return carry
}

func (s *Stage1) fellBack() bool {
	for _, f := range s.Fallbacks {
		switch f {
		case FallbackReasonerFailed, FallbackUnparseable, FallbackNoDescriptions:
			return true
		}
	}
	return false
}

// Outcome is everything the stages produced for one query or chat round.
type Outcome struct {
	S1 *Stage1
	S2 *Stage2
	S3 *Stage3
}

// Final returns the ranking after the last stage that ran.
func (o *Outcome) Final() []string {
	switch {
	case o.S3 != nil:
		return o.S3.Ranking
	case o.S2 != nil:
		return o.S2.Ranking
	case o.S1 != nil:
		return o.S1.Names()
	}
	return nil
}

// RunQuery runs stages 1..maxStage for one unit, reporting each stage.
func (e *Engine) RunQuery(ctx context.Context, q Query, maxStage int, emit func(StageTrace)) (*Outcome, error) {
	out := &Outcome{}
	for st := 1; st <= min(maxStage, 3); st++ {
		if emit != nil {
			emit(StageTrace{Stage: st, Round: q.Round, Started: true})
		}
		t0 := time.Now()
		if err := e.Step(ctx, q, st, out); err != nil {
			return nil, err
		}
		if emit != nil {
			emit(out.trace(st, q.Round, time.Since(t0)))
		}
	}
	return out, nil
}

// Step runs stage st (1, 2 or 3) of one unit and records its result in
// out, which must hold the results of the stages before it. This is the
// one stage sequence: RunQuery and the benchmark runner, which
// checkpoints each stage, both go through it. A chat unit's evaluator
// judges the running description stage 1 wrote (the dialogue itself is no
// instruction), unless q.EvalText is set.
func (e *Engine) Step(ctx context.Context, q Query, st int, out *Outcome) error {
	var err error
	switch st {
	case 1:
		out.S1, err = e.Stage1(ctx, q)
	case 2:
		if out.S1 == nil {
			return fmt.Errorf("stage 2 of query %s: stage 1 has not run", q.ID)
		}
		out.S2, err = e.Stage2(ctx, q, out.S1)
	case 3:
		if out.S1 == nil || out.S2 == nil {
			return fmt.Errorf("stage 3 of query %s: stages 1 and 2 have not run", q.ID)
		}
		if q.Chat && q.EvalText == "" && len(out.S1.Descriptions) > 0 {
			q.EvalText = out.S1.Descriptions[0]
		}
		out.S3, err = e.Stage3(ctx, q, out.S2.Ranking)
	default:
		return fmt.Errorf("query %s: no stage %d", q.ID, st)
	}
	return err
}

// trace is the report of stage st of out.
func (o *Outcome) trace(st, round int, elapsed time.Duration) StageTrace {
	t := StageTrace{Stage: st, Round: round, Elapsed: elapsed}
	switch st {
	case 1:
		t.Stage1, t.Ranking = o.S1, o.S1.Names()
	case 2:
		t.Stage2, t.Ranking, t.Skipped = o.S2, o.S2.Ranking, o.S2.Skipped
	case 3:
		t.Stage3, t.Ranking, t.Skipped = o.S3, o.S3.Ranking, o.S3.Skipped
	}
	return t
}

// candidates turns an outcome into the first depth results with the facts
// that explain each one's place: its caption and image-vs-caption
// similarity, and its rank after each stage with why it moved.
func (e *Engine) candidates(o *Outcome, depth int) []Candidate {
	names := o.Final()
	if len(names) > depth {
		names = names[:depth]
	}
	score := map[string]float32{}
	rank1 := map[string]int{}
	for i, r := range o.S1.Ranking {
		score[r.Name] = r.Score
		rank1[r.Name] = i + 1
	}
	agree := map[string]CandidateScore{}
	var rank2, rank3 map[string]int
	nprops := 0
	if o.S2 != nil && o.S2.Skipped == "" {
		for _, cs := range o.S2.Scores {
			agree[cs.Name] = cs
		}
		rank2 = positions(o.S2.Ranking)
		nprops = len(o.S2.Propositions)
	}
	verdict := map[string]string{}
	chosen := ""
	if o.S3 != nil && o.S3.Skipped == "" {
		for _, ev := range o.S3.Evaluations {
			switch {
			case ev.Error != "":
				verdict[ev.Candidate] = "failed"
			case ev.Yes:
				verdict[ev.Candidate] = "yes"
			default:
				verdict[ev.Candidate] = "no"
			}
		}
		rank3 = positions(o.S3.Ranking)
		chosen = o.S3.Chosen
	}
	gv, _ := e.cfg.Gallery.(GalleryVectors)
	out := make([]Candidate, len(names))
	for i, n := range names {
		c := Candidate{Name: n, Score: score[n], Verdict: verdict[n]}
		if cs, ok := agree[n]; ok {
			a := cs.Agreement
			c.Agreement = &a
			c.Soft = cs.Soft
		}
		if cap, ok := e.cfg.Gallery.Caption(n); ok {
			c.Caption = cap
		}
		if gv != nil {
			if sim, ok := gv.CaptionSimilarity(n); ok {
				c.CaptionSimilarity = &sim
			}
		}
		r1 := rank1[n]
		c.Ranks = []StageRank{{Stage: 1, Rank: r1, Why: fmt.Sprintf("fused similarity %.4f", score[n])}}
		prev := r1
		if rank2 != nil {
			r := rank2[n]
			why := "not verified (below the top K): keeps its place"
			if cs, ok := agree[n]; ok {
				why = fmt.Sprintf("agreed with %d of %d propositions", cs.Agreement, nprops)
				if cs.Failed {
					why = "verification failed: scored 0"
				}
			}
			c.Ranks = append(c.Ranks, StageRank{Stage: 2, Rank: r, Why: why + movedText(prev, r)})
			prev = r
		}
		if rank3 != nil {
			r := rank3[n]
			var why string
			switch {
			case n == chosen:
				why = "judged yes: moved to the front"
			case verdict[n] == "no":
				why = "judged no"
			case verdict[n] == "failed":
				why = "judgement failed (counts as no)"
			case chosen != "" && r > prev:
				why = "the judged-yes image moved ahead of it"
			default:
				why = "not judged"
			}
			c.Ranks = append(c.Ranks, StageRank{Stage: 3, Rank: r, Why: why + movedText(prev, r)})
		}
		out[i] = c
	}
	return out
}

func positions(names []string) map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		m[n] = i + 1
	}
	return m
}

// movedText says how a rank changed: "" when it did not.
func movedText(from, to int) string {
	switch {
	case from == 0 || from == to:
		return ""
	case to < from:
		return fmt.Sprintf(" (up from #%d)", from)
	}
	return fmt.Sprintf(" (down from #%d)", from)
}

// override returns an engine with the request's per-query options; it
// shares roles, limits and counters with e.
func (e *Engine) override(req Request) (*Engine, error) {
	if req.Tau == nil && req.TopK == 0 && req.Alpha == 0 && !req.NoReason && !req.NoVerify && !req.NoEvaluate {
		return e, nil
	}
	c := *e
	if req.Tau != nil {
		c.opt.Tau = *req.Tau
	}
	if req.TopK != 0 {
		c.opt.TopK = req.TopK
	}
	if req.Alpha != 0 {
		c.opt.Alpha = req.Alpha
	}
	if err := c.opt.fill(); err != nil {
		return nil, err
	}
	c.cfg.Options = c.opt
	c.roles = map[modelrole.Name]*role{}
	for k, v := range e.roles {
		c.roles[k] = v
	}
	if req.NoReason {
		delete(c.roles, modelrole.Reasoner)
	}
	if req.NoVerify {
		delete(c.roles, modelrole.Verifier)
	}
	if req.NoEvaluate {
		delete(c.roles, modelrole.Evaluator)
	}
	return &c, nil
}
