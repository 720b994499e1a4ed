// Package adapt connects the concrete packages (clip, llm, vindex) to the
// small interfaces their consumers define (pipeline, gallery), so the
// commands and the server wire one engine the same way.
package adapt

import (
	"context"
	"errors"
	"fmt"
	"image"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/vindex"
)

// Chatter makes an llm.Client a pipeline.Chatter; a role that is down is
// reported as *pipeline.RoleDownError.
type Chatter struct {
	Role   modelrole.Name
	Client *llm.Client
}

// Chat implements pipeline.Chatter.
func (a Chatter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	lr := llm.ChatRequest{MaxTokens: req.MaxTokens, Stop: req.Stop, Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs, Extra: req.Extra}
	for _, m := range req.Messages {
		lm := llm.Message{Role: m.Role}
		for _, p := range m.Parts {
			if p.Image == nil {
				lm.Parts = append(lm.Parts, llm.TextPart(p.Text))
				continue
			}
			img := p.Image
			var li *llm.ImageData
			if img.Memo != nil {
				// One *llm.ImageData per image, so the client encodes it once.
				li = img.Memo.Get(func() any { return llm.ImageBytes(img.Bytes, img.MIME) }).(*llm.ImageData)
			} else {
				li = llm.ImageBytes(img.Bytes, img.MIME)
			}
			lm.Parts = append(lm.Parts, llm.ImagePart(li))
		}
		lr.Messages = append(lr.Messages, lm)
	}
	resp, err := a.Client.Chat(ctx, lr)
	if err != nil {
		if errors.Is(err, llm.ErrRoleDown) {
			return nil, &pipeline.RoleDownError{Role: a.Role, Last: err}
		}
		return nil, err
	}
	out := &pipeline.ChatResponse{Text: resp.Text, FinishReason: resp.FinishReason, Cached: resp.Cached,
		PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens}
	if p, ok := resp.YesNo(); ok {
		out.PYes = &p
	}
	return out, nil
}

// CLIP makes an in-process clip.Model a pipeline.TextEmbedder and a
// gallery.Embedder.
type CLIP struct{ Model *clip.Model }

// ModelID implements gallery.Embedder.
func (c CLIP) ModelID() string { return c.Model.ID() }

// Dim implements gallery.Embedder.
func (c CLIP) Dim() int { return c.Model.Dim() }

// EmbedTexts embeds texts; any per-text failure fails the call, naming the
// text.
func (c CLIP) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	res, err := c.Model.EmbedTexts(ctx, texts)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(res))
	for i, r := range res {
		if r.Err != nil {
			return nil, fmt.Errorf("embed text %q: %w", texts[i], r.Err)
		}
		out[i] = r.Vector
	}
	return out, nil
}

// EmbedImage implements pipeline.ImageEmbedder.
func (c CLIP) EmbedImage(ctx context.Context, img image.Image) ([]float32, error) {
	res, err := c.Model.EmbedImages(ctx, []image.Image{img})
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("embed image: got %d results for 1 image", len(res))
	}
	if res[0].Err != nil {
		return nil, res[0].Err
	}
	return res[0].Vector, nil
}

// EmbedImageFiles implements gallery.Embedder: per-file vectors and errors.
func (c CLIP) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	res, err := c.Model.EmbedImageFiles(ctx, paths)
	if err != nil {
		return nil, nil, err
	}
	vecs := make([][]float32, len(res))
	errs := make([]error, len(res))
	for i, r := range res {
		vecs[i], errs[i] = r.Vector, r.Err
	}
	return vecs, errs, nil
}

// Captioner makes the captioner role a gallery.Captioner: the image file
// and the domain's caption instruction, with the method's light repetition
// penalty (1.05); the completion budget is the role's configured max_tokens
// (256 by default, as the method).
type Captioner struct {
	Client      *llm.Client
	Instruction string
}

// Caption implements gallery.Captioner.
func (l Captioner) Caption(ctx context.Context, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	resp, err := l.Client.Chat(ctx, llm.ChatRequest{
		Messages: []llm.Message{llm.UserImages(l.Instruction, llm.ImageBytes(b, ""))},
		Extra:    map[string]any{"repetition_penalty": 1.05},
	})
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(resp.Text), nil
}

// VectorSearcher is the search shape shared by the in-memory vindex.Index
// and the Weaviate store.
type VectorSearcher interface {
	Search(ctx context.Context, qs []vindex.Query, k int) ([][]vindex.Hit, error)
}

// Searcher makes a VectorSearcher the pipeline's Searcher.
type Searcher struct{ S VectorSearcher }

// Search implements pipeline.Searcher.
func (a Searcher) Search(ctx context.Context, qs []pipeline.SearchQuery, k int) ([][]pipeline.Hit, error) {
	return a.S.Search(ctx, qs, k)
}

// Index makes an in-memory vindex.Index the pipeline's Searcher and
// Gallery.
type Index struct{ Index *vindex.Index }

// Search implements pipeline.Searcher.
func (a Index) Search(ctx context.Context, qs []pipeline.SearchQuery, k int) ([][]pipeline.Hit, error) {
	return Searcher{a.Index}.Search(ctx, qs, k)
}

// Lookup implements pipeline.Gallery.
func (a Index) Lookup(name string) (int, bool) { return a.Index.Position(name) }

// HasCaptions implements pipeline.Gallery.
func (a Index) HasCaptions() bool { return a.Index.HasCaptions() }

// ImageVector implements pipeline.GalleryVectors. A fused index holds no
// separate image vectors (the caller then embeds the image itself).
func (a Index) ImageVector(name string) ([]float32, bool) {
	i, ok := a.Index.Position(name)
	if !ok || a.Index.Fused {
		return nil, false
	}
	if a.Index.VectorsOnDisk() {
		img, _, err := a.Index.RowVectors(i)
		return img, err == nil
	}
	if (i+1)*a.Index.Dim > len(a.Index.Image) {
		return nil, false
	}
	return a.Index.Vector(i), true
}

// CaptionSimilarity implements pipeline.GalleryVectors: the dot product of
// the image's and its caption's normalised embeddings.
func (a Index) CaptionSimilarity(name string) (float32, bool) {
	ix := a.Index
	i, ok := ix.Position(name)
	if !ok || !ix.HasCaption {
		return 0, false
	}
	if i < len(ix.Captions) && ix.Captions[i] == "" {
		return 0, false
	}
	var img, cap []float32
	if ix.VectorsOnDisk() {
		var err error
		if img, cap, err = ix.RowVectors(i); err != nil {
			return 0, false
		}
	} else {
		if (i+1)*ix.Dim > len(ix.Caption) || (i+1)*ix.Dim > len(ix.Image) {
			return 0, false
		}
		img, cap = ix.Image[i*ix.Dim:(i+1)*ix.Dim], ix.Caption[i*ix.Dim:(i+1)*ix.Dim]
	}
	var s float32
	for d := range img {
		s += img[d] * cap[d]
	}
	return s, true
}

// Caption implements pipeline.Gallery.
func (a Index) Caption(name string) (string, bool) {
	i, ok := a.Index.Position(name)
	if !ok || i >= len(a.Index.Captions) || a.Index.Captions[i] == "" {
		return "", false
	}
	return a.Index.Captions[i], true
}

// FileImages serves image files by gallery name (pipeline.ImageSource).
type FileImages map[string]string

// ImagesOf returns the name -> file map of an index's images.
func ImagesOf(ix *vindex.Index) FileImages {
	m := make(FileImages, len(ix.Names))
	for i, n := range ix.Names {
		if i < len(ix.Paths) && ix.Paths[i] != "" {
			m[n] = ix.Paths[i]
		}
	}
	return m
}

// Image implements pipeline.ImageSource.
func (f FileImages) Image(ctx context.Context, name string) (pipeline.ImageData, error) {
	p, ok := f[name]
	if !ok {
		return pipeline.ImageData{}, fmt.Errorf("image %q: not in the gallery", name)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return pipeline.ImageData{}, fmt.Errorf("image %q: %w", name, err)
	}
	mt := mime.TypeByExtension(strings.ToLower(filepath.Ext(p)))
	if mt == "" {
		mt = http.DetectContentType(b)
	}
	return pipeline.ImageData{Bytes: b, MIME: mt}, nil
}
