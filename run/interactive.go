package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
)

// Interactive chat runs (Settings.Interactive): the dataset's dialogue
// gives only the caption (round 0) and the number of rounds; every later
// round's turn is generated. The engine asks back from the previous
// round's final ranking (pipeline.Engine.AskNext) and a simulated user,
// the verifier looking at the target image, answers the chosen question.
// Each generated turn is checkpointed (checkpoints/turns.jsonl) before the
// round runs, so a resumed run replays exactly the same dialogue.

// GeneratedTurn is one generated chat turn: how the question was chosen,
// and the simulated user's answer.
type GeneratedTurn struct {
	Ask *pipeline.Ask `json:"ask"`
	// Question is the chosen question ("" when none could be proposed).
	Question string `json:"question"`
	// Answer is the simulated user's answer ("yes" or "no") and Reply the
	// verifier's raw reply.
	Answer string `json:"answer,omitempty"`
	Reply  string `json:"reply,omitempty"`
	// Turn is the round's instruction: "question? answer".
	Turn string `json:"turn"`
	// Calls are the simulated user's calls (the asking calls are in Ask).
	Calls pipeline.Calls `json:"calls"`
}

// FallbackNoQuestion marks a round for which no question could be
// proposed: its turn is NoQuestionTurn, which adds nothing.
const FallbackNoQuestion = "no-question"

// NoQuestionTurn is the turn of a round with no question to ask.
const NoQuestionTurn = "no new information"

func (r *Runner) interactive() bool { return r.cfg.Settings.Interactive }

// checkInteractive refuses settings an interactive run cannot honour.
func (r *Runner) checkInteractive() error {
	if !r.interactive() {
		return nil
	}
	switch {
	case !r.chat():
		return fmt.Errorf("run: --interactive needs a chat dataset (VisDial), not %s", r.cfg.Dataset.Name)
	case r.cfg.Settings.Barrier:
		return errors.New("run: --interactive cannot run in --barrier mode: each round's question needs the previous round's final ranking")
	case !r.cfg.Engine.Has(modelrole.Questioner):
		return errors.New("run: --interactive needs a reasoner (or questioner) to propose questions")
	case !r.cfg.Engine.Has(modelrole.Verifier):
		return errors.New("run: --interactive needs a verifier: it answers as the simulated user")
	}
	for _, q := range r.cfg.Dataset.Queries {
		if len(q.Targets) == 0 {
			return fmt.Errorf("run: --interactive needs the target of every dialogue (the simulated user looks at it); dialogue %s has none", q.ID)
		}
	}
	return nil
}

func (r *Runner) openTurns() error {
	ck, recs, err := openCheckpoint(filepath.Join(r.cfg.Dir, "checkpoints", "turns.jsonl"))
	if err != nil {
		return err
	}
	r.turnCk = ck
	for k, raw := range recs {
		var t GeneratedTurn
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("checkpoint turns, %s: %w", k, err)
		}
		r.st.turns[k] = &t
	}
	return nil
}

func (r *Runner) getTurn(k string) *GeneratedTurn {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	return r.st.turns[k]
}

// dialogueBefore returns unit i's dialogue so far: the caption and the
// generated turns of rounds 1..round-1 (ok false when one is missing).
func (r *Runner) dialogueBefore(i int) ([]string, bool) {
	u := r.units[i]
	dq := r.cfg.Dataset.Queries[u.qi]
	d := []string{dq.Turns[0]}
	for rd := 1; rd < u.round; rd++ {
		t := r.getTurn(r.units[r.byQ[u.qi][rd]].key)
		if t == nil {
			return nil, false
		}
		d = append(d, t.Turn)
	}
	return d, true
}

// ensureTurn generates (once) the turn of interactive unit i from the
// previous round's final ranking. It reports an error when the turn cannot
// be made now (the previous round unfinished, a role down).
func (r *Runner) ensureTurn(ctx context.Context, i int) error {
	u := r.units[i]
	if u.round < 1 || r.getTurn(u.key) != nil {
		return nil
	}
	prev := r.units[r.byQ[u.qi][u.round-1]]
	ranking := r.fullList(r.cfg.Settings.Stages, prev.key)
	if ranking == nil {
		return errors.New("previous round unfinished")
	}
	dialogue, ok := r.dialogueBefore(i)
	if !ok {
		return errors.New("previous round's turn missing")
	}
	a, err := r.cfg.Engine.AskNext(ctx, dialogue, ranking)
	if err != nil {
		return err
	}
	t := &GeneratedTurn{Ask: a, Turn: NoQuestionTurn}
	if best := a.Best(); best != nil {
		target := r.cfg.Dataset.Queries[u.qi].Targets[0]
		ans, reply, err := r.cfg.Engine.AnswerAbout(ctx, target, best.English, &t.Calls)
		if err != nil {
			return fmt.Errorf("simulated user: %w", err)
		}
		t.Question, t.Answer, t.Reply = best.English, ans, reply
		t.Turn = pipeline.Turn(best.English, ans)
	} else {
		t.Calls.Fallbacks = append(t.Calls.Fallbacks, FallbackNoQuestion)
	}
	if err := r.turnCk.append(u.key, t); err != nil {
		return err
	}
	r.st.mu.Lock()
	r.st.turns[u.key] = t
	r.st.mu.Unlock()
	return nil
}

// fullList is unit key's whole ranking after stage st (nil if unfinished).
func (r *Runner) fullList(st int, key string) []string {
	switch st {
	case 1:
		if s := r.get1(key); s != nil {
			return s.Names()
		}
	case 2:
		if s := r.get2(key); s != nil {
			return s.Ranking
		}
	case 3:
		if s := r.get3(key); s != nil {
			return s.Ranking
		}
	}
	return nil
}

// checkBeside checks Settings.Beside: a finished given-dialogue run of the
// same dataset and split, whose metrics are reported beside this run's.
func (r *Runner) checkBeside() error {
	b := r.cfg.Settings.Beside
	if b == "" {
		return nil
	}
	if !r.interactive() {
		return errors.New("run: --beside compares an interactive run with a given-dialogue run; add --interactive")
	}
	set, _, err := ReadSettings(b)
	if err != nil {
		return fmt.Errorf("--beside: %w", err)
	}
	switch {
	case set.Interactive:
		return fmt.Errorf("--beside %s: that run is interactive too; give a run over the dataset's own dialogues", b)
	case !strings.EqualFold(set.Dataset, r.cfg.Dataset.Name) || set.Split != r.cfg.Dataset.Split:
		return fmt.Errorf("--beside %s: that run is %s %s, this one %s %s", b, set.Dataset, set.Split, r.cfg.Dataset.Name, r.cfg.Dataset.Split)
	}
	if _, err := os.Stat(filepath.Join(b, "metrics.json")); err != nil {
		return fmt.Errorf("--beside %s: no metrics.json (finish that run first): %w", b, err)
	}
	return nil
}

// writeBeside writes beside.json and beside.txt: Hits@K per round of the
// given-dialogue run (Settings.Beside) and of this one, per stage both have.
func (r *Runner) writeBeside(mine map[string]map[string]json.RawMessage) error {
	if r.cfg.Settings.Beside == "" {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(r.cfg.Settings.Beside, "metrics.json"))
	if err != nil {
		return fmt.Errorf("--beside: %w", err)
	}
	var given map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &given); err != nil {
		return fmt.Errorf("--beside: %s: %w", filepath.Join(r.cfg.Settings.Beside, "metrics.json"), err)
	}
	type pair struct {
		Given       []float64 `json:"given"`
		Interactive []float64 `json:"interactive"`
	}
	out := map[string]map[string]pair{}
	var txt strings.Builder
	fmt.Fprintf(&txt, "Hits@K by round (cumulative): the dialogues' own turns (%s) beside generated questions answered by the simulated user (this run)\n", r.cfg.Settings.Beside)
	for _, st := range []string{"stage1", "stage2", "stage3"} {
		g, m := given[st], mine[st]
		if g == nil || m == nil {
			continue
		}
		ks := []string{}
		for k := range m {
			if strings.HasPrefix(k, "hits@") && g[k] != nil {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(a, b int) bool { return hitsK(ks[a]) < hitsK(ks[b]) })
		out[st] = map[string]pair{}
		for _, k := range ks {
			var p pair
			if json.Unmarshal(g[k], &p.Given) != nil || json.Unmarshal(m[k], &p.Interactive) != nil {
				continue
			}
			out[st][k] = p
		}
		fmt.Fprintf(&txt, "\n== %s\n%-6s", st, "round")
		show := []string{}
		for _, k := range []string{"hits@1", "hits@5", "hits@10"} {
			if _, ok := out[st][k]; ok {
				show = append(show, k)
				fmt.Fprintf(&txt, " %11s %11s", k+" giv", k+" ask")
			}
		}
		txt.WriteString("\n")
		rounds := 0
		for _, k := range show {
			rounds = max(rounds, len(out[st][k].Given), len(out[st][k].Interactive))
		}
		for rd := range rounds {
			fmt.Fprintf(&txt, "%-6d", rd)
			for _, k := range show {
				p := out[st][k]
				fmt.Fprintf(&txt, " %11s %11s", pct(p.Given, rd), pct(p.Interactive, rd))
			}
			txt.WriteString("\n")
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "beside.json"), append(b, '\n')); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(r.cfg.Dir, "beside.txt"), []byte(txt.String()))
}

func hitsK(key string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(key, "hits@"))
	return n
}

func pct(v []float64, i int) string {
	if i >= len(v) {
		return "-"
	}
	return strconv.FormatFloat(100*v[i], 'f', 2, 64)
}
