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
// then only one weight file is fetched: model.safetensors for the HF layout
// (when the repo has config.json and the layout is not forced), else
// open_clip_model.safetensors.
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
	var order []string
	switch opt.Layout {
	case LayoutHF:
		order = []string{"model.safetensors"}
	case LayoutOpenCLIP:
		order = []string{"open_clip_model.safetensors"}
	default:
		if existsFile(filepath.Join(dir, "config.json")) {
			order = append(order, "model.safetensors")
		}
		if existsFile(filepath.Join(dir, "open_clip_config.json")) || existsFile(filepath.Join(dir, "config.json")) {
			order = append(order, "open_clip_model.safetensors")
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
	return "", fmt.Errorf("hub %s: no safetensors weights (%v); PyTorch .bin checkpoints are not supported", id, order)
}
