package clip

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/hfhub"
	"github.com/imagescope/imagescope/imageio"
)

// Load loads a CLIP model. ref is a local checkpoint directory (used as
// is) or a HuggingFace model id such as "openai/clip-vit-base-patch32"
// (fetched through the hub cache); empty means DefaultModel.
//
// The directory needs config.json + model.safetensors (HF layout) or
// open_clip_config.json + open_clip_model.safetensors (open_clip layout);
// pytorch_model.bin / open_clip_pytorch_model.bin are read when the
// safetensors file is absent (tensors, storages and dicts only; any other
// pickled object is refused, nothing in the file is run);
// plus the tokenizer files (vocab.json + merges.txt, tokenizer.json) and
// preprocessor_config.json. Without tokenizer files the model embeds images
// only; without a preprocessor configuration CLIPImageProcessor's defaults
// for the configured image size are used.
func Load(ctx context.Context, ref string, opt Options) (*Model, error) {
	if ref == "" {
		ref = DefaultModel
	}
	dir, id, err := resolveRef(ctx, ref, opt)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := loadLocal(dir, opt)
	if err != nil {
		return nil, fmt.Errorf("load CLIP model %s: %w", ref, err)
	}
	if id != "" {
		m.id = id
	}
	if err := m.attachPreprocessing(dir); err != nil {
		return nil, fmt.Errorf("load CLIP model %s: %w", ref, err)
	}
	m.log.Info("clip model loaded", "model", m.id, "layout", m.layout,
		"vision", fmt.Sprintf("%dx%d/%d", m.cfg.Vision.Layers, m.cfg.Vision.Width, m.cfg.PatchSize),
		"text", fmt.Sprintf("%dx%d", m.cfg.Text.Layers, m.cfg.Text.Width), "dim", m.cfg.ProjectionDim,
		"tokenizer", m.tok != nil, "threads", m.threads)
	return m, nil
}

// isLocalRef reports whether ref names a local path rather than a hub id.
func isLocalRef(ref string) bool {
	if _, err := os.Stat(ref); err == nil {
		return true
	}
	return filepath.IsAbs(ref) || strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "~") ||
		strings.Count(ref, "/") != 1 || strings.ContainsRune(ref, filepath.Separator) && filepath.Separator != '/'
}

// resolveRef returns the local directory of ref and, for hub ids, the id.
func resolveRef(ctx context.Context, ref string, opt Options) (dir, id string, err error) {
	if isLocalRef(ref) {
		st, err := os.Stat(ref)
		if err != nil {
			return "", "", fmt.Errorf("load CLIP model %s: %w", ref, err)
		}
		if !st.IsDir() {
			return "", "", fmt.Errorf("load CLIP model %s: not a directory", ref)
		}
		return ref, "", nil
	}
	dir, err = fetchFromHub(ctx, ref, opt)
	if err != nil {
		if errors.Is(err, hfhub.ErrUnreachable) || errors.Is(err, hfhub.ErrOffline) {
			return "", "", fmt.Errorf("load CLIP model %s: %w; or give a local checkpoint folder instead of a hub id (--clip DIR, a folder holding config.json and model.safetensors or pytorch_model.bin)", ref, err)
		}
		return "", "", fmt.Errorf("load CLIP model %s: %w", ref, err)
	}
	return dir, ref, nil
}

// attachPreprocessing loads the tokenizer and the image processor of dir.
func (m *Model) attachPreprocessing(dir string) error {
	tok, err := LoadTokenizer(dir)
	if err != nil {
		m.log.Warn("clip model has no usable tokenizer; text embedding disabled", "dir", dir, "err", err)
	} else {
		if tok.VocabSize() > m.cfg.VocabSize {
			return fmt.Errorf("tokenizer has %d ids but the text tower only %d", tok.VocabSize(), m.cfg.VocabSize)
		}
		m.tok = tok.WithContextLength(m.cfg.ContextLength)
	}
	proc, err := LoadImageProcessor(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		proc = DefaultImageProcessor(m.cfg.ImageSize)
	case err != nil:
		return err
	}
	if proc.DoCenterCrop && (proc.CropHeight != m.cfg.ImageSize || proc.CropWidth != m.cfg.ImageSize) {
		return fmt.Errorf("preprocessor crops %dx%d but the vision tower takes %dx%d images",
			proc.CropWidth, proc.CropHeight, m.cfg.ImageSize, m.cfg.ImageSize)
	}
	m.proc = proc
	m.decode = func(path string) (image.Image, error) {
		img, _, err := imageio.DecodeFile(path, imageio.Limits{})
		return img, err
	}
	return nil
}

// SetTokenizer replaces the model's tokenizer (for checkpoints shipped
// without tokenizer files); its context is cut to the model's.
func (m *Model) SetTokenizer(t *Tokenizer) {
	m.tok = t.WithContextLength(m.cfg.ContextLength)
}

// Tokenizer returns the model's tokenizer (nil when it has none).
func (m *Model) Tokenizer() *Tokenizer { return m.tok }
