package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
	"golang.org/x/sync/errgroup"
)

// promptAtomic converts atomic instructions for the proposer prompt.
func promptAtomic(as []Atomic) []prompt.Atomic {
	out := make([]prompt.Atomic, len(as))
	for i, a := range as {
		out[i] = prompt.Atomic{Type: a.Type, Content: a.Content}
	}
	return out
}

var yesWord = regexp.MustCompile(`\byes\b`)

// SaysYes applies the verifier yes rule to a reply: "word" matches yes as
// a whole word; "substring" matches any occurrence (the reference code's
// rule, which also fires on "eyes").
func SaysYes(reply, rule string) bool {
	s := strings.ToLower(reply)
	if rule == "substring" {
		return strings.Contains(s, "yes")
	}
	return yesWord.MatchString(s)
}

// Rerank sorts the first k names by score, descending and stable (ties
// keep the input order); names from k on are unchanged.
func Rerank(names []string, scores []int, k int) []string {
	return rerank(names, scores, k)
}

// rerank is Rerank for any ordered score (agreement counts, soft scores).
func rerank[S int | float64](names []string, scores []S, k int) []string {
	if k > len(names) {
		k = len(names)
	}
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	out := make([]string, 0, len(names))
	for _, i := range idx {
		out = append(out, names[i])
	}
	return append(out, names[k:]...)
}

// Stage2 writes propositions and verifies the top K stage-1 candidates.
func (e *Engine) Stage2(ctx context.Context, q Query, s1 *Stage1) (*Stage2, error) {
	names := s1.Names()
	s := &Stage2{Ranking: names}
	if q.ImageOnly() {
		s.Skipped = NoTextToVerify
		return s, nil
	}
	if reason := e.SkipReason(2); reason != "" {
		s.Skipped = reason
		return s, nil
	}
	text, err := e.cfg.Prompts.Render(q.Domain, prompt.Propose, prompt.Fields{Instruction: q.Instruction, Atomic: promptAtomic(s1.Atomic)})
	if err != nil {
		return nil, err
	}
	resp, err := e.call(ctx, modelrole.Proposer, ChatRequest{
		Messages:  []Message{{Role: "user", Parts: []Part{{Text: text}}}},
		MaxTokens: e.opt.ReasonerMaxTokens,
	}, &s.Calls)
	switch {
	case e.degrade && errors.Is(err, ErrRoleDown) && ctx.Err() == nil:
		return e.skipDegraded2(q, s, names, err), nil
	case errors.Is(err, ErrRoleDown) || (err != nil && ctx.Err() != nil):
		return nil, fmt.Errorf("stage 2 of query %s: %w", q.ID, err)
	case err != nil:
		s.Error = err.Error()
		s.fallback(FallbackProposerFailed)
	default:
		s.Reply = resp.Text
		var ok bool
		s.Statements, s.Propositions, ok = ParsePropositions(resp.Text)
		if !ok || len(s.Propositions) == 0 {
			s.fallback(FallbackNoPropositions)
		}
	}
	if err := e.roleDownAfter(modelrole.Proposer, &s.Calls); err != nil && !e.degrade {
		return nil, fmt.Errorf("stage 2 of query %s: %w", q.ID, err)
	}
	k := e.opt.TopK
	if k > len(names) {
		k = len(names)
	}
	s.Depth = k
	if len(s.Propositions) == 0 || k == 0 {
		// Nothing to verify: every score is 0 and the stable sort keeps the order.
		for _, n := range names[:k] {
			s.Scores = append(s.Scores, CandidateScore{Name: n})
		}
		return s, nil
	}
	if err := e.verify(ctx, q, s, names[:k]); err != nil {
		if e.degrade && errors.Is(err, ErrRoleDown) && ctx.Err() == nil {
			return e.skipDegraded2(q, s, names, err), nil
		}
		return nil, fmt.Errorf("stage 2 of query %s: %w", q.ID, err)
	}
	s.rerank(names, k, e.opt.Soft)
	return s, nil
}

// rerank orders the first k names by their verification scores: Ranking
// by agreement count and, when soft scoring is on and every candidate has
// a soft score, SoftRanking by those.
func (s *Stage2) rerank(names []string, k int, soft bool) {
	hard := make([]int, k)
	softs := make([]float64, k)
	for i, cs := range s.Scores {
		hard[i] = cs.Agreement
		if cs.Soft == nil {
			soft = false
		} else {
			softs[i] = *cs.Soft
		}
	}
	s.Ranking = rerank(names, hard, k)
	if soft {
		s.SoftRanking = rerank(names, softs, k)
	}
}

// skipDegraded2 ends stage 2 without re-ranking because a role was
// unavailable (searches only): the stage-1 order stands, and says why.
func (e *Engine) skipDegraded2(q Query, s *Stage2, names []string, err error) *Stage2 {
	e.log.Warn("stage 2 skipped: a role is unavailable", "query", q.ID, "err", err)
	reason := "skipped, the stage-1 order stands: " + err.Error()
	return &Stage2{Skipped: reason, Degraded: reason, Ranking: names, Calls: s.Calls}
}

// verify asks the verifier every (candidate, question) pair concurrently
// (bounded by the role's in-flight limit) and fills s.Verifications and
// s.Scores. A candidate with any failed verification scores 0.
func (e *Engine) verify(ctx context.Context, q Query, s *Stage2, cands []string) error {
	questions := make([]string, len(s.Propositions))
	for j, p := range s.Propositions {
		questions[j] = p.Question
	}
	prompts, err := e.verifyPrompts(q.Domain, questions)
	if err != nil {
		return err
	}
	nq := len(questions)
	ver := make([]Verification, len(cands)*nq)
	imgFailed := make([]bool, len(cands))
	replies, calls, err := e.askPairs(ctx, cands, prompts, e.opt.Soft, func(ci int, err error) {
		imgFailed[ci] = true
		for j := range nq {
			ver[ci*nq+j] = Verification{Candidate: cands[ci], Question: j, Error: "load image: " + err.Error()}
		}
		e.log.Warn("candidate image unavailable; it scores 0", "query", q.ID, "candidate", cands[ci], "err", err)
	})
	if err != nil {
		return err
	}
	for i := range calls {
		s.merge(calls[i])
	}
	if err := e.roleDownAfter(modelrole.Verifier, &s.Calls); err != nil {
		return err
	}
	for ci, cand := range cands {
		if imgFailed[ci] {
			continue
		}
		for j, p := range s.Propositions {
			i := ci*nq + j
			v := Verification{Candidate: cand, Question: j}
			if r := replies[i]; r.err != nil {
				v.Error = r.err.Error()
			} else {
				v.Reply = r.resp.Text
				v.Yes = SaysYes(r.resp.Text, e.opt.YesRule)
				v.Agrees = v.Yes == p.Expected
				v.PYes = r.resp.PYes
			}
			ver[i] = v
		}
	}
	s.Verifications = ver
	s.score(cands, imgFailed, e.opt.Soft)
	return nil
}

// verifyPrompts renders the verifier prompt of each yes/no question.
func (e *Engine) verifyPrompts(domain string, questions []string) ([]string, error) {
	prompts := make([]string, len(questions))
	for j, q := range questions {
		t, err := e.cfg.Prompts.Render(domain, prompt.Verify, prompt.Fields{Question: q})
		if err != nil {
			return nil, err
		}
		prompts[j] = t
	}
	return prompts, nil
}

// pairReply is the verifier's answer to one (candidate, question) pair:
// its reply, or the error of a call that failed (not for good).
type pairReply struct {
	resp *ChatResponse
	err  error
}

// askPairs asks the verifier every (candidate, prompt) pair concurrently
// (bounded by the role's in-flight limit), with the first-token
// log-probabilities when logprobs is set. replies and calls are indexed
// candidate*len(prompts)+prompt. A candidate whose image cannot be loaded
// is reported to imageFailed, on the calling goroutine, and not asked.
//
// A verifier that fails for good (role down) or a cancelled search ends
// the fan-out with that error: the group's context then cancels the calls
// still outstanding instead of letting them run on, and calls not yet sent
// are not sent.
func (e *Engine) askPairs(ctx context.Context, cands, prompts []string, logprobs bool, imageFailed func(ci int, err error)) (replies []pairReply, calls []Calls, err error) {
	nq := len(prompts)
	replies = make([]pairReply, len(cands)*nq)
	calls = make([]Calls, len(cands)*nq)
	g, gctx := errgroup.WithContext(ctx)
	since := e.trips(modelrole.Verifier)
	for ci, cand := range cands {
		img, err := e.candidateImage(gctx, cand)
		img.Memo = &Memo{}
		if err != nil {
			if gctx.Err() != nil {
				break
			}
			imageFailed(ci, err)
			continue
		}
		for j := range nq {
			g.Go(func() error {
				i := ci*nq + j
				req := ChatRequest{
					Messages:  []Message{{Role: "user", Parts: []Part{{Image: &img}, {Text: prompts[j]}}}},
					MaxTokens: e.opt.VerifierMaxTokens,
				}
				if logprobs {
					req.Logprobs, req.TopLogprobs = true, 5
				}
				if gctx.Err() != nil {
					return gctx.Err() // the fan-out is abandoned
				}
				resp, err := e.callSince(gctx, modelrole.Verifier, since, req, &calls[i])
				if err != nil && (errors.Is(err, ErrRoleDown) || gctx.Err() != nil) {
					return err
				}
				replies[i] = pairReply{resp: resp, err: err}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	return replies, calls, nil
}

// score turns s.Verifications into s.Scores: per candidate the number of
// answers that agree with the expected one and, with soft scoring, the
// summed probability of the expected answer (rounded to 12 significant
// digits so that re-runs compare equal). A candidate with a missing image
// or a failed verification scores 0 and is noted as a fallback.
func (s *Stage2) score(cands []string, imgFailed []bool, soft bool) {
	nq := len(s.Propositions)
	for ci, cand := range cands {
		cs := CandidateScore{Name: cand}
		var sum float64
		softOK := soft
		failed := imgFailed[ci]
		for j := range nq {
			v := s.Verifications[ci*nq+j]
			if v.Error != "" {
				failed = true
				continue
			}
			if v.Agrees {
				cs.Agreement++
			}
			if v.PYes == nil {
				softOK = false
				continue
			}
			if s.Propositions[j].Expected {
				sum += *v.PYes
			} else {
				sum += 1 - *v.PYes
			}
		}
		if failed {
			cs = CandidateScore{Name: cand, Failed: true}
			if imgFailed[ci] {
				s.fallback(FallbackImageMissing + ":" + cand)
			} else {
				s.fallback(FallbackVerifierFailed + ":" + cand)
			}
		} else if softOK {
			r, _ := strconv.ParseFloat(strconv.FormatFloat(sum, 'g', 12, 64), 64)
			cs.Soft = &r
		}
		s.Scores = append(s.Scores, cs)
	}
}
