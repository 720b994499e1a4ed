package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
)

// Asking back: after a chat round the engine proposes the question whose
// answer best narrows the candidates.
//
// 1. The questioner (the reasoner unless one is configured) reads the
//    dialogue and the captions of the current top AskProbe candidates and
//    proposes up to AskQuestions yes/no questions, each in English (what
//    the verifier is asked) and in the user's language (what the user
//    reads).
// 2. The verifier answers every proposed question on each of those top
//    candidates (the stage-2 verify prompt, so the answers are shared with
//    the answer cache).
// 3. The chosen question is the one whose yes-fraction over the candidates
//    that answered is closest to 1/2: whatever the user answers, about half
//    of the current candidates are ruled out (the answer carries the most
//    information). Ties go to the questioner's order; a question that no
//    candidate answered cannot win over one that was checked.
//
// Cost per round: 1 questioner call plus AskQuestions x AskProbe verifier
// calls (defaults 3 x 10 = 30), all concurrent and cached. Without a
// verifier the questioner's first question is offered (rule "first").

// AskStage numbers the asking step in the start notice Search sends its
// observer (StageEvent.Stage) before it chooses the question.
const AskStage = 4

// Selection rules recorded in Ask.Rule.
const (
	AskRuleSplit = "verifier-split" // yes-fraction over the top candidates closest to 1/2
	AskRuleFirst = "first"          // no verifier: the questioner's first question
)

// FallbackQuestionerFailed and FallbackNoQuestions are the asking fallbacks.
const (
	FallbackQuestionerFailed = "questioner-failed"
	FallbackNoQuestions      = "questions-missing"
)

// Question is one proposed question with how the top candidates answered it.
type Question struct {
	// English is what the verifier is asked (and the simulated user).
	English string `json:"en"`
	// Shown is the question in the user's language.
	Shown string `json:"user"`
	// Yes and Answered count the probed candidates that answered yes and
	// that answered at all.
	Yes      int `json:"yes"`
	Answered int `json:"answered"`
	// YesNames are the probed candidates that answered yes.
	YesNames []string `json:"yes_names,omitempty"`
	// Split is |yes-fraction - 1/2| (0 = a perfect split, 0.5 = no split;
	// 1 when no candidate answered).
	Split float64 `json:"split"`
}

// Ask is a proposed next question and how it was chosen.
type Ask struct {
	// Reply is the questioner's raw reply; Error its failure, if any.
	Reply string `json:"questioner_reply"`
	Error string `json:"questioner_error,omitempty"`
	// Language is the user's language as the questioner named it, and
	// Yes and No the words for yes and no in it (default "yes", "no").
	Language string `json:"language,omitempty"`
	Yes      string `json:"yes"`
	No       string `json:"no"`
	// Probed are the top candidates the questions were checked on.
	Probed    []string   `json:"probed"`
	Questions []Question `json:"questions"`
	// Chosen indexes Questions (-1: no question could be proposed).
	Chosen int    `json:"chosen"`
	Rule   string `json:"rule"`
	Calls
}

// Best returns the chosen question (nil when there is none).
func (a *Ask) Best() *Question {
	if a == nil || a.Chosen < 0 || a.Chosen >= len(a.Questions) {
		return nil
	}
	return &a.Questions[a.Chosen]
}

// Turn writes a question and its answer as one dialogue turn
// ("question? answer").
func Turn(question, answer string) string {
	q := strings.TrimSpace(question)
	q = strings.TrimRight(q, "?？ ")
	return q + "? " + strings.TrimSpace(answer)
}

// ParseQuestions reads a questioner reply: "language" and "questions", a
// list of {"en", "user"} objects or of plain strings (then shown as
// written). Blank, duplicate and already-asked questions are dropped; at
// most limit are kept (0 = all). ok is false when nothing was parseable.
func ParseQuestions(reply string, dialogue []string, limit int) (language string, qs []Question, ok bool) {
	found, err := prompt.FindObject(reply, "questions", "language")
	if err != nil {
		return "", nil, false
	}
	asked := map[string]bool{}
	for _, t := range dialogue {
		if i := strings.IndexAny(t, "?？"); i >= 0 {
			asked[questionKey(t[:i])] = true
		}
	}
	lv, _ := found.Object.Get("language")
	items, _ := found.Object.Get("questions")
	list, isList := items.([]any)
	if !isList && items != nil {
		list = []any{items} // a single question
	}
	for _, item := range list {
		var q Question
		switch v := item.(type) {
		case string:
			q.English, q.Shown = v, v
		case prompt.Object:
			en, _ := v.Get("en")
			user, _ := v.Get("user")
			q.English, q.Shown = prompt.Text(en), prompt.Text(user)
		default:
			continue
		}
		q.English, q.Shown = strings.TrimSpace(q.English), strings.TrimSpace(q.Shown)
		if q.English == "" {
			q.English = q.Shown
		}
		if q.Shown == "" {
			q.Shown = q.English
		}
		k := questionKey(q.English)
		if k == "" || asked[k] || asked[questionKey(q.Shown)] {
			continue
		}
		asked[k] = true
		qs = append(qs, q)
		if limit > 0 && len(qs) == limit {
			break
		}
	}
	return prompt.Text(lv), qs, true
}

func questionKey(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(strings.TrimRight(strings.TrimSpace(s), "?？.")), " "))
}

// ChooseQuestion returns the index of the question whose yes-fraction is
// closest to 1/2 (ties: the earliest), or -1 when qs is empty. It fills
// each question's Split.
func ChooseQuestion(qs []Question) int {
	best := -1
	for i := range qs {
		q := &qs[i]
		q.Split = 1
		if q.Answered > 0 {
			q.Split = math.Abs(float64(q.Yes)/float64(q.Answered) - 0.5)
		}
		if best < 0 || q.Split < qs[best].Split {
			best = i
		}
	}
	return best
}

// renderDialogue numbers the turns "(0) caption", "(1) question? answer".
func renderDialogue(dialogue []string) string {
	var b strings.Builder
	for i, t := range dialogue {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "(%d) %s", i, strings.TrimSpace(t))
	}
	return b.String()
}

// AskNext proposes the next question for a dialogue (dialogue[0] is the
// opening description) given the current ranking, best first.
func (e *Engine) AskNext(ctx context.Context, dialogue []string, ranking []string) (*Ask, error) {
	a := &Ask{Chosen: -1, Rule: AskRuleSplit, Probed: []string{}, Questions: []Question{}, Yes: "yes", No: "no"}
	if !e.Has(modelrole.Questioner) {
		return nil, errors.New("asking back needs a questioner or a reasoner: none is configured")
	}
	if len(dialogue) == 0 {
		return nil, errors.New("asking back needs at least the opening description")
	}
	if !e.Has(modelrole.Verifier) {
		a.Rule = AskRuleFirst
	}
	probe := ranking
	if len(probe) > e.opt.AskProbe {
		probe = probe[:e.opt.AskProbe]
	}
	a.Probed = append(a.Probed, probe...)
	var cands strings.Builder
	for i, n := range probe {
		c, ok := e.cfg.Gallery.Caption(n)
		if !ok || strings.TrimSpace(c) == "" {
			c = "(no caption)"
		}
		if i > 0 {
			cands.WriteByte('\n')
		}
		fmt.Fprintf(&cands, "(%d) %s", i+1, strings.TrimSpace(c))
	}
	if len(probe) == 0 {
		cands.WriteString("(none yet)")
	}
	text, err := e.cfg.Prompts.Render("chat", prompt.Ask, prompt.Fields{Dialogue: renderDialogue(dialogue), Candidates: cands.String(), Count: e.opt.AskQuestions})
	if err != nil {
		return nil, err
	}
	resp, err := e.call(ctx, modelrole.Questioner, ChatRequest{
		Messages:  []Message{{Role: "user", Parts: []Part{{Text: text}}}},
		MaxTokens: e.opt.ReasonerMaxTokens,
	}, &a.Calls)
	switch {
	case errors.Is(err, ErrRoleDown) || (err != nil && ctx.Err() != nil):
		return nil, fmt.Errorf("ask back: %w", err)
	case err != nil:
		a.Error = err.Error()
		a.fallback(FallbackQuestionerFailed)
		e.log.Warn("questioner failed; no question offered", "err", err)
		return a, nil
	}
	a.Reply = resp.Text
	lang, qs, ok := ParseQuestions(resp.Text, dialogue, e.opt.AskQuestions)
	a.Language = lang
	if found, err := prompt.FindObject(resp.Text, "questions", "language"); err == nil {
		for key, dst := range map[string]*string{"yes": &a.Yes, "no": &a.No} {
			if v, ok := found.Object.Get(key); ok {
				if w := prompt.Text(v); w != "" && len(w) <= 40 {
					*dst = w
				}
			}
		}
	}
	if !ok || len(qs) == 0 {
		a.fallback(FallbackNoQuestions)
		return a, nil
	}
	a.Questions = qs
	if a.Rule == AskRuleFirst || len(probe) == 0 {
		a.Rule = AskRuleFirst
		a.Chosen = 0
		return a, nil
	}
	if err := e.probe(ctx, a, probe); err != nil {
		return nil, fmt.Errorf("ask back: %w", err)
	}
	a.Chosen = ChooseQuestion(a.Questions)
	return a, nil
}

// probe asks the verifier every (candidate, question) pair and counts the
// yes answers per question.
func (e *Engine) probe(ctx context.Context, a *Ask, probe []string) error {
	nq := len(a.Questions)
	questions := make([]string, nq)
	for j, q := range a.Questions {
		questions[j] = q.English
	}
	prompts, err := e.verifyPrompts("chat", questions)
	if err != nil {
		return err
	}
	replies, calls, err := e.askPairs(ctx, probe, prompts, false, func(ci int, _ error) {
		a.fallback(FallbackImageMissing + ":" + probe[ci])
	})
	if err != nil {
		return err
	}
	for i := range calls {
		a.merge(calls[i])
	}
	for ci, cand := range probe {
		for j := range nq {
			r := replies[ci*nq+j]
			q := &a.Questions[j]
			if r.resp == nil || r.err != nil {
				continue // not asked (no image) or the call failed
			}
			q.Answered++
			if SaysYes(r.resp.Text, e.opt.YesRule) {
				q.Yes++
				q.YesNames = append(q.YesNames, cand)
			}
		}
	}
	return e.roleDownAfter(modelrole.Verifier, &a.Calls)
}

// AnswerAbout answers a yes/no question about one gallery image with the
// verifier ("yes" or "no"): the simulated user of the interactive
// benchmark, who looks at the target image. The raw reply is returned too.
func (e *Engine) AnswerAbout(ctx context.Context, name, question string, c *Calls) (answer, reply string, err error) {
	if !e.Has(modelrole.Verifier) {
		return "", "", errors.New("the simulated user needs a verifier: none is configured")
	}
	img, err := e.candidateImage(ctx, name)
	if err != nil {
		return "", "", fmt.Errorf("load image %s: %w", name, err)
	}
	text, err := e.cfg.Prompts.Render("chat", prompt.Verify, prompt.Fields{Question: question})
	if err != nil {
		return "", "", err
	}
	resp, err := e.call(ctx, modelrole.Verifier, ChatRequest{
		Messages:  []Message{{Role: "user", Parts: []Part{{Image: &img}, {Text: text}}}},
		MaxTokens: e.opt.VerifierMaxTokens,
	}, c)
	if err != nil {
		return "", "", fmt.Errorf("answer %q about %s: %w", question, name, err)
	}
	if SaysYes(resp.Text, e.opt.YesRule) {
		return "yes", resp.Text, nil
	}
	return "no", resp.Text, nil
}
