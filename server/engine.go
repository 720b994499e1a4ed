package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
)

// EngineSearcher runs searches on a pipeline.Engine and turns its traces
// into the API's explanation: descriptions, propositions, every verifier
// answer per candidate and the evaluator's verdicts.
type EngineSearcher struct {
	Engine *pipeline.Engine
	// Domain selects the prompt set for text and composed queries ("" =
	// general; chats always use the chat prompts).
	Domain string
	// MaxStage is the last stage run (1..3; 0 = 3).
	MaxStage int

	chats chatStore
}

// NewEngineSearcher wraps e.
func NewEngineSearcher(e *pipeline.Engine, domain string) *EngineSearcher {
	return &EngineSearcher{Engine: e, Domain: domain}
}

// maxChats bounds the chats whose state is kept between turns; the least
// recently used is forgotten first (its next turn re-reads the dialogue).
const maxChats = 1024

// chatStore keeps each conversation's pipeline.ChatState so a turn runs
// its own round only.
type chatStore struct {
	mu    sync.Mutex
	seq   uint64
	state map[string]chatEntry
}

type chatEntry struct {
	st   *pipeline.ChatState
	used uint64
}

func (c *chatStore) get(id string) *pipeline.ChatState {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.state[id]
	if !ok {
		return nil
	}
	c.seq++
	e.used = c.seq
	c.state[id] = e
	return e.st
}

func (c *chatStore) put(id string, st *pipeline.ChatState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		c.state = map[string]chatEntry{}
	}
	c.seq++
	c.state[id] = chatEntry{st: st, used: c.seq}
	for len(c.state) > maxChats {
		oldest, used := "", uint64(0)
		for k, e := range c.state {
			if oldest == "" || e.used < used {
				oldest, used = k, e.used
			}
		}
		delete(c.state, oldest)
	}
}

func newConversationID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// EngineStages says which stages e can run and why the others are skipped.
func EngineStages(e *pipeline.Engine) []StageInfo {
	out := []StageInfo{{Name: StageReason, Configured: e.Has(modelrole.Reasoner)}}
	if !out[0].Configured {
		out[0].Reason = "no reasoner configured: the query text is embedded as it is"
	}
	out = append(out, StageInfo{Name: StageRetrieve, Configured: true})
	for i, name := range []string{StageVerify, StageEvaluate} {
		r := e.SkipReason(i + 2)
		out = append(out, StageInfo{Name: name, Configured: r == "", Reason: r})
	}
	return out
}

// EngineStats reports e's model call counters for /metrics.
func EngineStats(e *pipeline.Engine) []RoleStats {
	var out []RoleStats
	for role, st := range e.Stats() {
		out = append(out, RoleStats{Role: role, Calls: st.Calls, CacheHits: st.CacheHits,
			CacheMisses: st.Calls - st.CacheHits, Failures: st.Failures})
	}
	slices.SortFunc(out, func(a, b RoleStats) int { return strings.Compare(a.Role, b.Role) })
	return out
}

// request translates a server query into a pipeline request.
func (s *EngineSearcher) request(q Query) pipeline.Request {
	req := pipeline.Request{
		Instruction:    q.Text,
		Reference:      q.Reference,
		ReferenceImage: q.ReferenceImage,
		Domain:         s.Domain,
		MaxStage:       s.MaxStage,
		Depth:          q.Limit,
		TopK:           q.Stages.TopK,
		Alpha:          q.Stages.Alpha,
		NoReason:       q.Stages.Reason != nil && !*q.Stages.Reason,
		NoVerify:       q.Stages.Verify != nil && !*q.Stages.Verify,
		NoEvaluate:     q.Stages.Evaluate != nil && !*q.Stages.Evaluate,
		Ask:            q.Ask,
	}
	if q.Stages.Tau != nil {
		t := float32(*q.Stages.Tau)
		req.Tau = &t
	}
	if q.Mode() == "chat" {
		// Dialogue[0] is the opening description, the newest turn comes
		// last; the kept state of the conversation's earlier turns lets the
		// pipeline run the newest round only.
		req.Dialogue = append(slices.Clone(q.Dialogue), q.Text)
		req.Domain = ""
		req.Instruction = ""
		if q.Conversation != "" {
			req.Resume = s.chats.get(q.Conversation)
		}
	}
	return req
}

// Search implements Searcher. Each stage of the final round that finishes
// is reported with the results as it left it (StageEvent.Results), so a
// stream shows results at once and refines them in place.
func (s *EngineSearcher) Search(ctx context.Context, q Query, observe func(StageEvent)) (*Result, error) {
	req := s.request(q)
	if req.Ask && !s.Engine.Has(modelrole.Questioner) {
		return nil, errorf(http.StatusBadRequest, "ask: %s", EngineAskInfo(s.Engine).Reason)
	}
	byImage := q.Mode() == "similar"
	reasonOff := byImage || req.NoReason || !s.Engine.Has(modelrole.Reasoner)
	off := map[int]string{}
	if req.NoVerify {
		off[2] = "switched off for this query"
	}
	if req.NoEvaluate {
		off[3] = "switched off for this query"
	}
	if byImage {
		off[2], off[3] = pipeline.NoTextToVerify, pipeline.NoTextToVerify
	}
	var obs func(pipeline.StageEvent)
	if observe != nil {
		var sofar []pipeline.StageTrace
		obs = func(ev pipeline.StageEvent) {
			events := stageEvents(ev, reasonOff, byImage, off)
			if !ev.Started && ev.Ranking != nil && ev.Stage < 3 && ev.Skipped == "" {
				if ev.Stage == 1 {
					sofar = sofar[:0]
				}
				sofar = append(sofar, ev.StageTrace)
				partial := convertResult(&pipeline.Result{Ranking: ev.Ranking, Stages: sofar, Skipped: map[string]string{}}, reasonOff, len(req.Dialogue), 0)
				partial.Partial = map[int]string{1: StageRetrieve, 2: StageVerify}[ev.Stage]
				for i := range partial.Stages {
					if st := &partial.Stages[i]; st.Status == StatusSkipped && st.Reason == "not run" {
						st.Status, st.Reason = StatusPending, ""
						if i < 2 {
							continue
						}
						r := off[i]
						if r == "" {
							r = s.Engine.SkipReason(i)
						}
						if r == "" && s.MaxStage > 0 && i > s.MaxStage {
							r = fmt.Sprintf("not requested (last stage %d)", s.MaxStage)
						}
						if r != "" {
							st.Status, st.Reason = StatusSkipped, r
						}
					}
				}
				events[len(events)-1].Results = partial
			}
			for _, se := range events {
				observe(se)
			}
		}
	}
	res, err := s.Engine.Search(ctx, req, obs)
	if err != nil {
		return nil, err
	}
	out := convertResult(res, reasonOff, len(req.Dialogue), res.Resumed)
	if res.Ask != nil {
		out.Ask = convertAsk(res.Ask)
		st := StageTrace{Name: StageAsk, Status: StatusDone, DurationMS: ms(res.AskElapsed), Calls: callCount(res.Ask.Calls)}
		if out.Ask.Question == "" {
			st.Status, st.Reason = StatusFailed, out.Ask.Note
		}
		out.Stages = append(out.Stages, st)
	}
	if res.Chat != nil {
		id := q.Conversation
		if id == "" {
			id = newConversationID()
		}
		s.chats.put(id, res.Chat)
		out.Conversation = id
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func roundPrefix(ev pipeline.StageEvent) string {
	if ev.Rounds > 0 && ev.Round >= 0 {
		return fmt.Sprintf("round %d of %d: ", ev.Round+1, ev.Rounds)
	}
	return ""
}

// EngineAskInfo says whether e can ask back, and why not.
func EngineAskInfo(e *pipeline.Engine) StageInfo {
	in := StageInfo{Name: StageAsk, Configured: e.Has(modelrole.Questioner)}
	switch {
	case !in.Configured:
		in.Reason = "asking back needs a reasoner (or questioner) to propose questions"
	case !e.Has(modelrole.Verifier):
		in.Reason = "no verifier: the questioner's first question is offered without checking how it splits the candidates"
	}
	return in
}

// convertAsk builds the API's view of a proposed question.
func convertAsk(a *pipeline.Ask) *AskProposal {
	p := &AskProposal{Rule: a.Rule, Probed: len(a.Probed), Language: a.Language, Yes: a.Yes, No: a.No, Chosen: a.Chosen, Candidates: []AskCandidate{}}
	for _, q := range a.Questions {
		p.Candidates = append(p.Candidates, AskCandidate{Question: q.Shown, English: q.English, Yes: q.Yes, Answered: q.Answered, Split: q.Split})
	}
	if b := a.Best(); b != nil {
		p.Question, p.English = b.Shown, b.English
		return p
	}
	switch {
	case a.Error != "":
		p.Note = "the questioner failed: " + a.Error
	default:
		p.Note = "the questioner proposed no usable question"
	}
	return p
}

// stageEvents maps one pipeline event to the API's stage events (stage 1
// is reported as its two halves, reason and retrieve).
func stageEvents(ev pipeline.StageEvent, reasonOff, byImage bool, off map[int]string) []StageEvent {
	pre := roundPrefix(ev)
	switch ev.Stage {
	case pipeline.AskStage:
		if ev.Started {
			return []StageEvent{{Stage: StageAsk, Status: StatusStarted, Detail: "choosing a question to ask you"}}
		}
		return nil
	case 1:
		if ev.Started {
			if reasonOff {
				why := "no reasoner: the query text is embedded as it is"
				if byImage {
					why = "search by image: nothing to reason about"
				}
				return []StageEvent{
					{Stage: StageReason, Status: StatusSkipped, Reason: why},
					{Stage: StageRetrieve, Status: StatusStarted, Detail: pre + "ranking the gallery"},
				}
			}
			return []StageEvent{{Stage: StageReason, Status: StatusStarted, Detail: pre + "writing target descriptions"}}
		}
		s1 := ev.Stage1
		var out []StageEvent
		if !reasonOff {
			e := StageEvent{Stage: StageReason, Status: StatusDone}
			if s1 != nil {
				e.Detail = pre + plural(len(s1.Descriptions), "description")
				switch {
				case s1.Error != "" && s1.Degraded != "":
					e.Status, e.Reason = StatusSkipped, s1.Degraded
				case s1.Error != "":
					e.Status, e.Reason = StatusFailed, "reasoner failed; the fallback was used: "+s1.Error
				}
			}
			out = append(out, e)
		}
		e := StageEvent{Stage: StageRetrieve, Status: StatusDone, DurationMS: ms(ev.Elapsed)}
		if s1 != nil {
			e.Detail = pre + plural(len(s1.Ranking), "candidate") + " ranked"
		}
		return append(out, e)
	case 2, 3:
		name := StageVerify
		if ev.Stage == 3 {
			name = StageEvaluate
		}
		switch {
		case ev.Started:
			return []StageEvent{{Stage: name, Status: StatusStarted, Detail: strings.TrimSuffix(pre, ": ")}}
		case ev.Skipped != "":
			reason := off[ev.Stage]
			if reason == "" {
				reason = ev.Skipped
			}
			return []StageEvent{{Stage: name, Status: StatusSkipped, Reason: reason}}
		}
		e := StageEvent{Stage: name, Status: StatusDone, DurationMS: ms(ev.Elapsed)}
		if s2 := ev.Stage2; s2 != nil {
			e.Detail = pre + fmt.Sprintf("%s x %s", plural(len(s2.Scores), "candidate"), plural(len(s2.Propositions), "question"))
		}
		if s3 := ev.Stage3; s3 != nil {
			e.Detail = pre + plural(len(s3.Evaluations), "judgement")
			if s3.Chosen != "" {
				e.Detail += ", accepted " + s3.Chosen
			}
		}
		return []StageEvent{e}
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func callCount(c pipeline.Calls) int {
	n := 0
	for _, v := range c.Calls {
		n += v
	}
	return n
}

// convertResult builds the API result from the pipeline's: the final
// ranking explained by the last round's stage traces.
func convertResult(res *pipeline.Result, reasonOff bool, rounds, resumed int) *Result {
	tr := lastTraces(res)
	out := &Result{}
	tr.stages(out, res, reasonOff)
	out.Notes = tr.notes(res, rounds, resumed)
	tr.explain(out, res)
	return out
}

// traces are a result's last stage traces (of the last round), nil where
// a stage has none.
type traces struct {
	t1, t2, t3 *pipeline.StageTrace
	s1         *pipeline.Stage1
	s2         *pipeline.Stage2
	s3         *pipeline.Stage3
}

func lastTraces(res *pipeline.Result) traces {
	var tr traces
	for i := range res.Stages {
		st := &res.Stages[i]
		switch st.Stage {
		case 1:
			tr.t1, tr.s1 = st, st.Stage1
		case 2:
			tr.t2, tr.s2 = st, st.Stage2
		case 3:
			tr.t3, tr.s3 = st, st.Stage3
		}
	}
	return tr
}

// stages sets the result's stage traces, stage 1's descriptions and
// instructions, and the degradations.
func (tr traces) stages(out *Result, res *pipeline.Result, reasonOff bool) {
	s1 := tr.s1
	reason := StageTrace{Name: StageReason, Status: StatusDone}
	switch {
	case reasonOff:
		reason.Status = StatusSkipped
		reason.Reason = res.Skipped["reasoning"]
		if reason.Reason == "" {
			reason.Reason = "switched off for this query: the query text is embedded as it is"
		}
	case s1 != nil && s1.Error != "" && s1.Degraded != "":
		reason.Status = StatusSkipped
		reason.Reason = s1.Degraded
	case s1 != nil && s1.Error != "":
		reason.Status = StatusFailed
		reason.Reason = "reasoner failed; the fallback was used: " + s1.Error
	}
	retrieve := StageTrace{Name: StageRetrieve, Status: StatusDone}
	if tr.t1 != nil {
		retrieve.DurationMS = ms(tr.t1.Elapsed)
	}
	if s1 != nil {
		retrieve.Calls = callCount(s1.Calls)
		out.Descriptions = s1.Descriptions
		if len(out.Descriptions) == 0 && !s1.ByImage {
			out.Descriptions = s1.Embedded
		}
		for _, a := range s1.Atomic {
			out.Instructions = append(out.Instructions, [2]string{a.Type, a.Content})
		}
	}
	out.Stages = []StageTrace{reason, retrieve, laterStage(StageVerify, "stage2", tr.t2, res), laterStage(StageEvaluate, "stage3", tr.t3, res)}
	if tr.s2 != nil {
		out.Stages[2].Calls = callCount(tr.s2.Calls)
	}
	if tr.s3 != nil {
		out.Stages[3].Calls = callCount(tr.s3.Calls)
	}
	for _, d := range res.Degraded {
		name := map[int]string{1: StageReason, 2: StageVerify, 3: StageEvaluate}[d.Stage]
		out.Degraded = append(out.Degraded, Degradation{Stage: name, Round: d.Round, Reason: d.Reason})
	}
}

// notes explains to people what the result does not show by itself:
// missing captions, how a chat was run, more-like-this ranking and the
// fallbacks taken (each once).
func (tr traces) notes(res *pipeline.Result, rounds, resumed int) []string {
	var notes []string
	if n := res.Skipped["captions"]; n != "" {
		notes = append(notes, n)
	}
	switch {
	case rounds > 1 && resumed > 0:
		notes = append(notes, fmt.Sprintf("chat: round %d of %d ran on its own, continuing from the kept state of the earlier turns; the explanation shows this round", rounds, rounds))
	case rounds > 1:
		notes = append(notes, fmt.Sprintf("chat: the earlier turns were re-read (stage 1 only) to rebuild the running description over %s; the explanation shows the last round", plural(rounds, "round")))
	}
	if tr.s1 != nil && tr.s1.ByImage {
		note := "more like this: ranked by CLIP image-to-image similarity"
		if tr.s1.Tau > 0 {
			note += fmt.Sprintf(" fused with caption similarity (tau %.2f)", tr.s1.Tau)
		}
		notes = append(notes, note+"; the reference itself is left out")
	}
	var fallbacks []string
	for _, c := range []*pipeline.Calls{callsOf1(tr.s1), callsOf2(tr.s2), callsOf3(tr.s3)} {
		if c != nil {
			fallbacks = append(fallbacks, c.Fallbacks...)
		}
	}
	seen := map[string]bool{}
	for _, f := range fallbacks {
		if seen[f] {
			continue
		}
		seen[f] = true
		if text, ok := fallbackText[f]; ok {
			notes = append(notes, text+" ("+f+")")
		} else {
			notes = append(notes, "fallback taken: "+f)
		}
	}
	return notes
}

// explain sets the propositions and the hits: every ranked image with its
// stage-1 rank, the verifier's answers and the evaluator's verdict.
func (tr traces) explain(out *Result, res *pipeline.Result) {
	stage1Rank := map[string]int{}
	if tr.s1 != nil {
		for i, r := range tr.s1.Ranking {
			stage1Rank[r.Name] = i + 1
		}
	}
	answers := map[string][]Answer{}
	failed := map[string]bool{}
	if s2 := tr.s2; s2 != nil {
		for _, p := range s2.Propositions {
			out.Propositions = append(out.Propositions, Proposition{Question: p.Question, Expected: p.Expected})
		}
		vs := slices.Clone(s2.Verifications)
		sort.SliceStable(vs, func(i, j int) bool { return vs[i].Question < vs[j].Question })
		for _, v := range vs {
			a := Answer{Answer: v.Yes, Match: v.Agrees, PYes: v.PYes, Raw: v.Reply, Error: v.Error}
			if v.Question >= 0 && v.Question < len(s2.Propositions) {
				a.Question = s2.Propositions[v.Question].Question
				a.Expected = s2.Propositions[v.Question].Expected
			}
			answers[v.Candidate] = append(answers[v.Candidate], a)
		}
		for _, cs := range s2.Scores {
			if cs.Failed {
				failed[cs.Name] = true
			}
		}
	}
	verdicts := map[string]*Verdict{}
	if tr.s3 != nil {
		for _, ev := range tr.s3.Evaluations {
			verdicts[ev.Candidate] = &Verdict{Yes: ev.Yes, Text: ev.Reply, Reasoning: pipeline.EvaluatorReasoning(ev.Reply), Error: ev.Error}
		}
	}
	out.Hits = make([]Hit, 0, len(res.Ranking))
	for _, c := range res.Ranking {
		h := Hit{Name: c.Name, Score: float64(c.Score), Stage1Rank: stage1Rank[c.Name], Verdict: verdicts[c.Name], Caption: c.Caption}
		if c.CaptionSimilarity != nil {
			v := float64(*c.CaptionSimilarity)
			h.CaptionSimilarity = &v
		}
		for _, r := range c.Ranks {
			h.Ranks = append(h.Ranks, StageRank{Stage: stageName[r.Stage], Rank: r.Rank, Why: r.Why})
		}
		if c.Agreement != nil || len(answers[c.Name]) > 0 {
			v := &Verification{Answers: answers[c.Name]}
			if c.Agreement != nil {
				v.Score = float64(*c.Agreement)
			}
			if failed[c.Name] {
				v.Error = "verification failed for this image"
			}
			h.Verification = v
		}
		out.Hits = append(out.Hits, h)
	}
}

var stageName = map[int]string{1: StageRetrieve, 2: StageVerify, 3: StageEvaluate}

// fallbackText explains the pipeline's fallbacks to people.
var fallbackText = map[string]string{
	pipeline.FallbackReasonerFailed:  "the reasoner call failed: the query was used as it is",
	pipeline.FallbackUnparseable:     "the reasoner's reply could not be read: the query was used as it is",
	pipeline.FallbackNoDescriptions:  "the reasoner wrote no target descriptions: the reference caption was used",
	pipeline.FallbackNoCaption:       "the reference image has no caption (no captioner configured for uploads)",
	pipeline.FallbackNoDescEmbed:     "no descriptions: the query text itself was embedded",
	pipeline.FallbackProposerFailed:  "writing propositions failed: no re-ranking",
	pipeline.FallbackNoPropositions:  "no usable propositions: no re-ranking",
	pipeline.FallbackVerifierFailed:  "some verifier calls failed: those candidates scored 0",
	pipeline.FallbackImageMissing:    "a candidate image could not be read",
	pipeline.FallbackEvaluatorFailed: "some evaluator calls failed",
	pipeline.FallbackReferenceImage:  "the reference image could not be read: a black placeholder was used",
}

func callsOf1(s *pipeline.Stage1) *pipeline.Calls {
	if s == nil {
		return nil
	}
	return &s.Calls
}

func callsOf2(s *pipeline.Stage2) *pipeline.Calls {
	if s == nil {
		return nil
	}
	return &s.Calls
}

func callsOf3(s *pipeline.Stage3) *pipeline.Calls {
	if s == nil {
		return nil
	}
	return &s.Calls
}

// laterStage is the trace of stage 2 or 3: done, skipped in the trace, or
// never started (the result's Skipped map says why).
func laterStage(name, key string, t *pipeline.StageTrace, res *pipeline.Result) StageTrace {
	st := StageTrace{Name: name, Status: StatusDone}
	switch {
	case t == nil:
		st.Status = StatusSkipped
		st.Reason = res.Skipped[key]
		if st.Reason == "" {
			st.Reason = "not run"
		}
	case t.Skipped != "":
		st.Status = StatusSkipped
		// The request's own switch-off explains better than the trace
		// (which only sees the role missing).
		st.Reason = res.Skipped[key]
		if st.Reason == "" {
			st.Reason = t.Skipped
		}
	default:
		st.DurationMS = ms(t.Elapsed)
	}
	return st
}
