package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/pipeline"
)

// SearchSpec is one search as asked: the gallery, the stage options and
// the query.
type SearchSpec struct {
	Gallery GallerySpec
	// PromptDir overrides the built-in prompts ("" for none).
	PromptDir string
	// Domain is the prompt set ("": general, chat for dialogues).
	Domain      string
	Tau         float64
	TopK, Alpha int
	// Text is a description, or with Ref the change to make to it.
	Text string
	// Dialogue is a chat, caption first (Text already appended).
	Dialogue []string
	// Ref is the reference image: the name of a gallery image, or a file
	// (the gallery image when it is one of the gallery's files).
	Ref string
	// MaxStage is the last stage to run; Depth the ranking's length.
	MaxStage, Depth int
	// KeepReference keeps the reference image in the ranking.
	KeepReference bool
	// Ask proposes the next question to ask.
	Ask bool
}

// Search is a search ready to run: the opened gallery, its engine and
// the request. Close releases them.
type Search struct {
	App     *App
	Gallery *Gallery
	Engine  *pipeline.Engine
	Request pipeline.Request
}

// OpenSearch resolves the gallery (before any model loads: a typo should
// not cost a download), opens the models, the gallery (indexing a folder
// first) and the engine, and makes the request.
func OpenSearch(ctx context.Context, cfg *config.Config, spec SearchSpec, o Options) (*Search, error) {
	src, err := Resolve(ctx, cfg.Home, spec.Gallery)
	if err != nil {
		return nil, err
	}
	o.PromptDir, o.Interactive = spec.PromptDir, true
	a, err := Open(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	s := &Search{App: a}
	dom := spec.Domain
	if dom == "" {
		dom = "general"
	}
	if s.Gallery, err = a.OpenGallery(ctx, src, dom); err != nil {
		s.Close()
		return nil, err
	}
	opt := pipeline.DefaultOptions()
	opt.Tau, opt.TopK, opt.Alpha = float32(spec.Tau), spec.TopK, spec.Alpha
	AskOptions(cfg, &opt)
	if s.Engine, err = a.Engine(s.Gallery, opt, nil); err != nil {
		s.Close()
		return nil, err
	}
	s.Request = pipeline.Request{Instruction: spec.Text, Dialogue: spec.Dialogue, Domain: spec.Domain, MaxStage: spec.MaxStage,
		Depth: spec.Depth, ExcludeReference: !spec.KeepReference, Ask: spec.Ask}
	if spec.Ref != "" {
		if err := s.setReference(spec.Ref); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// setReference makes ref the request's reference: a gallery image by name
// or by its file, else the image in the file.
func (s *Search) setReference(ref string) error {
	ix := s.Gallery.Index
	if _, ok := ix.Position(ref); ok {
		s.Request.Reference = ref
		return nil
	}
	img, _, err := imageio.DecodeFile(ref, imageio.Limits{})
	if err != nil {
		return fmt.Errorf("reference image: %w", err)
	}
	s.Request.ReferenceImage = img
	if p, err := filepath.Abs(ref); err == nil {
		// A gallery image given by its path is the gallery image.
		for i, gp := range ix.Paths {
			if ap, _ := filepath.Abs(gp); ap == p {
				s.Request.Reference, s.Request.ReferenceImage = ix.Names[i], nil
				break
			}
		}
	}
	return nil
}

// Close releases the gallery and the models.
func (s *Search) Close() {
	s.Gallery.Close()
	s.App.Close()
}

// HasReference reports whether the query has a reference image.
func (s *Search) HasReference() bool {
	return s.Request.Reference != "" || s.Request.ReferenceImage != nil
}

// Refines reports whether a stage after the first will run on the query:
// it has text to verify, and stage 2 or 3 is asked for and has its roles.
func (s *Search) Refines() bool {
	r, eng := s.Request, s.Engine
	if r.Instruction == "" && len(r.Dialogue) == 0 {
		return false
	}
	return (r.MaxStage >= 2 && eng.SkipReason(2) == "") || (r.MaxStage >= 3 && eng.SkipReason(3) == "")
}

// Run runs the request; observe (may be nil) sees each stage start and end.
func (s *Search) Run(ctx context.Context, observe func(pipeline.StageEvent)) (*pipeline.Result, error) {
	return s.Engine.Search(ctx, s.Request, observe)
}

// ReadDialog reads a chat file: a JSON array of strings, or one turn per
// line (the caption first, then "question? answer" turns).
func ReadDialog(path string) ([]string, error) {
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
