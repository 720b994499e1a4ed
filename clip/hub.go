package clip

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/imagescope/imagescope/hfhub"
)

// hubSmallFiles are the configuration and tokenizer files of a CLIP repo,
// all optional (repos ship different subsets).
func hubSmallFiles() []string {
	return []string{
		"config.json", "open_clip_config.json", "preprocessor_config.json",
		"tokenizer_config.json", "special_tokens_map.json",
		"vocab.json", "merges.txt", "tokenizer.json",
	}
}

// fetchFromHub makes the files of hub model id available in the hub cache
// and returns the snapshot directory. The configuration files come first;
// then only one weight file is fetched, the first the repo has of
// model.safetensors (HF layout, when it has config.json),
// open_clip_model.safetensors, pytorch_model.bin and
// open_clip_pytorch_model.bin.
func fetchFromHub(ctx context.Context, id string, opt Options) (string, error) {
	hub := opt.Hub
	if hub == nil {
		hub = hfhub.NewClient(hfhub.Options{Logger: opt.Logger})
	}
	var small []hfhub.File
	for _, n := range hubSmallFiles() {
		small = append(small, hfhub.File{Name: n, Optional: true})
	}
	dir, err := hub.Snapshot(ctx, id, opt.Revision, small, opt.Progress)
	if err != nil {
		return "", err
	}
	// Later requests pin the commit the first one resolved.
	rev := filepath.Base(dir)
	// Weights: safetensors first, then PyTorch (pickle) checkpoints, read
	// by a restricted unpickler (see pytorch.go).
	var order []string
	switch opt.Layout {
	case LayoutHF:
		order = []string{"model.safetensors", "pytorch_model.bin"}
	case LayoutOpenCLIP:
		order = []string{"open_clip_model.safetensors", "open_clip_pytorch_model.bin"}
	default:
		hf := existsFile(filepath.Join(dir, "config.json"))
		oc := existsFile(filepath.Join(dir, "open_clip_config.json")) || hf
		for _, w := range []struct {
			name string
			ok   bool
		}{{"model.safetensors", hf}, {"open_clip_model.safetensors", oc}, {"pytorch_model.bin", hf}, {"open_clip_pytorch_model.bin", oc}} {
			if w.ok {
				order = append(order, w.name)
			}
		}
	}
	if len(order) == 0 {
		return "", fmt.Errorf("hub %s: neither config.json nor open_clip_config.json exists; is it a CLIP model?", id)
	}
	for _, w := range order {
		d, err := hub.Snapshot(ctx, id, rev, []hfhub.File{{Name: w, Optional: true}}, opt.Progress)
		if err != nil {
			return "", err
		}
		if existsFile(filepath.Join(d, w)) {
			return d, nil
		}
	}
	return "", fmt.Errorf("hub %s: no weights found (looked for %v)", id, order)
}
