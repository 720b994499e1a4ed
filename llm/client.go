package llm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/backoff"
	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/modelrole"
)

// Options tune a Client beyond its role configuration.
type Options struct {
	// HTTPClient replaces the client's own (whose transport keeps enough
	// idle connections for every in-flight slot). Do not set a Timeout on
	// it: per-attempt timeouts come from the role configuration.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// BackoffBase and BackoffMax shape the exponential backoff with full
	// jitter (default 500ms and 30s): the wait before retry n is uniform in
	// [0, min(max, base*2^(n-1))].
	BackoffBase, BackoffMax time.Duration
	// RetryAfterMax caps a server's Retry-After (default 60s).
	RetryAfterMax time.Duration
	// FailureThreshold is the number of consecutive failures after which
	// an endpoint's circuit breaker opens for the role's cool-down
	// (default 3).
	FailureThreshold int
	// Interactive is for answering people (serve, search): a call makes at
	// most the role's retries, and fails at once with ErrRoleDown while
	// every endpoint's breaker is open, so the caller can degrade. A batch
	// client (the default: eval, index, worker) keeps retrying transient
	// failures and waits for the breakers' probes, and reports the role
	// down only once it has gone without a successful reply for the
	// role's down_after window.
	Interactive bool
	// Now replaces time.Now (tests).
	Now func() time.Time
	// SkipModelCheck skips the start-up checks in New: GET /v1/models, and
	// for roles that take images the vision capability (Ollama's
	// /api/show).
	SkipModelCheck bool
	// RequireReachable makes New fail when no endpoint answers the model
	// check (by default the role starts and its calls fail with
	// ErrRoleDown unless answered from the cache).
	RequireReachable bool
	// NoCache bypasses the answer cache for this client.
	NoCache bool
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = 3
	}
}

// Client calls one role: an endpoint pool, retries, the answer cache and
// counters. It is safe for concurrent use.
type Client struct {
	role  modelrole.Name
	cfg   config.Role
	opt   Options
	http  *http.Client
	pool  *pool
	cache *Cache
	img   imageOptions
	// flights de-duplicates identical requests in flight.
	flights flights

	mu    sync.Mutex
	stats Stats
}

// Stats are a role's counters since New.
type Stats struct {
	Role    modelrole.Name `json:"role"`
	Model   string         `json:"model"`
	ModelID string         `json:"model_id"`
	// Calls made (Chat, EmbedText, EmbedImage), of which CacheHits were
	// answered without a request of their own (from the cache, or
	// Shared: by waiting for an identical request already in flight) and
	// CacheMisses went to a server.
	Calls       int64 `json:"calls"`
	CacheHits   int64 `json:"cache_hits"`
	Shared      int64 `json:"shared_in_flight"`
	CacheMisses int64 `json:"cache_misses"`
	// Failures are calls that ended in an error; Retries counts extra
	// attempts; Requests counts HTTP attempts, of which CutOff got a
	// reply body that was cut off or malformed (and was retried).
	Failures         int64 `json:"failures"`
	Retries          int64 `json:"retries"`
	Requests         int64 `json:"requests"`
	CutOff           int64 `json:"cut_off"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// Truncated counts replies that stopped at the token limit
	// (finish_reason "length").
	Truncated int64 `json:"truncated"`
	// Latency sums the wall time of successful network calls (retries
	// included); LatencyMax is the slowest.
	Latency    time.Duration   `json:"latency_ns"`
	LatencyMax time.Duration   `json:"latency_max_ns"`
	Endpoints  []EndpointStats `json:"endpoints,omitempty"`
}

// MeanLatency is the mean wall time of a successful network call.
func (s Stats) MeanLatency() time.Duration {
	n := s.CacheMisses - s.Failures
	if n <= 0 {
		return 0
	}
	return s.Latency / time.Duration(n)
}

// New returns the client for a role. cache may be nil (no cache). Unless
// opt.SkipModelCheck, it asks every endpoint for GET /models and fails when
// a server answers without the configured model (listing what it serves)
// or refuses the API key. Endpoints that cannot be reached are logged; the
// role still starts so cached answers can be replayed.
func New(ctx context.Context, role modelrole.Name, cfg config.Role, cache *Cache, opt Options) (*Client, error) {
	opt.defaults()
	if !cfg.Configured() {
		return nil, fmt.Errorf("%s: %w (set roles.%s.endpoints)", role, ErrNotConfigured, role)
	}
	if cfg.Model == "" {
		return nil, fmt.Errorf("%s: no model name (set roles.%s.model)", role, role)
	}
	if cfg.MaxInFlight < 1 {
		cfg.MaxInFlight = 1
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 10 * time.Second
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = config.DefaultDownAfter
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = cfg.Backoff
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = 500 * time.Millisecond
	}
	if opt.RetryAfterMax <= 0 {
		opt.RetryAfterMax = cfg.RetryAfterMax
	}
	if opt.RetryAfterMax <= 0 {
		opt.RetryAfterMax = 60 * time.Second
	}
	for i, e := range cfg.Endpoints {
		cfg.Endpoints[i] = config.NormalizeEndpoint(e)
	}
	hc := opt.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.MaxInFlight + 4
		tr.MaxIdleConns = (cfg.MaxInFlight + 4) * len(cfg.Endpoints)
		hc = &http.Client{Transport: tr}
	}
	c := &Client{
		role:  role,
		cfg:   cfg,
		opt:   opt,
		http:  hc,
		pool:  newPool(cfg.Endpoints, cfg.MaxInFlight, opt.FailureThreshold, cfg.Cooldown, opt.Now),
		img:   imageOptionsOf(cfg.Image),
		stats: Stats{Role: role, Model: cfg.Model, ModelID: cfg.CacheModelID()},
	}
	if !opt.NoCache {
		c.cache = cache
	}
	if !opt.SkipModelCheck {
		if err := c.checkModels(ctx); err != nil {
			return nil, err
		}
		if role.TakesImages() {
			if err := c.checkVision(ctx); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// Close releases the client's idle connections. Calls in progress finish;
// the cache is not closed (it may be shared).
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// Role is the client's role.
func (c *Client) Role() modelrole.Name { return c.role }

// Model is the served model name.
func (c *Client) Model() string { return c.cfg.Model }

// ModelID is the endpoint-independent model identity (cache key part).
func (c *Client) ModelID() string { return c.cfg.CacheModelID() }

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	c.mu.Unlock()
	s.Endpoints = c.pool.stats()
	return s
}

// checkModels queries GET /models on every endpoint.
func (c *Client) checkModels(ctx context.Context) error {
	type result struct {
		url    string
		err    error
		hard   bool
		models []string
	}
	eps := c.cfg.Endpoints
	res := make([]result, len(eps))
	parallel.For(len(eps), len(eps), func(_, i int) {
		ep := eps[i]
		res[i] = result{url: ep}
		models, status, msg, err := c.listModels(ctx, ep)
		switch {
		case err != nil:
			res[i].err = err
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			hint := "the server wants an API key: set roles." + string(c.role) + ".api_key_env to the name of a variable holding it"
			if c.cfg.APIKeyEnv != "" {
				hint = "check the key in $" + c.cfg.APIKeyEnv
			}
			res[i].err, res[i].hard = fmt.Errorf("GET %s/models: HTTP %d: %s (%s)", ep, status, msg, hint), true
		case status >= 400 && status < 500:
			res[i].err, res[i].hard = fmt.Errorf("GET %s/models: HTTP %d: %s (is the endpoint the API base URL, usually ending in /v1?)", ep, status, msg), true
		case status != http.StatusOK:
			res[i].err = fmt.Errorf("GET %s/models: HTTP %d: %s", ep, status, msg)
		default:
			res[i].models = models
			found := false
			for _, m := range models {
				// Ollama lists "name:latest" for a model asked for as "name".
				if m == c.cfg.Model || m == c.cfg.Model+":latest" {
					found = true
				}
			}
			if !found {
				res[i].err, res[i].hard = fmt.Errorf("model %q is not served at %s; it serves: %s (set roles.%s.model to one of these, or start the server with --served-model-name %s)",
					c.cfg.Model, ep, strings.Join(models, ", "), c.role, c.cfg.Model), true
			}
		}
	})
	reachable := 0
	var errs []error
	for _, r := range res {
		if r.err == nil {
			reachable++
			continue
		}
		if r.hard {
			return fmt.Errorf("%s: %w", c.role, r.err)
		}
		errs = append(errs, r.err)
		c.opt.Logger.Warn("model server not reachable at start-up", "role", c.role, "endpoint", r.url, "err", r.err)
	}
	if reachable == 0 && c.opt.RequireReachable {
		return &Error{Role: c.role, Model: c.cfg.Model, Err: ErrRoleDown, Message: errors.Join(errs...).Error()}
	}
	return nil
}

func (c *Client) listModels(ctx context.Context, ep string) (ids []string, status int, msg string, err error) {
	timeout := min(c.cfg.Timeout, 10*time.Second)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep+"/models", nil)
	if err != nil {
		return nil, 0, "", err
	}
	c.setHeaders(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, serverMessage(body), nil
	}
	var v struct {
		Data []struct {
			ID   string `json:"id"`
			Root string `json:"root"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, 0, "", fmt.Errorf("GET %s/models: malformed reply: %w", ep, err)
	}
	for _, d := range v.Data {
		ids = append(ids, d.ID)
		if d.Root != "" && d.Root != d.ID && c.cfg.ModelID == "" && d.ID == c.cfg.Model {
			c.opt.Logger.Info("served model", "role", c.role, "name", d.ID, "root", d.Root,
				"hint", "set model_id to the checkpoint (and revision) so cached answers are tied to it")
		}
	}
	return ids, http.StatusOK, "", nil
}

func (c *Client) setHeaders(req *http.Request) {
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	req.Header.Set("Accept", "application/json")
}

// wire types ---------------------------------------------------------------

type wireImageURL struct {
	URL string `json:"url"`
}

type wirePart struct {
	Type     string        `json:"type"`
	Text     string        `json:"text,omitempty"`
	ImageURL *wireImageURL `json:"image_url,omitempty"`
}

type wireMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"` // string or []wirePart
}

type wireChatResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message *struct {
			Content *string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
		Logprobs     *struct {
			Content []TokenLogprob `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage *Usage `json:"usage"`
}

// buildMessages renders messages twice: for the wire (data URLs) and for
// the cache key (image bytes replaced by their hash).
func (c *Client) buildMessages(msgs []Message) (wire, key []wireMessage, err error) {
	if len(msgs) == 0 {
		return nil, nil, errors.New("no messages")
	}
	for i, m := range msgs {
		role := m.Role
		if role == "" {
			role = "user"
		}
		textOnly := true
		for _, p := range m.Parts {
			if p.Image != nil {
				textOnly = false
			}
		}
		if textOnly {
			var sb strings.Builder
			for _, p := range m.Parts {
				sb.WriteString(p.Text)
			}
			wire = append(wire, wireMessage{Role: role, Content: sb.String()})
			key = append(key, wireMessage{Role: role, Content: sb.String()})
			continue
		}
		var wp, kp []wirePart
		for j, p := range m.Parts {
			if p.Image == nil {
				wp = append(wp, wirePart{Type: "text", Text: p.Text})
				kp = append(kp, wirePart{Type: "text", Text: p.Text})
				continue
			}
			enc, err := p.Image.encode(c.img)
			if err != nil {
				return nil, nil, fmt.Errorf("message %d part %d: %w", i, j, err)
			}
			wp = append(wp, wirePart{Type: "image_url", ImageURL: &wireImageURL{URL: enc.dataURL}})
			kp = append(kp, wirePart{Type: "image_url", ImageURL: &wireImageURL{URL: "sha256:" + enc.sum}})
		}
		wire = append(wire, wireMessage{Role: role, Content: wp})
		key = append(key, wireMessage{Role: role, Content: kp})
	}
	return wire, key, nil
}

// chatBody assembles the request body (without messages) from the role's
// configuration and the request.
func (c *Client) chatBody(req ChatRequest) map[string]any {
	b := map[string]any{}
	for k, v := range c.cfg.Extra {
		b[k] = v
	}
	for k, v := range req.Extra {
		b[k] = v
	}
	b["model"] = c.cfg.Model
	temp := 0.0
	if c.cfg.Temperature != nil {
		temp = *c.cfg.Temperature
	}
	if req.Temperature != nil {
		temp = *req.Temperature
	}
	b["temperature"] = temp
	if c.cfg.TopP != nil {
		b["top_p"] = *c.cfg.TopP
	} else if temp == 0 {
		b["top_p"] = 1
	}
	maxTok := c.cfg.MaxTokens
	if req.MaxTokens > 0 {
		maxTok = req.MaxTokens
	}
	if maxTok > 0 {
		b["max_tokens"] = maxTok
	}
	stop := c.cfg.Stop
	if req.Stop != nil {
		stop = req.Stop
	}
	if len(stop) > 0 {
		b["stop"] = stop
	}
	if req.Seed != nil {
		b["seed"] = *req.Seed
	} else if c.cfg.Seed != nil {
		b["seed"] = *c.cfg.Seed
	}
	if req.Logprobs || c.cfg.Logprobs {
		b["logprobs"] = true
		top := c.cfg.TopLogprobs
		if req.TopLogprobs > 0 {
			top = req.TopLogprobs
		}
		if top > 0 {
			b["top_logprobs"] = top
		}
	}
	return b
}

// marshalChat encodes body plus "messages". Image data URLs (base64, safe
// in JSON as they are) are copied without the encoder scanning them: a
// verifier call carries one image of ~100 KB per proposition.
func marshalChat(body map[string]any, msgs []wireMessage) ([]byte, error) {
	head, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(head) + 256 + estimate(msgs))
	b.Write(head[:len(head)-1]) // without the closing brace
	if len(head) > 2 {
		b.WriteByte(',')
	}
	b.WriteString(`"messages":[`)
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		role, _ := json.Marshal(m.Role)
		b.WriteString(`{"role":`)
		b.Write(role)
		b.WriteString(`,"content":`)
		parts, ok := m.Content.([]wirePart)
		if !ok {
			c, err := json.Marshal(m.Content)
			if err != nil {
				return nil, err
			}
			b.Write(c)
			b.WriteByte('}')
			continue
		}
		b.WriteByte('[')
		for j, p := range parts {
			if j > 0 {
				b.WriteByte(',')
			}
			if p.ImageURL != nil && jsonSafe(p.ImageURL.URL) {
				b.WriteString(`{"type":"image_url","image_url":{"url":"`)
				b.WriteString(p.ImageURL.URL)
				b.WriteString(`"}}`)
				continue
			}
			pj, err := json.Marshal(p)
			if err != nil {
				return nil, err
			}
			b.Write(pj)
		}
		b.WriteString("]}")
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

func estimate(msgs []wireMessage) int {
	n := 0
	for _, m := range msgs {
		if parts, ok := m.Content.([]wirePart); ok {
			for _, p := range parts {
				if p.ImageURL != nil {
					n += len(p.ImageURL.URL)
				}
				n += len(p.Text) + 64
			}
		}
	}
	return n
}

// jsonSafe reports whether s can go into a JSON string unescaped (checked
// on the short prefix before the base64 payload; base64 itself is safe).
func jsonSafe(s string) bool {
	prefix, _, ok := strings.Cut(s, ";base64,")
	if !ok || !strings.HasPrefix(s, "data:") {
		return false
	}
	for _, r := range prefix {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' {
			return false
		}
	}
	return true
}

// cacheKey hashes the kind, the model identity and the canonical body
// (without the served model name, which the model identity replaces).
func cacheKey(kind, modelID string, body map[string]any) (string, error) {
	kb := make(map[string]any, len(body))
	for k, v := range body {
		if k != "model" {
			kb[k] = v
		}
	}
	// encoding/json writes map keys sorted: the encoding is canonical.
	js, err := json.Marshal(kb)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(modelID))
	h.Write([]byte{0})
	h.Write(js)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Chat sends one chat completion and returns the first choice. Answers
// come from the cache when present; identical requests in flight at the
// same time are sent once and share the answer. A failed call returns an
// *Error wrapping ErrRoleDown (the role is unavailable), ErrFailed (this
// request kept failing while the role answered others), ErrRejected (a
// 4xx) or the context's error.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	c.count(func(s *Stats) { s.Calls++ })
	wire, keyMsgs, err := c.buildMessages(req.Messages)
	if err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, fmt.Errorf("%s: build request: %w", c.role, err)
	}
	body := c.chatBody(req)
	body["messages"] = keyMsgs
	key, err := cacheKey("chat", c.cfg.CacheModelID(), body)
	if err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, fmt.Errorf("%s: encode request: %w", c.role, err)
	}
	if c.cache != nil {
		if v, ok := c.cache.get(ctx, key); ok {
			var r ChatResponse
			if json.Unmarshal(v, &r) == nil {
				r.Cached = true
				c.count(func(s *Stats) { s.CacheHits++ })
				return &r, nil
			}
		}
	}
	delete(body, "messages")
	var out ChatResponse
	v, shared, err := c.flights.do(ctx, key, func() ([]byte, error) {
		c.count(func(s *Stats) { s.CacheMisses++ })
		js, err := marshalChat(body, wire)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", c.role, err)
		}
		start := time.Now()
		ep, err := c.do(ctx, "/chat/completions", js, func(b []byte) error { return parseChat(b, &out) })
		if err != nil {
			return nil, err
		}
		lat := time.Since(start)
		out.Endpoint = ep
		c.count(func(s *Stats) {
			s.PromptTokens += int64(out.Usage.PromptTokens)
			s.CompletionTokens += int64(out.Usage.CompletionTokens)
			s.Latency += lat
			s.LatencyMax = max(s.LatencyMax, lat)
			if out.Truncated() {
				s.Truncated++
			}
		})
		c.opt.Logger.Debug("chat", "role", c.role, "model", c.cfg.Model, "endpoint", ep, "latency", lat,
			"prompt_tokens", out.Usage.PromptTokens, "completion_tokens", out.Usage.CompletionTokens, "finish", out.FinishReason)
		v, err := json.Marshal(&out)
		if err != nil {
			return nil, fmt.Errorf("%s: encode answer: %w", c.role, err)
		}
		c.store(ctx, key, "chat", v)
		return v, nil
	})
	if err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, err
	}
	if !shared {
		return &out, nil
	}
	var r ChatResponse
	if err := json.Unmarshal(v, &r); err != nil {
		c.count(func(s *Stats) { s.Failures++ })
		return nil, fmt.Errorf("%s: shared answer: %w", c.role, err)
	}
	r.Cached = true
	c.count(func(s *Stats) { s.CacheHits++; s.Shared++ })
	return &r, nil
}

// store writes an answer to the cache, even if the caller gives up right
// now.
func (c *Client) store(ctx context.Context, key, kind string, v []byte) {
	if c.cache == nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	err := c.cache.put(pctx, key, string(c.role), c.cfg.CacheModelID(), kind, v)
	cancel()
	if err != nil {
		c.opt.Logger.Warn("answer cache write failed", "role", c.role, "err", err)
	}
}

func parseChat(b []byte, out *ChatResponse) error {
	var w wireChatResponse
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if len(w.Choices) == 0 || w.Choices[0].Message == nil {
		return errors.New("reply has no choices[0].message")
	}
	ch := w.Choices[0]
	*out = ChatResponse{Model: w.Model}
	if ch.Message.Content != nil {
		out.Text = *ch.Message.Content
	}
	if ch.FinishReason != nil {
		out.FinishReason = *ch.FinishReason
	}
	if ch.Logprobs != nil {
		out.Logprobs = ch.Logprobs.Content
	}
	if w.Usage != nil {
		out.Usage = *w.Usage
	}
	return nil
}

func (c *Client) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// attemptError is one failed attempt.
type attemptError struct {
	status     int
	msg        string
	retryable  bool
	retryAfter time.Duration
	outcome    outcome
	// cutOff: a 200 whose body was cut off or malformed.
	cutOff bool
}

// do POSTs body to path on the pool with retries; parse is applied to a
// 200 reply and a parse failure is retried (truncated or malformed JSON).
// It returns the endpoint that answered.
//
// An interactive client makes at most the role's retries and fails at once
// while every endpoint's breaker is open. A batch client keeps retrying
// for as long as the role's down_after window allows: the call gives up
// when it has failed for that long itself, or when the role has gone that
// long without any successful reply (then the role is down).
func (c *Client) do(ctx context.Context, path string, body []byte, parse func([]byte) error) (string, error) {
	start := c.opt.Now()
	patience := c.cfg.DownAfter
	var last *attemptError
	var lastEP string
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if c.opt.Interactive && attempt > c.cfg.MaxRetries() {
				return "", c.exhausted(lastEP, last, attempt)
			}
			if !c.opt.Interactive && (c.opt.Now().Sub(start) >= patience || c.pool.unreachableFor() >= patience) {
				return "", c.exhausted(lastEP, last, attempt)
			}
			c.count(func(s *Stats) { s.Retries++ })
			if err := backoff.Sleep(ctx, c.backoff(attempt, last.retryAfter)); err != nil {
				return "", c.ctxError(lastEP, last, attempt, err)
			}
		}
		var giveUp time.Time
		if !c.opt.Interactive {
			giveUp = c.opt.Now().Add(patience - c.pool.unreachableFor())
		}
		ep, err := c.pool.acquire(ctx, c.opt.Interactive, giveUp)
		if err != nil {
			var ao *allOpenError
			if errors.As(err, &ao) {
				msg := ao.Error()
				if !c.opt.Interactive {
					msg = fmt.Sprintf("no successful reply for %v (the down_after window); %s", patience, msg)
				}
				return "", &Error{Role: c.role, Model: c.cfg.Model, Err: ErrRoleDown, Message: msg, Attempts: attempt}
			}
			return "", c.ctxError(lastEP, last, attempt, err)
		}
		lastEP = ep.url
		c.count(func(s *Stats) { s.Requests++ })
		ae := c.attempt(ctx, ep.url+path, body, parse)
		if ae == nil {
			c.pool.release(ep, outcomeOK, "")
			return ep.url, nil
		}
		if ctx.Err() != nil {
			c.pool.release(ep, outcomeNeutral, "")
			return "", c.ctxError(ep.url, ae, attempt+1, ctx.Err())
		}
		c.pool.release(ep, ae.outcome, ae.cause())
		if ae.cutOff {
			c.count(func(s *Stats) { s.CutOff++ })
		}
		c.opt.Logger.Debug("model call failed", "role", c.role, "endpoint", ep.url, "status", ae.status, "err", ae.msg, "attempt", attempt+1, "retry", ae.retryable)
		if !ae.retryable {
			return "", &Error{Role: c.role, Model: c.cfg.Model, Endpoint: ep.url, Status: ae.status, Message: ae.msg, Attempts: attempt + 1, Err: ErrRejected}
		}
		last = ae
	}
}

// exhausted is the error of a call that ran out of retries: the role is
// down when it has no working endpoint (for a batch client: none for the
// down_after window), else only this request failed.
func (c *Client) exhausted(ep string, last *attemptError, attempts int) error {
	e := &Error{Role: c.role, Model: c.cfg.Model, Endpoint: ep, Status: last.status, Message: last.msg, Attempts: attempts, Err: ErrRoleDown}
	if !c.opt.Interactive && c.pool.unreachableFor() < c.cfg.DownAfter {
		e.Err = ErrFailed
	}
	return e
}

func (a *attemptError) cause() string {
	if a.status != 0 {
		return fmt.Sprintf("HTTP %d: %s", a.status, a.msg)
	}
	return a.msg
}

func (c *Client) ctxError(ep string, last *attemptError, attempts int, err error) error {
	e := &Error{Role: c.role, Model: c.cfg.Model, Endpoint: ep, Attempts: attempts, Err: err}
	if last != nil {
		e.Status, e.Message = last.status, last.msg
	}
	return e
}

// maxReply bounds a reply body.
const maxReply = 256 << 20

// attempt makes one HTTP request under the role's timeout.
func (c *Client) attempt(ctx context.Context, url string, body []byte, parse func([]byte) error) *attemptError {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &attemptError{msg: err.Error(), outcome: outcomeOK}
	}
	req.Header.Set("Content-Type", "application/json")
	c.setHeaders(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return &attemptError{msg: transportMessage(err, c.cfg.Timeout), retryable: true, outcome: outcomeFailed}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return &attemptError{status: resp.StatusCode, msg: "reply cut off: " + transportMessage(err, c.cfg.Timeout), retryable: true, outcome: outcomeFailed, cutOff: resp.StatusCode == http.StatusOK}
	}
	if len(data) > maxReply {
		return &attemptError{status: resp.StatusCode, msg: fmt.Sprintf("reply larger than %d MiB", maxReply>>20), outcome: outcomeOK}
	}
	switch st := resp.StatusCode; {
	case st == http.StatusOK:
		if err := parse(data); err != nil {
			return &attemptError{status: st, msg: "malformed or cut-off reply: " + err.Error(), retryable: true, outcome: outcomeFailed, cutOff: true}
		}
		return nil
	case st == http.StatusTooManyRequests:
		return &attemptError{status: st, msg: serverMessage(data), retryable: true, retryAfter: backoff.ParseRetryAfter(resp.Header.Get("Retry-After")), outcome: outcomeNeutral}
	case st == http.StatusRequestTimeout || st == http.StatusConflict:
		return &attemptError{status: st, msg: serverMessage(data), retryable: true, outcome: outcomeNeutral}
	case st >= 500 && isBadInput(serverMessage(data)):
		// The server could not use this request's content (a corrupt
		// image): a failure of this item, not of the server.
		return &attemptError{status: st, msg: serverMessage(data), outcome: outcomeOK}
	case st >= 500:
		return &attemptError{status: st, msg: serverMessage(data), retryable: true, retryAfter: backoff.ParseRetryAfter(resp.Header.Get("Retry-After")), outcome: outcomeFailed}
	default:
		return &attemptError{status: st, msg: serverMessage(data), outcome: outcomeOK}
	}
}

func transportMessage(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("no reply within the %v timeout", timeout)
	}
	// The URL is reported beside the message; keep only the cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// backoff is the wait before retry n (n >= 1): the server's Retry-After
// when given, else full jitter over base*2^(n-1) capped at BackoffMax.
func (c *Client) backoff(n int, ra time.Duration) time.Duration {
	return backoff.Policy{Base: c.opt.BackoffBase, Max: c.opt.BackoffMax, Jitter: true, RetryAfterMax: c.opt.RetryAfterMax}.After(n, ra)
}
