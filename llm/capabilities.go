package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/imagescope/imagescope/internal/parallel"
)

// checkVision asks every reachable endpoint that speaks Ollama's native API
// (POST /api/show) for the model's capabilities and refuses a model that
// lacks "vision". Such a server accepts image parts for a text-only model
// and silently drops them (HTTP 200, the model answers blind), so the check
// has to happen before the first call. Servers without /api/show (vLLM,
// SGLang, llama.cpp) are not asked: they reject images a model cannot take.
func (c *Client) checkVision(ctx context.Context) error {
	eps := c.cfg.Endpoints
	errs := make([]error, len(eps))
	parallel.For(len(eps), len(eps), func(_, i int) {
		caps, ok := c.ollamaCapabilities(ctx, eps[i])
		if !ok || slices.Contains(caps, "vision") {
			return
		}
		errs[i] = fmt.Errorf("%s: model %q at %s cannot take images (the server lists its capabilities as %s); "+
			"the server would drop the %s's images and the model would answer without seeing them: "+
			"set roles.%s.model to a vision model (one whose 'ollama show' lists vision, e.g. llava or gemma3)",
			c.role, c.cfg.Model, eps[i], strings.Join(caps, ", "), c.role, c.role)
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ollamaCapabilities returns the model's capabilities from Ollama's
// POST /api/show on the server behind ep (the OpenAI-compatible base URL,
// usually ending in /v1). ok is false when the server does not answer that
// call with a capability list (not Ollama, unreachable, or an Ollama too
// old to report capabilities).
func (c *Client) ollamaCapabilities(ctx context.Context, ep string) (caps []string, ok bool) {
	base := strings.TrimSuffix(strings.TrimSuffix(ep, "/"), "/v1")
	timeout := min(c.cfg.Timeout, 10*time.Second)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"model": c.cfg.Model})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/show", bytes.NewReader(body))
	if err != nil {
		return nil, false
	}
	req.Header.Set("Content-Type", "application/json")
	c.setHeaders(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, false
	}
	var v struct {
		Capabilities *[]string `json:"capabilities"`
	}
	if json.Unmarshal(data, &v) != nil || v.Capabilities == nil {
		return nil, false
	}
	return *v.Capabilities, true
}

// badInputMessages are the server messages of a 5xx caused by the request's
// own content (an image the server cannot decode), not by a failing server.
// Ollama answers such an image with HTTP 500.
var badInputMessages = []string{
	"image: unknown format",
	"failed to process inputs",
	"invalid image",
	"failed to decode image",
	"unable to decode image",
	"cannot identify image",
}

// isBadInput reports whether a 5xx reply's message blames the request's
// content: retrying the same bytes cannot help and the server is healthy.
func isBadInput(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range badInputMessages {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
