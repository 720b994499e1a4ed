package config

import (
	"strings"
	"testing"
	"time"
)

// TestSetEveryKey: --set reaches every section and the per-role fields,
// and each value keeps the meaning it has in the file.
func TestSetEveryKey(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		check      func(c *Config) bool
	}{
		{"home", "/data/is", func(c *Config) bool { return c.Home == "/data/is" }},
		{"clip.model", "/models/clip", func(c *Config) bool { return c.CLIP.Model == "/models/clip" }},
		{"clip.threads", "3", func(c *Config) bool { return c.CLIP.Threads == 3 }},
		{"cache.path", "/tmp/a.db", func(c *Config) bool { return c.Cache.Path == "/tmp/a.db" }},
		{"cache.disabled", "true", func(c *Config) bool { return c.Cache.Disabled }},
		{"ask.questions", "5", func(c *Config) bool { return c.Ask.Questions == 5 }},
		{"ask.probe", "12", func(c *Config) bool { return c.Ask.Probe == 12 }},
		{"weaviate.url", "http://10.0.0.5:8080,http://10.0.0.6:8080", func(c *Config) bool { return c.Weaviate.URL == "http://10.0.0.5:8080,http://10.0.0.6:8080" }},
		{"weaviate.consistency_level", "ALL", func(c *Config) bool { return c.Weaviate.ConsistencyLevel == "ALL" }},
		{"weaviate.candidates", "512", func(c *Config) bool { return c.Weaviate.Candidates == 512 }},
		{"queue.url", "nats://127.0.0.1:4222", func(c *Config) bool { return c.Queue.URL == "nats://127.0.0.1:4222" }},
		{"queue.ack_wait", "90s", func(c *Config) bool { return c.Queue.AckWait == 90*time.Second }},
		{"queue.max_attempts", "7", func(c *Config) bool { return c.Queue.MaxAttempts == 7 }},
		{"roles.verifier.timeout", "45s", func(c *Config) bool { return c.Roles.Verifier.Timeout == 45*time.Second }},
		{"roles.verifier.max_in_flight", "64", func(c *Config) bool { return c.Roles.Verifier.MaxInFlight == 64 }},
		{"roles.verifier.down_after", "10m", func(c *Config) bool { return c.Roles.Verifier.DownAfter == 10*time.Minute }},
		{"roles.verifier.retries", "0", func(c *Config) bool { return c.Roles.Verifier.Retries != nil && c.Roles.Verifier.MaxRetries() == 0 }},
		{"roles.verifier.temperature", "0.7", func(c *Config) bool { return *c.Roles.Verifier.Temperature == 0.7 }},
		{"roles.verifier.logprobs", "true", func(c *Config) bool { return c.Roles.Verifier.Logprobs }},
		{"roles.verifier.image.format", "png", func(c *Config) bool { return c.Roles.Verifier.Image.Format == "png" }},
		{"roles.verifier.image.max_side", "448", func(c *Config) bool { return c.Roles.Verifier.Image.MaxSide == 448 }},
		{"roles.verifier.extra.repetition_penalty", "1.1", func(c *Config) bool { return c.Roles.Verifier.Extra["repetition_penalty"] == 1.1 }},
		{"roles.verifier.extra", "{top_k: 20}", func(c *Config) bool { return c.Roles.Verifier.Extra["top_k"] == 20 }},
		{"roles.verifier.stop", "END,STOP", func(c *Config) bool { return strings.Join(c.Roles.Verifier.Stop, "|") == "END|STOP" }},
		{"roles.verifier.stop", `["a b", "c"]`, func(c *Config) bool { return strings.Join(c.Roles.Verifier.Stop, "|") == "a b|c" }},
		{"roles.embedder.endpoints", "http://e:1,http://f:2/v1", func(c *Config) bool {
			return strings.Join(c.Roles.Embedder.Endpoints, " ") == "http://e:1/v1 http://f:2/v1"
		}},
		{"roles.embedder.model", "123", func(c *Config) bool { return c.Roles.Embedder.Model == "123" }},
		{"roles.reasoner.model", "name # with a hash", func(c *Config) bool { return c.Roles.Reasoner.Model == "name # with a hash" }},
		{"roles.reasoner.model", "a: b", func(c *Config) bool { return c.Roles.Reasoner.Model == "a: b" }},
		{"roles.reasoner.model", `"true"`, func(c *Config) bool { return c.Roles.Reasoner.Model == "true" }},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			c, err := Parse([]byte("roles:\n  embedder:\n    model: e\n  reasoner:\n    model: r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if err := (Overrides{tc.key + "=" + tc.value}).Apply(c, nil); err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("not applied: %+v", c)
			}
		})
	}
}

// TestSetInheritance: the proposer and questioner still default to the
// reasoner after overrides of either, and their own settings stay theirs.
func TestSetInheritance(t *testing.T) {
	c, err := Parse([]byte("roles:\n  reasoner:\n    endpoints: http://r:1\n    model: r\n    temperature: 0.2\n  proposer:\n    model: p\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := Overrides{"roles.reasoner.timeout=7s", "roles.proposer.max_tokens=99", "roles.reasoner.max_tokens=11", "roles.reasoner.temperature=0.4", "roles.questioner.down_after=1m"}
	if err := o.Apply(c, nil); err != nil {
		t.Fatal(err)
	}
	p, q, r := c.Roles.Proposer, c.Roles.Questioner, c.Roles.Reasoner
	if p.Model != "p" || p.Timeout != 7*time.Second || p.MaxTokens != 99 || *p.Temperature != 0.4 || p.Endpoints[0] != "http://r:1/v1" {
		t.Errorf("proposer %+v", p)
	}
	if q.Model != "r" || q.Timeout != 7*time.Second || q.MaxTokens != 11 || q.DownAfter != time.Minute {
		t.Errorf("questioner %+v", q)
	}
	if r.MaxTokens != 11 || r.DownAfter != DefaultDownAfter {
		t.Errorf("reasoner %+v", r)
	}
	// A second round re-inherits from the reasoner's new value.
	if err := (Overrides{"roles.reasoner.timeout=9s"}).Apply(c, nil); err != nil {
		t.Fatal(err)
	}
	if c.Roles.Proposer.Timeout != 9*time.Second || c.Roles.Proposer.MaxTokens != 99 {
		t.Errorf("proposer after second round %+v", c.Roles.Proposer)
	}
}

// TestSetErrors: an unknown key or a wrong value is one line that names the
// whole key and what is expected.
func TestSetErrors(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"roles.verifier.timeout=soon", `--set roles.verifier.timeout=soon: roles.verifier.timeout: "soon" is not a duration (e.g. 30s)`},
		{"roles.verifier.max_in_flight=many", `roles.verifier.max_in_flight: "many" is not a whole number (e.g. 4)`},
		{"cache.disabled=maybe", `cache.disabled: "maybe" is not true or false`},
		{"roles.verifier.temperature=hot", `roles.verifier.temperature: "hot" is not a number (e.g. 0.5)`},
		{"queue.ack_wait=5", `queue.ack_wait: "5" is not a duration (e.g. 30s)`},
		{"weaviate.candidates=[1, 2]", "weaviate.candidates: a list is not a whole number (e.g. 4)"},
		{"home.sub=x", "home: a section of keys is not a string"},
		{"roles.verifier.tmeout=5s", "roles.verifier.tmeout: unknown key (valid keys: api_key_env, backoff,"},
		{"roles.critic.model=x", "roles.critic: unknown key (valid keys: captioner, embedder, evaluator, proposer, questioner, reasoner, verifier)"},
		{"weaviate.urll=x", "weaviate.urll: unknown key (valid keys: api_key_env, candidates, collection, consistency_level, grpc, replicas, shards, url)"},
		{"bogus=1", "bogus: unknown key (valid keys: ask, cache, clip, home, queue, roles, weaviate)"},
		{"roles..model=x", `"roles..model" is not a dotted key`},
		{"roles.verifier.max_in_flight=-1", "roles.verifier.max_in_flight: must be >= 1"},
	} {
		err := (Overrides{tc.set}).Apply(Default(nil), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s:\n got %v\nwant %s", tc.set, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "line ") {
			t.Errorf("--set %s: error spans lines or names a line of generated text: %q", tc.set, err)
		}
	}
}
