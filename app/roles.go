package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
	evalrun "github.com/imagescope/imagescope/run"
)

// Roles are the model clients of every configured chat role, sharing the
// answer cache.
type Roles struct {
	Cache   *llm.Cache
	Clients map[modelrole.Name]*llm.Client
}

// OpenCache opens the configuration's answer cache (nil when disabled).
func OpenCache(cfg *config.Config) (*llm.Cache, error) {
	if cfg.Cache.Disabled {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Cache.Path), 0o755); err != nil {
		return nil, fmt.Errorf("answer cache: %w", err)
	}
	c, err := llm.OpenCache(cfg.Cache.Path)
	if err != nil {
		return nil, fmt.Errorf("answer cache: %w", err)
	}
	return c, nil
}

// OpenRoles opens the answer cache and a client for every configured role.
// Interactive clients (serve, search) fail fast while a role's breakers are
// open so that a search can degrade; batch ones (eval, worker) ride out
// outages up to the role's down_after window.
func OpenRoles(ctx context.Context, cfg *config.Config, log *slog.Logger, interactive bool) (*Roles, error) {
	cache, err := OpenCache(cfg)
	if err != nil {
		return nil, err
	}
	r := &Roles{Cache: cache, Clients: map[modelrole.Name]*llm.Client{}}
	for _, name := range modelrole.Chat() {
		rcfg, ok := cfg.Role(name)
		if !ok || !rcfg.Configured() {
			continue
		}
		c, err := llm.New(ctx, name, rcfg, cache, llm.Options{Logger: log, Interactive: interactive})
		if err != nil {
			r.Close()
			return nil, err
		}
		r.Clients[name] = c
	}
	return r, nil
}

// Close closes the answer cache.
func (r *Roles) Close() {
	if r.Cache != nil {
		r.Cache.Close()
	}
}

// Chatter is the pipeline's view of a role (nil when not configured).
func (r *Roles) Chatter(name modelrole.Name) pipeline.Chatter {
	c, ok := r.Clients[name]
	if !ok {
		return nil
	}
	return adapt.Chatter{Role: name, Client: c}
}

// Names lists the configured roles in pipeline order (the proposer when
// the reasoner stands in for it).
func (r *Roles) Names() []string {
	var out []string
	for _, n := range []modelrole.Name{modelrole.Captioner, modelrole.Reasoner, modelrole.Proposer, modelrole.Verifier, modelrole.Evaluator} {
		_, ok := r.Clients[n]
		if !ok && n == modelrole.Proposer {
			_, ok = r.Clients[modelrole.Reasoner]
		}
		if ok {
			out = append(out, string(n))
		}
	}
	return out
}

// Counters are the clients' counters for a run report.
func (r *Roles) Counters() map[string]evalrun.ModelCounters {
	out := map[string]evalrun.ModelCounters{}
	for k, s := range r.Stats() {
		out[k] = evalrun.ModelCounters{Calls: s.Calls, CacheHits: s.CacheHits, Shared: s.Shared, CacheMisses: s.CacheMisses,
			Failures: s.Failures, Requests: s.Requests, Retries: s.Retries, CutOff: s.CutOff, Truncated: s.Truncated}
	}
	return out
}

// Stats returns every client's counters by role.
func (r *Roles) Stats() map[string]llm.Stats {
	out := map[string]llm.Stats{}
	for k, c := range r.Clients {
		out[string(k)] = c.Stats()
	}
	return out
}

// InFlight bounds the pipeline's concurrent calls per role by what the
// role's endpoints accept in total.
func InFlight(cfg *config.Config) map[modelrole.Name]int {
	out := map[modelrole.Name]int{}
	for _, name := range modelrole.Chat() {
		r, ok := cfg.Role(name)
		if !ok || !r.Configured() {
			continue
		}
		out[name] = max(1, r.MaxInFlight*len(r.Endpoints))
	}
	return out
}

// RoleModels is the effective configuration of every configured role (API
// keys left out), as recorded in a run folder.
func RoleModels(cfg *config.Config) map[string]any {
	out := map[string]any{}
	for _, name := range modelrole.All() {
		r, ok := cfg.Role(name)
		if !ok || !r.Configured() {
			continue
		}
		out[string(name)] = map[string]any{
			"endpoints": []string(r.Endpoints), "model": r.Model, "model_id": r.CacheModelID(), "api_key_env": r.APIKeyEnv,
			"max_in_flight": r.MaxInFlight, "timeout": r.Timeout.String(), "retries": r.MaxRetries(), "cooldown": r.Cooldown.String(),
			"max_tokens": r.MaxTokens, "temperature": r.Temperature, "top_p": r.TopP, "stop": r.Stop, "seed": r.Seed,
			"extra": r.Extra, "logprobs": r.Logprobs, "top_logprobs": r.TopLogprobs, "image": r.Image,
		}
	}
	return out
}

// AskOptions sizes asking back from the configuration's ask section.
func AskOptions(cfg *config.Config, opt *pipeline.Options) {
	if cfg.Ask.Questions > 0 {
		opt.AskQuestions = cfg.Ask.Questions
	}
	if cfg.Ask.Probe > 0 {
		opt.AskProbe = cfg.Ask.Probe
	}
}
