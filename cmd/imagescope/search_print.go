package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/pipeline"
)

// printFirstResults prints the stage-1 ranking while later stages run.
func printFirstResults(e *env, ranking []pipeline.Candidate, limit int) {
	fmt.Fprintf(e.stdout, "first results (stage 1; verifying and judging next):\n")
	for i, c := range head(ranking, limit) {
		fmt.Fprintf(e.stdout, "%3d  %-30s s1 %.4f\n", i+1, c.Name, c.Score)
	}
	fmt.Fprintln(e.stdout)
}

// printSearch prints the stage traces and the final ranking. Every skipped
// stage is said once: in its own section when it has a trace, else in the
// lines before the first section.
func printSearch(e *env, res *pipeline.Result, images adapt.FileImages, hasRef bool) {
	w := e.stdout
	traced := map[string]bool{}
	for _, st := range res.Stages {
		traced[fmt.Sprintf("stage%d", st.Stage)] = true
	}
	for _, k := range []string{"reasoning", "captions", "stage2", "stage3"} {
		if why, ok := res.Skipped[k]; ok && !traced[k] {
			fmt.Fprintf(w, "skipped %s: %s\n", k, why)
		}
	}
	for _, d := range res.Degraded {
		fmt.Fprintf(w, "partial answer, stage %d did without a model role: %s\n", d.Stage, d.Reason)
	}
	for _, st := range res.Stages {
		round := ""
		if st.Round >= 0 {
			round = fmt.Sprintf(" round %d", st.Round)
		}
		switch {
		case st.Stage1 != nil:
			printStage1(w, st, round, hasRef)
		case st.Stage2 != nil:
			printStage2(w, st, round)
		case st.Stage3 != nil:
			printStage3(w, st, round)
		}
	}
	printRanking(w, res.Ranking, images)
	if res.Ask != nil {
		printAsk(w, res.Ask)
	}
}

// printStage1 prints what stage 1 embedded and its top images.
func printStage1(w io.Writer, st pipeline.StageTrace, round string, hasRef bool) {
	s := st.Stage1
	what := "reason + retrieve"
	if s.ByImage {
		what = "retrieve by image"
	}
	fmt.Fprintf(w, "\n== stage 1%s: %s (%s)\n", round, what, st.Elapsed.Round(1e6))
	switch {
	case st.Round > 0 && s.ReferenceCaption != "":
		fmt.Fprintf(w, "running description: %s\n", s.ReferenceCaption)
	case hasRef && s.ReferenceCaption != "":
		fmt.Fprintf(w, "reference caption: %s\n", s.ReferenceCaption)
	}
	for _, a := range s.Atomic {
		fmt.Fprintf(w, "  atomic %s: %s\n", a.Type, a.Content)
	}
	label := "description"
	if s.ByImage {
		label = "query"
	}
	for i, d := range s.Embedded {
		fmt.Fprintf(w, "  %s %d: %s\n", label, i+1, d)
	}
	printFallbacks(w, s.Fallbacks)
	fmt.Fprintf(w, "  tau %.2f, top: %s\n", s.Tau, strings.Join(head(s.Names(), 5), ", "))
}

// printStageHead prints the heading of stage 2 or 3 and reports whether
// the stage ran (else the heading says why not).
func printStageHead(w io.Writer, stage int, what string, st pipeline.StageTrace, round, skipped string) bool {
	if skipped != "" {
		fmt.Fprintf(w, "\n== stage %d%s: %s skipped: %s\n", stage, round, what, skipped)
		return false
	}
	fmt.Fprintf(w, "\n== stage %d%s: %s (%s)\n", stage, round, what, st.Elapsed.Round(1e6))
	return true
}

func printFallbacks(w io.Writer, fallbacks []string) {
	if len(fallbacks) > 0 {
		fmt.Fprintf(w, "  fallbacks: %s\n", strings.Join(fallbacks, ", "))
	}
}

// printStage2 prints the propositions and each candidate's agreement.
func printStage2(w io.Writer, st pipeline.StageTrace, round string) {
	s := st.Stage2
	if !printStageHead(w, 2, "verify", st, round, s.Skipped) {
		return
	}
	for i, p := range s.Propositions {
		fmt.Fprintf(w, "  Q%d %s (expected %v)\n", i+1, p.Question, p.Expected)
	}
	for _, c := range s.Scores {
		extra := ""
		if c.Soft != nil {
			extra = fmt.Sprintf(" soft %.2f", *c.Soft)
		}
		if c.Failed {
			extra += " (verification failed)"
		}
		fmt.Fprintf(w, "  %-30s agreement %d/%d%s\n", c.Name, c.Agreement, len(s.Propositions), extra)
	}
	printFallbacks(w, s.Fallbacks)
}

// printStage3 prints the evaluator's verdicts.
func printStage3(w io.Writer, st pipeline.StageTrace, round string) {
	s := st.Stage3
	if !printStageHead(w, 3, "evaluate", st, round, s.Skipped) {
		return
	}
	for _, ev := range s.Evaluations {
		verdict := "No"
		if ev.Yes {
			verdict = "Yes"
		}
		if ev.Error != "" {
			verdict = "failed (counts as No): " + ev.Error
		}
		fmt.Fprintf(w, "  #%d %s: %s  %s\n", ev.Rank, ev.Candidate, verdict, oneLine(pipeline.EvaluatorReasoning(ev.Reply)))
	}
}

// printRanking prints the final ranking with one labelled column per stage
// that ran: s1 is the stage-1 fused similarity and rank, s2 the stage-2
// agreement and rank after re-ranking, s3 the stage-3 verdict.
func printRanking(w io.Writer, ranking []pipeline.Candidate, images adapt.FileImages) {
	ran := map[int]bool{}
	for _, c := range ranking {
		for _, r := range c.Ranks {
			ran[r.Stage] = true
		}
	}
	fmt.Fprintf(w, "\nranking:\n%4s  %-30s %9s %7s", "rank", "name", "s1 score", "s1 rank")
	if ran[2] {
		fmt.Fprintf(w, " %8s %7s", "s2 agree", "s2 rank")
	}
	if ran[3] {
		fmt.Fprintf(w, " %-10s", "s3 verdict")
	}
	fmt.Fprintf(w, "  file\n")
	for i, c := range ranking {
		r := map[int]int{}
		for _, x := range c.Ranks {
			r[x.Stage] = x.Rank
		}
		fmt.Fprintf(w, "%4d  %-30s %9.4f %7d", i+1, c.Name, c.Score, r[1])
		if ran[2] {
			agree := "-"
			if c.Agreement != nil {
				agree = fmt.Sprint(*c.Agreement)
			}
			fmt.Fprintf(w, " %8s %7d", agree, r[2])
		}
		if ran[3] {
			v := c.Verdict
			if v == "" {
				v = "-"
			}
			fmt.Fprintf(w, " %-10s", v)
		}
		fmt.Fprintf(w, "  %s\n", images[c.Name])
	}
}

func printAsk(w io.Writer, a *pipeline.Ask) {
	fmt.Fprintf(w, "\n== asking back (%s)\n", a.Rule)
	for i, q := range a.Questions {
		mark := " "
		if i == a.Chosen {
			mark = "*"
		}
		split := ""
		if a.Rule == pipeline.AskRuleSplit {
			split = fmt.Sprintf("  [yes on %d of %d top candidates]", q.Yes, q.Answered)
		}
		fmt.Fprintf(w, " %s %s%s\n", mark, q.English, split)
	}
	printFallbacks(w, a.Fallbacks)
	b := a.Best()
	if b == nil {
		fmt.Fprintf(w, "no question to ask\n")
		return
	}
	fmt.Fprintf(w, "\nnext question: %s\n", b.Shown)
	fmt.Fprintf(w, "(answer %s, %s or in words, and add the turn %q to the dialog)\n", a.Yes, a.No, pipeline.Turn(b.Shown, a.Yes))
}

func head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
