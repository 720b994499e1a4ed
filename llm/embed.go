package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"time"
)

type wireEmbedResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
	Usage *Usage `json:"usage"`
}

// EmbedText embeds one text with the role's model through POST
// /embeddings ({"input": text}). The vector is returned as the server
// sends it (normalise before cosine scoring).
func (c *Client) EmbedText(ctx context.Context, text string) ([]float32, error) {
	if text == "" {
		return nil, fmt.Errorf("%s: embed text: empty text", c.role)
	}
	vs, err := c.embed(ctx, map[string]any{"input": text}, nil, 1)
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

// EmbedTexts embeds several texts in one request ({"input": [...]}).
func (c *Client) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	for i, t := range texts {
		if t == "" {
			return nil, fmt.Errorf("%s: embed text %d: empty text", c.role, i)
		}
	}
	return c.embed(ctx, map[string]any{"input": texts}, nil, len(texts))
}

// EmbedImage embeds one image with vLLM's chat-embeddings form of POST
// /embeddings (a user message holding one image_url part).
func (c *Client) EmbedImage(ctx context.Context, img image.Image) ([]float32, error) {
	return c.EmbedImageData(ctx, ImageOf(img))
}

// EmbedImageData is EmbedImage for encoded bytes or a reused *ImageData.
func (c *Client) EmbedImageData(ctx context.Context, img *ImageData) ([]float32, error) {
	enc, err := img.encode(c.img)
	if err != nil {
		c.count(func(s *Stats) { s.Calls++; s.Failures++ })
		return nil, fmt.Errorf("%s: embed image: %w", c.role, err)
	}
	msg := func(url string) []wireMessage {
		return []wireMessage{{Role: "user", Content: []wirePart{{Type: "image_url", ImageURL: &wireImageURL{URL: url}}}}}
	}
	vs, err := c.embed(ctx, map[string]any{"messages": msg(enc.dataURL)}, map[string]any{"messages": msg("sha256:" + enc.sum)}, 1)
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

// embed sends body (keyBody, if set, stands for it in the cache key) and
// expects n vectors.
func (c *Client) embed(ctx context.Context, body, keyBody map[string]any, n int) ([][]float32, error) {
	c.count(func(s *Stats) { s.Calls++ })
	body["model"] = c.cfg.Model
	body["encoding_format"] = "float"
	for k, v := range c.cfg.Extra {
		if _, set := body[k]; !set {
			body[k] = v
		}
	}
	kb := body
	if keyBody != nil {
		kb = map[string]any{}
		for k, v := range body {
			kb[k] = v
		}
		for k, v := range keyBody {
			kb[k] = v
		}
	}
	key, err := cacheKey("embed", c.cfg.CacheModelID(), kb)
	if err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, fmt.Errorf("%s: encode request: %w", c.role, err)
	}
	if c.cache != nil {
		if v, ok := c.cache.get(ctx, key); ok {
			var out [][]float32
			if json.Unmarshal(v, &out) == nil && len(out) == n {
				c.count(func(s *Stats) { s.CacheHits++ })
				return out, nil
			}
		}
	}
	v, shared, err := c.flights.do(ctx, key, func() ([]byte, error) {
		c.count(func(s *Stats) { s.CacheMisses++ })
		js, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", c.role, err)
		}
		var out [][]float32
		var usage Usage
		start := time.Now()
		_, err = c.do(ctx, "/embeddings", js, func(b []byte) error {
			var w wireEmbedResponse
			if err := json.Unmarshal(b, &w); err != nil {
				return err
			}
			if len(w.Data) != n {
				return fmt.Errorf("reply has %d embeddings, want %d", len(w.Data), n)
			}
			res := make([][]float32, n)
			for i, d := range w.Data {
				idx := d.Index
				if idx < 0 || idx >= n {
					idx = i
				}
				if len(d.Embedding) == 0 {
					return errors.New("empty embedding")
				}
				for _, x := range d.Embedding {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						return errors.New("embedding holds NaN or Inf")
					}
				}
				res[idx] = d.Embedding
			}
			for i := range res {
				if res[i] == nil {
					return fmt.Errorf("reply lacks embedding %d", i)
				}
			}
			if w.Usage != nil {
				usage = *w.Usage
			}
			out = res
			return nil
		})
		if err != nil {
			return nil, err
		}
		lat := time.Since(start)
		c.count(func(s *Stats) {
			s.PromptTokens += int64(usage.PromptTokens)
			s.Latency += lat
			s.LatencyMax = max(s.LatencyMax, lat)
		})
		v, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("%s: encode answer: %w", c.role, err)
		}
		c.store(ctx, key, "embed", v)
		return v, nil
	})
	if err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, err
	}
	var out [][]float32
	if err := json.Unmarshal(v, &out); err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, fmt.Errorf("%s: decode answer: %w", c.role, err)
	}
	if shared {
		c.count(func(s *Stats) { s.CacheHits++; s.Shared++ })
	}
	return out, nil
}
