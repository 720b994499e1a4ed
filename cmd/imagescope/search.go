package main

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/imagescope/imagescope/app"
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
		if turns, err = app.ReadDialog(*dialog); err != nil {
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
	s, err := app.OpenSearch(ctx, cfg, app.SearchSpec{
		Gallery:   app.GallerySpec{Folder: *galleryDir, DB: *dbPath, Weaviate: *wvCollection},
		PromptDir: *promptDir, Domain: *domain, Tau: *tau, TopK: *topK, Alpha: *alpha,
		Text: text, Dialogue: turns, Ref: *ref, MaxStage: lastStage, Depth: max(*limit, *topK), KeepReference: *keepRef, Ask: *ask,
	}, app.Options{Log: e.log, Getenv: e.getenv, Progress: progressPrinter(e), Bars: e.stderr})
	if err != nil {
		return err
	}
	defer s.Close()
	var observe func(pipeline.StageEvent)
	if !*asJSON && s.Refines() && progress.IsTerminal(e.stdout) {
		observe = func(ev pipeline.StageEvent) {
			if ev.Stage == 1 && !ev.Started && ev.Ranking != nil {
				printFirstResults(e, ev.Ranking, *limit)
			}
		}
	}
	res, err := s.Run(ctx, observe)
	if err != nil {
		return err
	}
	if len(res.Ranking) > *limit {
		res.Ranking = res.Ranking[:*limit]
	}
	images := s.Gallery.Images
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
	printSearch(e, res, images, s.HasReference())
	return nil
}

// btoi counts a given flag.
func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
