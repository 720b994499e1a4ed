package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/gallery"
)

// runDBInfo implements 'imagescope db info'.
func runDBInfo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "db info", "[--db PATH | --name NAME] [--failures] [--json]",
		"Show what an image DB holds: CLIP model, images, embeddings, caption sets and failed images. Without a DB, list the DBs under $IMAGESCOPE_HOME/db.")
	df := addDBFlags(fs.String)
	failures := fs.Bool("failures", false, "list every failed image")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	path, err := df.resolve(e)
	if err != nil {
		return err
	}
	if path == "" {
		home, err := df.home(e)
		if err != nil {
			return err
		}
		dir, names, err := app.ListDBs(home)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(map[string]any{"dir": dir, "dbs": names})
		}
		fmt.Fprintf(e.stdout, "image DBs in %s:\n", dir)
		for _, n := range names {
			fmt.Fprintf(e.stdout, "  %s\n", n)
		}
		if len(names) == 0 {
			fmt.Fprintln(e.stdout, "  (none; create one with 'imagescope index')")
		}
		return nil
	}
	db, err := app.OpenExistingDB(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := db.Stats(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if st.CaptionSets == nil {
			st.CaptionSets = []gallery.CaptionSet{}
		}
		if st.Failures == nil {
			st.Failures = []gallery.Failure{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := e.stdout
	fmt.Fprintf(w, "image DB %s\n", st.Path)
	model := st.ClipModel
	if model == "" {
		model = "(none yet)"
	}
	fmt.Fprintf(w, "  CLIP model:       %s (dimension %d)\n", model, st.Dim)
	fmt.Fprintf(w, "  images:           %d\n  image embeddings: %d\n", st.Images, st.ImageEmbeddings)
	if len(st.CaptionSets) == 0 {
		fmt.Fprintf(w, "  caption sets:     none (search treats tau as 0)\n")
	}
	for _, s := range st.CaptionSets {
		fmt.Fprintf(w, "  caption set %s: captioner %s, prompt %s, %d captions, %d caption embeddings\n", s.Key, s.Captioner, s.PromptHash, s.Captions, s.Embedded)
	}
	fmt.Fprintf(w, "  failed images:    %d\n", len(st.Failures))
	for i, f := range st.Failures {
		if i == 10 && !*failures {
			fmt.Fprintf(w, "    ... and %d more (--failures lists all)\n", len(st.Failures)-10)
			break
		}
		fmt.Fprintf(w, "    %s [%s]: %s\n", f.Name, f.Stage, strings.ReplaceAll(f.Reason, "\n", " "))
	}
	return nil
}
