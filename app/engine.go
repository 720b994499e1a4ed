package app

import (
	"bytes"
	"image"
	"log/slog"

	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
)

// Engine wires the app's roles, prompts and CLIP over g into a pipeline
// engine. opt's per-role in-flight bounds come from the configuration
// (what each role's endpoints accept in total). log receives the engine's
// records (nil: the app's log).
func (a *App) Engine(g *Gallery, opt pipeline.Options, log *slog.Logger) (*pipeline.Engine, error) {
	if log == nil {
		log = a.Log
	}
	opt.InFlight = InFlight(a.Config)
	var searcher pipeline.Searcher
	var gal pipeline.Gallery
	if g.weaviate != nil {
		searcher, gal = g.weaviate.searcher()
	} else {
		ad := adapt.Index{Index: g.Index}
		searcher, gal = ad, ad
	}
	r := a.Roles
	return pipeline.New(pipeline.Config{
		Embedder:      adapt.CLIP{Model: a.Model},
		ImageEmbedder: adapt.CLIP{Model: a.Model},
		Searcher:      searcher,
		Gallery:       gal,
		Images:        g.Images,
		Decode:        decodeImage,
		Roles: pipeline.Roles{
			Captioner:  r.Chatter(modelrole.Captioner),
			Reasoner:   r.Chatter(modelrole.Reasoner),
			Proposer:   r.Chatter(modelrole.Proposer),
			Questioner: r.Chatter(modelrole.Questioner),
			Verifier:   r.Chatter(modelrole.Verifier),
			Evaluator:  r.Chatter(modelrole.Evaluator),
		},
		Prompts: a.Prompts,
		Options: opt,
		Log:     log,
	})
}

func decodeImage(b []byte) (image.Image, error) {
	img, _, err := imageio.Decode(bytes.NewReader(b), imageio.Limits{})
	return img, err
}
