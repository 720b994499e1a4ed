package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/vindex"
)

// The adapters below connect the concrete packages (vindex, clip, llm) to
// the small interfaces the pipeline consumes, for the serve command and
// for tests that run the real pipeline.

// IndexBackend serves an in-memory vindex.Index to the pipeline as its
// Searcher, Gallery and ImageSource (files read from Index.Paths).
type IndexBackend struct {
	Index *vindex.Index
	pos   map[string]int
}

// NewIndexBackend indexes ix's names.
func NewIndexBackend(ix *vindex.Index) *IndexBackend {
	b := &IndexBackend{Index: ix, pos: make(map[string]int, len(ix.Names))}
	for i, n := range ix.Names {
		b.pos[n] = i
	}
	return b
}

// Search implements pipeline.Searcher.
func (b *IndexBackend) Search(ctx context.Context, qs []pipeline.SearchQuery, k int) ([][]pipeline.Hit, error) {
	vq := make([]vindex.Query, len(qs))
	for i, q := range qs {
		vq[i] = vindex.Query{Descriptions: q.Descriptions, Tau: q.Tau, Restrict: q.Restrict, Exclude: q.Exclude}
	}
	res, err := b.Index.Search(ctx, vq, k)
	if err != nil {
		return nil, err
	}
	out := make([][]pipeline.Hit, len(res))
	for i, hs := range res {
		out[i] = make([]pipeline.Hit, len(hs))
		for j, h := range hs {
			out[i][j] = pipeline.Hit{Index: h.Index, Name: h.Name, Score: h.Score}
		}
	}
	return out, nil
}

// Lookup implements pipeline.Gallery.
func (b *IndexBackend) Lookup(name string) (int, bool) {
	i, ok := b.pos[name]
	return i, ok
}

// Caption implements pipeline.Gallery.
func (b *IndexBackend) Caption(name string) (string, bool) {
	i, ok := b.pos[name]
	if !ok || i >= len(b.Index.Captions) || b.Index.Captions[i] == "" {
		return "", false
	}
	return b.Index.Captions[i], true
}

// HasCaptions implements pipeline.Gallery.
func (b *IndexBackend) HasCaptions() bool { return b.Index.HasCaption }

// Path returns the image file of a gallery name.
func (b *IndexBackend) Path(name string) (string, bool) {
	i, ok := b.pos[name]
	if !ok || i >= len(b.Index.Paths) || b.Index.Paths[i] == "" {
		return "", false
	}
	return b.Index.Paths[i], true
}

// Images returns the name -> file map the server serves images from.
func (b *IndexBackend) Images() map[string]string {
	m := make(map[string]string, len(b.Index.Names))
	for i, n := range b.Index.Names {
		if i < len(b.Index.Paths) && b.Index.Paths[i] != "" {
			m[n] = b.Index.Paths[i]
		}
	}
	return m
}

// Image implements pipeline.ImageSource: the stored file of a gallery image.
func (b *IndexBackend) Image(ctx context.Context, name string) (pipeline.ImageData, error) {
	p, ok := b.Path(name)
	if !ok {
		return pipeline.ImageData{}, fmt.Errorf("gallery image %q has no file", name)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return pipeline.ImageData{}, fmt.Errorf("read gallery image %q: %w", name, err)
	}
	mime := http.DetectContentType(data)
	if !contains(allowedImageTypes, mime) {
		return pipeline.ImageData{}, fmt.Errorf("gallery image %q (%s) is %s, not an image", name, filepath.Base(p), mime)
	}
	return pipeline.ImageData{Bytes: data, MIME: mime}, nil
}

// CLIPEmbedder adapts a clip.Model to pipeline.TextEmbedder.
type CLIPEmbedder struct{ Model *clip.Model }

// EmbedTexts implements pipeline.TextEmbedder; any per-text failure fails
// the call, naming the text.
func (c CLIPEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	embs, err := c.Model.EmbedTexts(ctx, texts)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(embs))
	for i, e := range embs {
		if e.Err != nil {
			return nil, fmt.Errorf("embed text %q: %w", texts[i], e.Err)
		}
		out[i] = e.Vector
	}
	return out, nil
}

// LLMChatter adapts an llm.Client to pipeline.Chatter; a role that is
// down is reported as *pipeline.RoleDownError.
type LLMChatter struct {
	Client *llm.Client
	Role   string
}

// Chat implements pipeline.Chatter.
func (c LLMChatter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	lr := llm.ChatRequest{
		MaxTokens:   req.MaxTokens,
		Stop:        req.Stop,
		Logprobs:    req.Logprobs,
		TopLogprobs: req.TopLogprobs,
		Extra:       req.Extra,
	}
	for _, m := range req.Messages {
		lm := llm.Message{Role: m.Role}
		for _, p := range m.Parts {
			if p.Image != nil {
				lm.Parts = append(lm.Parts, llm.ImagePart(llm.ImageBytes(p.Image.Bytes, p.Image.MIME)))
			} else {
				lm.Parts = append(lm.Parts, llm.TextPart(p.Text))
			}
		}
		lr.Messages = append(lr.Messages, lm)
	}
	resp, err := c.Client.Chat(ctx, lr)
	if err != nil {
		if errors.Is(err, llm.ErrRoleDown) {
			return nil, &pipeline.RoleDownError{Role: c.Role, Last: err}
		}
		return nil, err
	}
	out := &pipeline.ChatResponse{
		Text: resp.Text, FinishReason: resp.FinishReason, Cached: resp.Cached,
		PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens,
	}
	if p, ok := resp.YesNo(); ok {
		out.PYes = &p
	}
	return out, nil
}
