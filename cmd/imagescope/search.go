package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/internal/progress"
	"github.com/imagescope/imagescope/pipeline"
)

// runSearch implements 'imagescope search'.
func runSearch(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "search", `["TEXT"] [--ref IMAGE] [--dialog FILE] (--gallery DIR | --db PATH | --weaviate COLLECTION) [--json]`,
		`Run one query through the configured stages and print the ranking with each
stage's reasoning. TEXT is a description (text-to-image), or with --ref the
change to make to the reference image (composed retrieval). --ref without
TEXT finds images like the reference ("more like this"): CLIP image-to-image
similarity fused with caption similarity, the reference left out, stages 2
and 3 skipped (no text to verify). On a terminal the stage-1 ranking is
printed as soon as it exists, then the final one (--json prints only the
final result). --dialog FILE
holds a chat (a JSON array of strings, or one turn per line: the caption
first, then "question? answer" turns); TEXT, if given, is added as the newest
turn. --ask proposes the question to ask next (the one whose yes/no answer
best splits the current top candidates; printed last, in the user's
language): answer it and add "question? answer" to the dialog. Stages whose model roles are not configured are skipped, and the output
says which and why. --gallery indexes a folder (incrementally) first; --db
searches an existing image DB.`)
	ref := fs.String("ref", "", "reference image: a file, or the name of a gallery image")
	dialog := fs.String("dialog", "", "chat file (JSON array of turns, or one turn per line)")
	galleryDir := fs.String("gallery", "", "image folder to search (indexed into an image DB first)")
	dbPath := fs.String("db", "", "image DB to search")
	wvCollection := fs.String("weaviate", "", "search this Weaviate collection (filled by 'index --queue ... --weaviate'; server from the config's weaviate.url or $IMAGESCOPE_WEAVIATE_URL) instead of an image DB")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	ask := fs.Bool("ask", false, "propose the next question to ask (text or chat queries; needs a reasoner or questioner, and a verifier to choose among questions)")
	cf := addConfigFlags(fs)
	stagesFlag := fs.String("stages", "s1,s2,s3", "stages to run: s1 | s1,s2 | s1,s2,s3")
	tau := fs.Float64("tau", 0.15, "caption weight in the fused score")
	topK := fs.Int("top-k", 20, "stage 2: candidates verified")
	alpha := fs.Int("alpha", 3, "stage 3: candidates evaluated")
	domain := fs.String("domain", "", "prompt set: general, cirr, fashion-dress, fashion-shirt, fashion-toptee, chat (default general, chat for dialogues)")
	limit := fs.Int("n", 10, "results to print")
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones")
	keepRef := fs.Bool("keep-reference", false, "keep the reference image in the ranking")
	// Flags may come before or after TEXT.
	var words []string
	for rest := args; ; {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			words = append(words, rest...)
			break
		}
		words, rest = append(words, rest[0]), rest[1:]
	}
	text := strings.TrimSpace(strings.Join(words, " "))
	if n := btoi(*galleryDir != "") + btoi(*dbPath != "") + btoi(*wvCollection != ""); n != 1 {
		return usagef("give exactly one of --gallery DIR, --db PATH and --weaviate COLLECTION")
	}
	if text == "" && *dialog == "" && *ref == "" {
		return usagef("nothing to search: give TEXT, --ref IMAGE (images like it) or --dialog FILE")
	}
	if *ref != "" && *dialog != "" {
		return usagef("--ref and --dialog do not go together: a chat takes no reference image")
	}
	lastStage, err := parseStages(*stagesFlag)
	if err != nil {
		return usagef("%v", err)
	}
	if *tau < 0 || *tau > 1 || *topK < 1 || *alpha < 1 || *limit < 1 {
		return usagef("--tau must be within [0,1]; --top-k, --alpha and -n >= 1")
	}
	var turns []string
	if *dialog != "" {
		if turns, err = readDialog(*dialog); err != nil {
			return err
		}
		if text != "" {
			turns = append(turns, text)
		}
	}
	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	// The gallery is resolved before the model loads: a typo should not
	// cost a download.
	src, err := app.Resolve(ctx, cfg.Home, app.GallerySpec{Folder: *galleryDir, DB: *dbPath, Weaviate: *wvCollection})
	if err != nil {
		return err
	}
	a, err := app.Open(ctx, cfg, app.Options{PromptDir: *promptDir, Log: e.log, Getenv: e.getenv, Progress: progressPrinter(e), Bars: e.stderr, Interactive: true})
	if err != nil {
		return err
	}
	defer a.Close()
	dom := *domain
	if dom == "" {
		dom = "general"
	}
	g, err := a.OpenGallery(ctx, src, dom)
	if err != nil {
		return err
	}
	defer g.Close()
	ix, images := g.Index, g.Images
	opt := pipeline.DefaultOptions()
	opt.Tau, opt.TopK, opt.Alpha = float32(*tau), *topK, *alpha
	app.AskOptions(cfg, &opt)
	eng, err := a.Engine(g, opt, nil)
	if err != nil {
		return err
	}
	req := pipeline.Request{Instruction: text, Dialogue: turns, Domain: *domain, MaxStage: lastStage, Depth: max(*limit, *topK), ExcludeReference: !*keepRef, Ask: *ask}
	if *ref != "" {
		if _, ok := ix.Position(*ref); ok {
			req.Reference = *ref
		} else {
			img, _, err := imageio.DecodeFile(*ref, imageio.Limits{})
			if err != nil {
				return fmt.Errorf("reference image: %w", err)
			}
			req.ReferenceImage = img
			if p, err := filepath.Abs(*ref); err == nil {
				// A gallery image given by its path is the gallery image.
				for i, gp := range ix.Paths {
					if ap, _ := filepath.Abs(gp); ap == p {
						req.Reference, req.ReferenceImage = ix.Names[i], nil
						break
					}
				}
			}
		}
	}
	var observe func(pipeline.StageEvent)
	imageOnly := text == "" && len(turns) == 0
	refines := !imageOnly && ((lastStage >= 2 && eng.SkipReason(2) == "") || (lastStage >= 3 && eng.SkipReason(3) == ""))
	if !*asJSON && refines && progress.IsTerminal(e.stdout) {
		observe = func(ev pipeline.StageEvent) {
			if ev.Stage == 1 && !ev.Started && ev.Ranking != nil {
				printFirstResults(e, ev.Ranking, *limit)
			}
		}
	}
	res, err := eng.Search(ctx, req, observe)
	if err != nil {
		return err
	}
	if len(res.Ranking) > *limit {
		res.Ranking = res.Ranking[:*limit]
	}
	if *asJSON {
		out := struct {
			*pipeline.Result
			Paths map[string]string `json:"paths"`
		}{res, map[string]string{}}
		for _, c := range res.Ranking {
			out.Paths[c.Name] = images[c.Name]
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	printSearch(e, res, images, req.Reference != "" || req.ReferenceImage != nil)
	return nil
}

// readDialog reads a chat file: a JSON array of strings, or one turn per line.
func readDialog(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dialog file: %w", err)
	}
	var turns []string
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "[") {
		if err := json.Unmarshal([]byte(t), &turns); err != nil {
			return nil, fmt.Errorf("dialog file %s: want a JSON array of strings: %w", path, err)
		}
	} else {
		for _, l := range strings.Split(t, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				turns = append(turns, l)
			}
		}
	}
	if len(turns) == 0 {
		return nil, fmt.Errorf("dialog file %s: no turns", path)
	}
	for i, s := range turns {
		if strings.TrimSpace(s) == "" {
			return nil, fmt.Errorf("dialog file %s: turn %d is empty", path, i)
		}
	}
	return turns, nil
}

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
			if len(s.Fallbacks) > 0 {
				fmt.Fprintf(w, "  fallbacks: %s\n", strings.Join(s.Fallbacks, ", "))
			}
			fmt.Fprintf(w, "  tau %.2f, top: %s\n", s.Tau, strings.Join(head(s.Names(), 5), ", "))
		case st.Stage2 != nil:
			s := st.Stage2
			if s.Skipped != "" {
				fmt.Fprintf(w, "\n== stage 2%s: verify skipped: %s\n", round, s.Skipped)
				continue
			}
			fmt.Fprintf(w, "\n== stage 2%s: verify (%s)\n", round, st.Elapsed.Round(1e6))
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
			if len(s.Fallbacks) > 0 {
				fmt.Fprintf(w, "  fallbacks: %s\n", strings.Join(s.Fallbacks, ", "))
			}
		case st.Stage3 != nil:
			s := st.Stage3
			if s.Skipped != "" {
				fmt.Fprintf(w, "\n== stage 3%s: evaluate skipped: %s\n", round, s.Skipped)
				continue
			}
			fmt.Fprintf(w, "\n== stage 3%s: evaluate (%s)\n", round, st.Elapsed.Round(1e6))
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
	}
	printRanking(w, res.Ranking, images)
	if res.Ask != nil {
		printAsk(w, res.Ask)
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
	if len(a.Fallbacks) > 0 {
		fmt.Fprintf(w, "  fallbacks: %s\n", strings.Join(a.Fallbacks, ", "))
	}
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
