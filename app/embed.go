package app

import (
	"context"

	"github.com/imagescope/imagescope/clip"
)

// EmbedInput is one thing to embed: an image file, or a text.
type EmbedInput struct {
	Image bool
	// Input is the image's path or the text.
	Input string
}

// Embed embeds inputs with m and returns their embeddings in input order:
// the images in one batch, the texts in another. An input that cannot be
// embedded has its Err set; the error returned is for the whole call.
func Embed(ctx context.Context, m *clip.Model, inputs []EmbedInput) ([]clip.Embedding, error) {
	var imgIdx, txtIdx []int
	var paths, texts []string
	for i, in := range inputs {
		if in.Image {
			imgIdx, paths = append(imgIdx, i), append(paths, in.Input)
		} else {
			txtIdx, texts = append(txtIdx, i), append(texts, in.Input)
		}
	}
	results := make([]clip.Embedding, len(inputs))
	if len(paths) > 0 {
		res, err := m.EmbedImageFiles(ctx, paths)
		if err != nil {
			return nil, err
		}
		for k, i := range imgIdx {
			results[i] = res[k]
		}
	}
	if len(texts) > 0 {
		res, err := m.EmbedTexts(ctx, texts)
		if err != nil {
			return nil, err
		}
		for k, i := range txtIdx {
			results[i] = res[k]
		}
	}
	return results, nil
}
