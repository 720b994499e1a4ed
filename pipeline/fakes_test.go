package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/imagescope/imagescope/internal/l2"
)

// memIndex is an exact fused-score index for tests.
type memIndex struct {
	names    []string
	img, cap [][]float32
	captions map[string]string
	noCaps   bool
}

func (m *memIndex) Lookup(name string) (int, bool) {
	for i, n := range m.names {
		if n == name {
			return i, true
		}
	}
	return 0, false
}

func (m *memIndex) ImageVector(name string) ([]float32, bool) {
	i, ok := m.Lookup(name)
	if !ok {
		return nil, false
	}
	return l2.Normalized(m.img[i]), true
}

func (m *memIndex) CaptionSimilarity(name string) (float32, bool) {
	i, ok := m.Lookup(name)
	if !ok || m.noCaps {
		return 0, false
	}
	return dot(l2.Normalized(m.img[i]), l2.Normalized(m.cap[i])), true
}

func (m *memIndex) Caption(name string) (string, bool) { s, ok := m.captions[name]; return s, ok }
func (m *memIndex) HasCaptions() bool                  { return !m.noCaps }

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func (m *memIndex) Search(ctx context.Context, qs []SearchQuery, k int) ([][]Hit, error) {
	var out [][]Hit
	for _, q := range qs {
		allowed := map[int]bool{}
		for _, i := range q.Restrict {
			allowed[i] = true
		}
		excl := map[int]bool{}
		for _, i := range q.Exclude {
			excl[i] = true
		}
		var hits []Hit
		for j := range m.names {
			if (q.Restrict != nil && !allowed[j]) || excl[j] {
				continue
			}
			var s float32
			for _, t := range q.Descriptions {
				s += (1-q.Tau)*dot(t, l2.Normalized(m.img[j])) + q.Tau*dot(t, l2.Normalized(m.cap[j]))
			}
			s /= float32(len(q.Descriptions))
			hits = append(hits, Hit{Index: j, Name: m.names[j], Score: s})
		}
		sort.SliceStable(hits, func(a, b int) bool { return hits[a].Score > hits[b].Score })
		if k > 0 && len(hits) > k {
			hits = hits[:k]
		}
		out = append(out, hits)
	}
	return out, nil
}

// tableEmbedder maps known texts to vectors.
type tableEmbedder struct {
	vec   map[string][]float32
	mu    sync.Mutex
	texts []string
}

func (t *tableEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	t.mu.Lock()
	t.texts = append(t.texts, texts...)
	t.mu.Unlock()
	var out [][]float32
	for _, s := range texts {
		v, ok := t.vec[s]
		if !ok {
			return nil, fmt.Errorf("no vector for %q", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// scripted answers chat requests with a function and records them.
type scripted struct {
	mu    sync.Mutex
	reqs  []ChatRequest
	reply func(req ChatRequest) (string, error)
}

func (s *scripted) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	text, err := s.reply(req)
	if err != nil {
		return nil, err
	}
	return &ChatResponse{Text: text}, nil
}

func (s *scripted) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.reqs) }

func textOf(req ChatRequest) string {
	var b strings.Builder
	for _, m := range req.Messages {
		for _, p := range m.Parts {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

func imageOf(req ChatRequest) []byte {
	for _, m := range req.Messages {
		for _, p := range m.Parts {
			if p.Image != nil {
				return p.Image.Bytes
			}
		}
	}
	return nil
}

// nameImages serves the image name as its bytes (no decoding needed for
// stage 2); stage-3 tests use pngImages.
type nameImages struct{ missing map[string]bool }

func (n nameImages) Image(ctx context.Context, name string) (ImageData, error) {
	if n.missing[name] {
		return ImageData{}, errors.New("no such file")
	}
	return ImageData{Bytes: []byte(name), MIME: "text/plain"}, nil
}
