package clip

import (
	"context"
	"errors"
	"fmt"
	"image"
	"strings"

	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/internal/parallel"
)

// Embedding is one item's result: the projected (not normalised) feature, or
// the reason this item could not be embedded.
type Embedding struct {
	Vector []float32
	Err    error
}

// Normalize scales v in place to unit L2 norm (a zero or non-finite
// vector is left as is), the way the image DB and the pipeline normalise.
func Normalize(v []float32) { l2.Normalize(v) }

// ErrEmptyText is the per-item error for a text with nothing to embed.
var ErrEmptyText = errors.New("empty text")

// EmbedTexts embeds texts. A bad item (empty text) gets its own error in the
// result and the others are still embedded; the returned error is for
// failures of the whole call (cancellation, no tokenizer).
func (m *Model) EmbedTexts(ctx context.Context, texts []string) ([]Embedding, error) {
	if m.tok == nil {
		return nil, fmt.Errorf("model %s has no tokenizer (vocab.json + merges.txt or tokenizer.json)", m.id)
	}
	out := make([]Embedding, len(texts))
	var ids [][]int32
	var eots []int
	var idx []int
	for i, t := range texts {
		if strings.TrimSpace(t) == "" {
			out[i].Err = fmt.Errorf("text %d: %w", i, ErrEmptyText)
			continue
		}
		seq, eot := m.tok.Encode(t)
		if eot < 0 || eot >= len(seq) {
			out[i].Err = fmt.Errorf("text %d: tokenizer returned end position %d for %d ids", i, eot, len(seq))
			continue
		}
		ids = append(ids, seq)
		eots = append(eots, eot)
		idx = append(idx, i)
	}
	if len(ids) == 0 {
		return out, nil
	}
	_, emb, err := m.textBatches(ctx, ids, eots, false, nil)
	if err != nil {
		return nil, fmt.Errorf("embed texts: %w", err)
	}
	for j, i := range idx {
		out[i].Vector = emb[j]
	}
	return out, nil
}

// pixelsOf preprocesses one image, turning a panic inside the processor
// into an error so that one odd image cannot take the batch down.
func (m *Model) pixelsOf(img image.Image) (px []float32, err error) {
	if img == nil {
		return nil, errors.New("nil image")
	}
	b := img.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 {
		return nil, fmt.Errorf("image has no pixels (%dx%d)", b.Dx(), b.Dy())
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("preprocess: %v", r)
		}
	}()
	px = m.proc.Pixels(img)
	want := m.cfg.Channels * m.cfg.ImageSize * m.cfg.ImageSize
	if len(px) != want {
		return nil, fmt.Errorf("preprocess produced %d values, want %d", len(px), want)
	}
	return px, nil
}

// EmbedImages embeds decoded images with per-item errors.
func (m *Model) EmbedImages(ctx context.Context, imgs []image.Image) ([]Embedding, error) {
	if m.proc == nil {
		return nil, fmt.Errorf("model %s has no image processor configuration", m.id)
	}
	out := make([]Embedding, len(imgs))
	bs := m.imageBatchSize()
	for lo := 0; lo < len(imgs); lo += bs {
		hi := min(lo+bs, len(imgs))
		px := make([][]float32, hi-lo)
		parallel.For(m.threads, hi-lo, func(_, j int) {
			p, err := m.pixelsOf(imgs[lo+j])
			if err != nil {
				out[lo+j].Err = fmt.Errorf("image %d: %w", lo+j, err)
				return
			}
			px[j] = p
		})
		if err := m.embedPixelsInto(ctx, out[lo:hi], px); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// embedPixelsInto embeds the non-nil pixel tensors into out.
func (m *Model) embedPixelsInto(ctx context.Context, out []Embedding, px [][]float32) error {
	var batch [][]float32
	var idx []int
	for j, p := range px {
		if p != nil {
			batch = append(batch, p)
			idx = append(idx, j)
		}
	}
	if len(batch) == 0 {
		return ctx.Err()
	}
	_, emb, err := m.imageBatches(ctx, batch, nil)
	if err != nil {
		return fmt.Errorf("embed images: %w", err)
	}
	for k, j := range idx {
		out[j].Vector = emb[k]
	}
	return nil
}

// EmbedImageFiles decodes (JPEG, PNG, GIF, BMP, WebP; EXIF orientation
// applied; oversized images refused before their pixels are decoded),
// preprocesses and embeds image files. An unreadable or invalid file gets its
// own error naming the path; the other files are still embedded.
func (m *Model) EmbedImageFiles(ctx context.Context, paths []string) ([]Embedding, error) {
	if m.proc == nil || m.decode == nil {
		return nil, fmt.Errorf("model %s has no image processor configuration", m.id)
	}
	out := make([]Embedding, len(paths))
	bs := m.imageBatchSize()
	for lo := 0; lo < len(paths); lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(lo+bs, len(paths))
		px := make([][]float32, hi-lo)
		parallel.For(m.threads, hi-lo, func(_, j int) {
			path := paths[lo+j]
			img, err := m.decodeSafe(path)
			if err != nil {
				out[lo+j].Err = fmt.Errorf("image %s: %w", path, err)
				return
			}
			p, err := m.pixelsOf(img)
			if err != nil {
				out[lo+j].Err = fmt.Errorf("image %s: %w", path, err)
				return
			}
			px[j] = p
		})
		if err := m.embedPixelsInto(ctx, out[lo:hi], px); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeSafe decodes one file, turning a decoder panic on hostile input into
// an error for that file alone.
func (m *Model) decodeSafe(path string) (img image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("decode: %v", r)
		}
	}()
	return m.decode(path)
}
