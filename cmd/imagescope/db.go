package main

import (
	"context"
	"fmt"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
)

// runDB implements 'imagescope db'.
func runDB(ctx context.Context, e *env, args []string) error {
	const usage = `Usage: imagescope db <info|import|export> [flags]

  info    [--db PATH | --name NAME] [--failures] [--json]   what an image DB holds (no DB: list them)
  import  --npy DIR --clip MODEL (--db PATH | --name NAME)   import a reference-implementation image DB
  export  --npy DIR (--db PATH | --name NAME)                write the reference layout (4 files)

NAME is a DB under $IMAGESCOPE_HOME/db (e.g. CIRR_val, CIRCO_test).`
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stdout, usage)
		if len(args) == 0 {
			return usagef("missing subcommand: info, import or export")
		}
		return nil
	}
	switch args[0] {
	case "info":
		return runDBInfo(ctx, e, args[1:])
	case "import":
		return runDBImport(ctx, e, args[1:])
	case "export":
		return runDBExport(ctx, e, args[1:])
	}
	return usagef("unknown subcommand %q: want info, import or export", args[0])
}

// dbFlags are the flags naming a DB.
type dbFlags struct {
	path, name, config *string
}

func addDBFlags(fsAdd func(name, value, usage string) *string) dbFlags {
	return dbFlags{
		path:   fsAdd("db", "", "image DB file"),
		name:   fsAdd("name", "", "image DB name under $IMAGESCOPE_HOME/db (without .db)"),
		config: fsAdd("config", "", "configuration file (default $IMAGESCOPE_CONFIG), for the home folder"),
	}
}

func (f dbFlags) home(e *env) (string, error) {
	cpath := *f.config
	if cpath == "" {
		cpath = e.getenv("IMAGESCOPE_CONFIG")
	}
	cfg, err := config.Load(cpath, e.getenv)
	if err != nil {
		return "", err
	}
	return cfg.Home, nil
}

// resolve returns the DB path ("" when neither flag is set).
func (f dbFlags) resolve(e *env) (string, error) {
	switch {
	case *f.path != "" && *f.name != "":
		return "", usagef("give --db or --name, not both")
	case *f.path != "":
		return *f.path, nil
	case *f.name != "":
		home, err := f.home(e)
		if err != nil {
			return "", err
		}
		return app.NamedDB(home, *f.name), nil
	}
	return "", nil
}

func runDBImport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "db import", "--npy DIR --clip MODEL (--db PATH | --name NAME) [flags]",
		`Import a reference-implementation image DB folder: image_name_list.npy,
image_embedding.npy and, together, image_caption_emebdding.npy and
image_caption.json (an object name -> caption, or a list in name order).
Dtypes, shapes, counts and names are checked before anything is written; the
import is one transaction.`)
	df := addDBFlags(fs.String)
	dir := fs.String("npy", "", "folder holding the .npy files")
	clipModel := fs.String("clip", "", "the CLIP model the embeddings were made with (e.g. openai/clip-vit-large-patch14); required")
	captioner := fs.String("captioner", "imported", "name of the model that wrote the captions")
	capPrompt := fs.String("caption-prompt", "", "the caption instruction used (recorded with the caption set)")
	float16 := fs.Bool("float16", false, "store embeddings as float16")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *dir == "" || *clipModel == "" {
		return usagef("--npy and --clip are required")
	}
	path, err := df.resolve(e)
	if err != nil {
		return err
	}
	if path == "" {
		return usagef("give --db PATH or --name NAME for the image DB to import into")
	}
	db, err := gallery.Open(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	sum, err := db.ImportNPY(ctx, *dir, gallery.ImportOptions{ClipModel: *clipModel, CaptionModel: *captioner, CaptionPrompt: *capPrompt, Float16: *float16})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "imported %d images (dimension %d) into %s", sum.Images, sum.Dim, path)
	if sum.Captions {
		fmt.Fprintf(e.stdout, " with captions (caption set %s)", sum.CaptionKey)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func runDBExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "db export", "--npy DIR (--db PATH | --name NAME) [--caption-set KEY]",
		`Write an image DB in the reference implementation's layout: image_name_list.npy,
image_embedding.npy, image_caption_emebdding.npy (float32, L2-normalised) and
image_caption.json (name -> caption), in gallery order.`)
	df := addDBFlags(fs.String)
	dir := fs.String("npy", "", "output folder")
	capSet := fs.String("caption-set", "", "caption set to export (default: the most complete)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		return usagef("--npy is required")
	}
	path, err := df.resolve(e)
	if err != nil {
		return err
	}
	if path == "" {
		return usagef("give --db PATH or --name NAME")
	}
	db, err := app.OpenExistingDB(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	info, err := db.ExportNPY(ctx, *dir, *capSet)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d images (CLIP %s, dimension %d, caption set %s) to %s\n", info.Images, info.ClipModel, info.Dim, info.CaptionKey, *dir)
	return nil
}
