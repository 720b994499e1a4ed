// Package app is the application layer under the imagescope commands: what
// index, search, eval, serve and worker share, decided once.
//
//   - Galleries: a plain folder or a benchmark split resolves to its image
//     DB by one naming rule (FolderDB, SplitDBName), is indexed
//     incrementally and loaded into a search index; a Weaviate collection
//     opens in its place.
//   - Engines: the model roles (with the answer cache), the prompt library
//     and CLIP are wired into a pipeline.Engine the same way for every
//     command, so the same flags give the same engine.
//   - Runs: a benchmark run gets its run folder, log and reports; a
//     resumed run keeps what its folder fixes (PlanEval, RunEval).
//   - Commands: one search with its reference image (OpenSearch) and the
//     server over a gallery with its thumbnails (OpenServe) are opened here.
//
// The commands in cmd/imagescope parse flags, call this package and print.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/prompt"
)

// App holds what a model-running command opens once: the configuration,
// CLIP, the model roles and the prompt library. Close releases it.
type App struct {
	Config  *config.Config
	Model   *clip.Model
	Roles   *Roles
	Prompts *prompt.Library
	// PromptDir is the folder overriding the built-in prompts ("" for none).
	PromptDir string
	Log       *slog.Logger
	getenv    func(string) string
	bars      io.Writer
}

// Options are what Open needs besides the configuration.
type Options struct {
	// PromptDir overrides built-in prompt templates ("" for none).
	PromptDir string
	// Prompts, when set, is the library already loaded from PromptDir.
	Prompts *prompt.Library
	// Log receives structured progress (default: discarded).
	Log *slog.Logger
	// Getenv reads the environment (Weaviate URL and API key); default
	// reads nothing.
	Getenv func(string) string
	// Progress reports hub downloads of the CLIP checkpoint.
	Progress func(file string, done, total int64)
	// Interactive opens the model roles for interactive use (serve,
	// search): calls fail fast while a role is down, so searches degrade.
	Interactive bool
	// Bars, when set, receives the progress bar of indexing a gallery
	// before it is searched (the bar 'imagescope index' draws).
	Bars io.Writer
}

// Open loads the prompts, CLIP and the configured model roles.
func Open(ctx context.Context, cfg *config.Config, o Options) (*App, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	lib := o.Prompts
	if lib == nil {
		var err error
		if lib, err = prompt.Load(o.PromptDir); err != nil {
			return nil, err
		}
	}
	model, err := clip.Load(ctx, cfg.CLIP.Model, clip.Options{Threads: cfg.CLIP.Threads, Logger: o.Log, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	roles, err := OpenRoles(ctx, cfg, o.Log, o.Interactive)
	if err != nil {
		return nil, err
	}
	return &App{Config: cfg, Model: model, Roles: roles, Prompts: lib, PromptDir: o.PromptDir, Log: o.Log, getenv: o.Getenv, bars: o.Bars}, nil
}

// Close releases the roles' answer cache.
func (a *App) Close() {
	if a != nil && a.Roles != nil {
		a.Roles.Close()
	}
}

// CheckDomain fails when the prompt library (the built-in one, or with
// promptDir's overrides) has no prompt set named domain. It loads no
// model: commands check their flags with it first.
func CheckDomain(promptDir, domain string) error {
	lib, err := prompt.Load(promptDir)
	if err != nil {
		return err
	}
	if !lib.HasDomain(domain) {
		return fmt.Errorf("unknown prompt set %q", domain)
	}
	return nil
}
