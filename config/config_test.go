package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imagescope.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileEnvDefaults(t *testing.T) {
	p := writeFile(t, `
home: /data/is
clip:
  model: laion/CLIP-ViT-L-14-laion2B-s32B-b82K
  threads: 8
cache:
  path: /tmp/x.db
roles:
  reasoner:
    endpoints: [http://a:8000/v1, "http://b:8000"]
    model: reasoner
    api_key_env: MY_KEY
    max_in_flight: 16
    timeout: 90s
    retries: 2
    stop: ["<|eot_id|>"]
    model_id: meta-llama/Meta-Llama-3-8B-Instruct
  verifier:
    endpoints: http://v:8003/v1
    model: verifier
    logprobs: true
    top_logprobs: 10
    extra:
      repetition_penalty: 1.05
      chat_template_kwargs: {enable_thinking: false}
    image: {width: 224, height: 224, format: png}
  proposer:
    model: proposer-big
`)
	c, err := Load(p, env(map[string]string{"MY_KEY": "sekrit", "IMAGESCOPE_VERIFIER_MODEL": "verifier2", "HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Roles.Reasoner
	if got := strings.Join(r.Endpoints, " "); got != "http://a:8000/v1 http://b:8000/v1" {
		t.Errorf("endpoints = %s", got)
	}
	if r.APIKey != "sekrit" || r.MaxInFlight != 16 || r.Timeout != 90*time.Second || r.MaxRetries() != 2 || *r.Temperature != 0 || r.MaxTokens != 2048 {
		t.Errorf("reasoner = %+v", r)
	}
	v := c.Roles.Verifier
	if v.Model != "verifier2" {
		t.Errorf("env did not override the file: model %q", v.Model)
	}
	if v.Timeout != 20*time.Second || v.MaxInFlight != 32 || v.Image.Format != "png" || v.Image.Width != 224 || v.TopLogprobs != 10 {
		t.Errorf("verifier = %+v", v)
	}
	if v.Extra["repetition_penalty"] != 1.05 {
		t.Errorf("extra = %#v", v.Extra)
	}
	pr := c.Roles.Proposer
	if pr.Model != "proposer-big" || len(pr.Endpoints) != 2 || pr.MaxInFlight != 16 || pr.APIKey != "sekrit" || pr.CacheModelID() != "proposer-big" {
		t.Errorf("proposer did not inherit from the reasoner: %+v", pr)
	}
	if q := c.Roles.Questioner; q.Model != "reasoner" || len(q.Endpoints) != 2 || q.CacheModelID() != "meta-llama/Meta-Llama-3-8B-Instruct" {
		t.Errorf("questioner did not inherit from the reasoner: %+v", q)
	}
	if c.Roles.Captioner.Configured() || c.Roles.Evaluator.Configured() {
		t.Error("unset roles must not be configured")
	}
	if c.CLIP.Threads != 8 || c.Home != "/data/is" || c.Cache.Path != "/tmp/x.db" {
		t.Errorf("config = %+v", c)
	}
	// Flags (Set) beat env and file; Finish re-derives the proposer.
	if err := c.Set("roles.reasoner.timeout", "5s"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("cache.disabled", "true"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("roles.questioner.model", "asker"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("ask.probe", "20"); err != nil || c.Ask.Probe != 20 {
		t.Fatalf("ask.probe: %v %+v", err, c.Ask)
	}
	if err := c.Set("ask.questions", "-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(env(nil)); err == nil {
		t.Error("ask.questions=-1 accepted")
	}
	if err := c.Set("ask.questions", "0"); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(env(nil)); err != nil {
		t.Fatal(err)
	}
	if c.Roles.Proposer.Timeout != 5*time.Second || c.Roles.Proposer.Model != "proposer-big" || !c.Cache.Disabled {
		t.Errorf("after Set: proposer %+v cache %+v", c.Roles.Proposer, c.Cache)
	}
	if q := c.Roles.Questioner; q.Model != "asker" || q.Timeout != 5*time.Second || q.CacheModelID() != "asker" {
		t.Errorf("after Set: questioner %+v", q)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("", env(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Home != "/home/u/.cache/imagescope" || c.Cache.Path != "/home/u/.cache/imagescope/cache/answers.db" || c.CLIP.Model != DefaultCLIPModel {
		t.Errorf("defaults = %+v", c)
	}
	for _, n := range modelrole.All() {
		if r, _ := c.Role(n); r.Configured() {
			t.Errorf("role %s configured by default", n)
		}
	}
	p := writeFile(t, "home: ~/is\ncache: {path: ~/c.db}\n")
	c, err = Load(p, env(map[string]string{"HOME": "/u"}))
	if err != nil || c.Home != "/u/is" || c.Cache.Path != "/u/c.db" {
		t.Errorf("tilde: %+v %v", c, err)
	}
	c, err = Load("", env(map[string]string{"HOME": "/h", "IMAGESCOPE_CAPTIONER_ENDPOINTS": "http://x:1/v1,http://y:2/v1", "IMAGESCOPE_CAPTIONER_MODEL": "cap", "IMAGESCOPE_NO_CACHE": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Roles.Captioner.Endpoints) != 2 || !c.Cache.Disabled {
		t.Errorf("env roles: %+v", c.Roles.Captioner)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"roles:\n  verifier:\n    modle: x\n", "roles.verifier.modle: unknown key"},
		{"clip:\n  modle: x\n", "clip.modle: unknown key"},
		{"bogus: 1\n", "bogus: unknown key"},
		{"roles:\n  critic:\n    model: x\n", "roles.critic: unknown key (valid keys: captioner"},
		{"roles:\n  verifier:\n    endpoints: [ftp://x]\n    model: v\n", "roles.verifier.endpoints"},
		{"roles:\n  verifier:\n    endpoints: [http://x/v1]\n", "roles.verifier.model: required"},
		{"roles:\n  verifier:\n    image: {format: gif}\n", "image.format"},
		{"roles:\n  verifier:\n    timeout: soon\n", "line 3"},
		{"roles:\n  verifier:\n    top_logprobs: 50\n", "top_logprobs"},
		{"roles:\n  verifier:\n    image: {maxside: 3}\n", "valid keys: format, height, max_side, quality, width"},
		{"queue:\n  urll: x\n", "queue.urll: unknown key"},
	} {
		p := writeFile(t, tc.yaml)
		_, err := Load(p, env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: err = %v, want mention of %q and the file", tc.yaml, err, tc.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), env(nil)); err == nil {
		t.Error("missing file: no error")
	}
	c := Default(nil)
	if err := c.Set("roles.verifier.bogus", "1"); err == nil {
		t.Error("Set unknown key: no error")
	}
	if err := c.Set("roles.verifier.max_in_flight", "many"); err == nil {
		t.Error("Set bad int: no error")
	}
}

func TestExampleConfigs(t *testing.T) {
	for _, name := range []string{"vllm.yaml", "ollama.yaml"} {
		p := filepath.Join("..", "configs", name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		c, err := Load(p, env(map[string]string{"HOME": "/h"}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !c.Roles.Reasoner.Configured() {
			t.Errorf("%s: reasoner not configured", name)
		}
	}
}

func TestOverrides(t *testing.T) {
	c := Default(nil)
	var o Overrides
	for _, v := range []string{"roles.reasoner.endpoints=http://r:1", "roles.reasoner.model=llama", "clip.threads=3"} {
		if err := o.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Set("novalue"); err == nil {
		t.Error("Set without = accepted")
	}
	if err := o.Apply(c, nil); err != nil {
		t.Fatal(err)
	}
	if c.Roles.Reasoner.Model != "llama" || c.Roles.Proposer.Model != "llama" || c.CLIP.Threads != 3 || c.Roles.Reasoner.Endpoints[0] != "http://r:1/v1" {
		t.Errorf("after overrides: %+v", c.Roles.Reasoner)
	}
	bad := Overrides{"roles.reasoner.max_in_flight=-1"}
	if err := bad.Apply(c, nil); err == nil || !strings.Contains(err.Error(), "max_in_flight") {
		t.Errorf("invalid override: %v", err)
	}
}

// TestWrongTypeNamesKeyAndForm: a value of the wrong type is reported on
// one line with its key path and the form the key expects.
func TestWrongTypeNamesKeyAndForm(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"roles:\n  verifier:\n    model: m\n    timeout: soon\n", `roles.verifier.timeout: "soon" is not a duration (e.g. 30s) (line 4)`},
		{"clip:\n  threads: many\n", `clip.threads: "many" is not a whole number (e.g. 4) (line 2)`},
		{"clip:\n  threads: many\nroles:\n  verifier:\n    model: m\n    timeout: soon\n",
			`clip.threads: "many" is not a whole number (e.g. 4) (line 2); roles.verifier.timeout: "soon" is not a duration (e.g. 30s) (line 6)`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.yaml))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.yaml, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error spans lines: %q", c.yaml, err)
		}
	}
}
