// Package config loads imagescope's configuration: one YAML file, then
// environment variables, then command-line flags (applied by the caller with
// Set), over built-in defaults.
//
// Precedence: flags > environment > file > defaults.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagescope/imagescope/modelrole"
)

// inheriting are the roles whose unset fields default to the reasoner's.
var inheriting = []modelrole.Name{modelrole.Proposer, modelrole.Questioner}

// DefaultCLIPModel is the CLIP checkpoint used when none is configured
// (small enough for a laptop).
const DefaultCLIPModel = "openai/clip-vit-base-patch32"

// Config is the whole configuration. Sections owned by other parts of the
// program are added as fields here; unknown keys in a file are an error.
type Config struct {
	// Home is the data directory (models, image DBs, answer cache).
	Home  string `yaml:"home"`
	CLIP  CLIP   `yaml:"clip"`
	Roles Roles  `yaml:"roles"`
	Cache Cache  `yaml:"cache"`

	// Weaviate and Queue configure scale-out (see scale.go).
	Weaviate Weaviate `yaml:"weaviate"`
	Queue    Queue    `yaml:"queue"`

	// Ask sizes asking back in chats (docs/asking-back.md).
	Ask Ask `yaml:"ask"`

	// Path is the file the configuration was read from ("" when none).
	Path string `yaml:"-"`

	// own holds the inheriting roles as written (before inheriting from
	// the reasoner), so Finish can be re-run after Set.
	own map[modelrole.Name]*Role
}

// CLIP configures the in-process CLIP encoder.
type CLIP struct {
	// Model is a local directory or a HuggingFace model id.
	Model string `yaml:"model"`
	// Threads bounds the encoder's worker threads (0 = all cores).
	Threads int `yaml:"threads"`
}

// Ask sizes asking back: how many questions the questioner proposes and
// on how many top candidates the verifier checks each (0: 3 and 10).
type Ask struct {
	Questions int `yaml:"questions"`
	Probe     int `yaml:"probe"`
}

// Cache configures the persistent answer cache of the model roles.
type Cache struct {
	// Path of the SQLite file (default $home/cache/answers.db).
	Path string `yaml:"path"`
	// Disabled turns the cache off (every call goes to the server).
	Disabled bool `yaml:"disabled"`
}

// Roles holds the model roles. A role without endpoints is not configured
// and its stage is skipped.
type Roles struct {
	Captioner Role `yaml:"captioner"`
	Reasoner  Role `yaml:"reasoner"`
	// Proposer writes the verifier's propositions; unset fields default to
	// the reasoner's.
	Proposer Role `yaml:"proposer"`
	// Questioner proposes the next question of a chat (asking back);
	// unset fields default to the reasoner's.
	Questioner Role `yaml:"questioner"`
	Verifier   Role `yaml:"verifier"`
	Evaluator  Role `yaml:"evaluator"`
	// Embedder is an optional remote CLIP-like embedding server used
	// instead of the in-process encoder.
	Embedder Role `yaml:"embedder"`
}

// DefaultDownAfter is how long a batch run waits for a role without a
// successful reply before it stops.
const DefaultDownAfter = 3 * time.Minute

// Role is one model role served by OpenAI-compatible endpoints.
type Role struct {
	// Endpoints are the base URLs of the replicas ("http://host:8000/v1";
	// a URL without a path gets "/v1"). A single string is accepted too.
	Endpoints StringList `yaml:"endpoints"`
	// Model is the name the server knows the model by (vLLM's
	// --served-model-name).
	Model string `yaml:"model"`
	// ModelID is the endpoint-independent identity of the model used in the
	// answer cache key, e.g. "google/paligemma-3b-mix-224@<revision>".
	// Default: Model.
	ModelID string `yaml:"model_id"`
	// APIKeyEnv names the environment variable holding the bearer token.
	APIKeyEnv string `yaml:"api_key_env"`
	// MaxInFlight bounds the concurrent requests per endpoint.
	MaxInFlight int `yaml:"max_in_flight"`
	// Timeout bounds one HTTP attempt.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is the number of retries after the first attempt.
	Retries *int `yaml:"retries"`
	// Cooldown is how long an endpoint's circuit breaker stays open after
	// repeated failures before one probe request is let through.
	Cooldown time.Duration `yaml:"cooldown"`
	// DownAfter is how long a batch run (eval, index, worker) keeps
	// retrying a role that gives no successful reply before it declares
	// the role down and stops, resumable (default 3m).
	DownAfter time.Duration `yaml:"down_after"`
	// Backoff is the base of the exponential retry backoff (default 500ms).
	Backoff time.Duration `yaml:"backoff"`
	// RetryAfterMax caps the wait a server asks for with Retry-After
	// (default 60s).
	RetryAfterMax time.Duration `yaml:"retry_after_max"`
	// MaxTokens is the default completion budget.
	MaxTokens   int      `yaml:"max_tokens"`
	Temperature *float64 `yaml:"temperature"`
	TopP        *float64 `yaml:"top_p"`
	// Stop is a list; one string is split at commas and spaces.
	Stop StringList `yaml:"stop"`
	Seed *int       `yaml:"seed"`
	// Extra fields are copied into every request body (server extensions
	// such as repetition_penalty or chat_template_kwargs).
	Extra map[string]any `yaml:"extra"`
	// Logprobs asks for log-probabilities (TopLogprobs alternatives per
	// position).
	Logprobs    bool `yaml:"logprobs"`
	TopLogprobs int  `yaml:"top_logprobs"`
	// Image controls how images are encoded for this role.
	Image Image `yaml:"image"`

	// APIKey is resolved from APIKeyEnv at load time; never written out.
	APIKey string `yaml:"-"`
}

// Image controls image re-encoding before sending.
type Image struct {
	// MaxSide downsizes images whose longer side exceeds it (0 = keep).
	MaxSide int `yaml:"max_side"`
	// Width and Height, when both set, resize every image to exactly that
	// size (e.g. the verifier's native resolution).
	Width  int `yaml:"width"`
	Height int `yaml:"height"`
	// Format is "jpeg" (default) or "png".
	Format string `yaml:"format"`
	// Quality is the JPEG quality (default 95).
	Quality int `yaml:"quality"`
}

// Configured reports whether the role has at least one endpoint.
func (r Role) Configured() bool { return len(r.Endpoints) > 0 }

// CacheModelID is the model identity used in cache keys.
func (r Role) CacheModelID() string {
	if r.ModelID != "" {
		return r.ModelID
	}
	return r.Model
}

// MaxRetries returns the configured retry count (default 4).
func (r Role) MaxRetries() int {
	if r.Retries == nil {
		return 4
	}
	return *r.Retries
}

// StringList is a YAML sequence of strings that also accepts one scalar.
type StringList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *StringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var v string
		if err := n.Decode(&v); err != nil {
			return err
		}
		*s = splitList(v)
		return nil
	case yaml.SequenceNode:
		var v []string
		if err := n.Decode(&v); err != nil {
			return err
		}
		*s = v
		return nil
	}
	return fmt.Errorf("line %d: expected a string or a list of strings", n.Line)
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Role returns the named role's settings (after defaults) and whether the
// name is known.
func (c *Config) Role(name modelrole.Name) (Role, bool) {
	p := c.rolePtr(name)
	if p == nil {
		return Role{}, false
	}
	return *p, true
}

func (c *Config) rolePtr(name modelrole.Name) *Role {
	switch name {
	case modelrole.Captioner:
		return &c.Roles.Captioner
	case modelrole.Reasoner:
		return &c.Roles.Reasoner
	case modelrole.Proposer:
		return &c.Roles.Proposer
	case modelrole.Questioner:
		return &c.Roles.Questioner
	case modelrole.Verifier:
		return &c.Roles.Verifier
	case modelrole.Evaluator:
		return &c.Roles.Evaluator
	case modelrole.Embedder:
		return &c.Roles.Embedder
	}
	return nil
}

// Per-role defaults (model-servers.md section 4).
var roleDefaults = map[modelrole.Name]struct {
	timeout   time.Duration
	maxTokens int
}{
	modelrole.Captioner:  {60 * time.Second, 256},
	modelrole.Reasoner:   {120 * time.Second, 2048},
	modelrole.Proposer:   {120 * time.Second, 2048},
	modelrole.Questioner: {120 * time.Second, 2048},
	modelrole.Verifier:   {20 * time.Second, 16}, // room for "Yes, there is ..." from chat-style VLMs
	modelrole.Evaluator:  {180 * time.Second, 4096},
	modelrole.Embedder:   {10 * time.Second, 0},
}

// Default returns the built-in configuration (no roles configured).
func Default(getenv func(string) string) *Config {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := &Config{}
	c.CLIP.Model = DefaultCLIPModel
	c.Home = defaultHome(getenv)
	return c
}

func defaultHome(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "imagescope")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "imagescope")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "imagescope")
	}
	return filepath.Join(os.TempDir(), "imagescope")
}

// Load reads the configuration. path "" means $IMAGESCOPE_CONFIG, and when
// that is unset too, defaults plus environment only. getenv is os.Getenv
// outside tests (nil = no environment).
func Load(path string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := Default(getenv)
	if path == "" {
		path = getenv("IMAGESCOPE_CONFIG")
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := decode(data, c, true); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		c.Path = path
	}
	if err := c.applyEnv(getenv); err != nil {
		return nil, err
	}
	if err := c.Finish(getenv); err != nil {
		if path != "" {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, err
	}
	return c, nil
}

// Parse decodes YAML text over defaults (no environment) and validates it.
func Parse(data []byte) (*Config, error) {
	c := Default(nil)
	if err := decode(data, c, true); err != nil {
		return nil, err
	}
	if err := c.Finish(nil); err != nil {
		return nil, err
	}
	return c, nil
}

var fieldNotFound = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)

var wrongType = regexp.MustCompile("line (\\d+): cannot unmarshal !!(\\w+)(?: `([^`]*)`)? into (\\S+)")

// decode decodes YAML text over c, strictly: an unknown key is an error.
// Errors name the dotted key path, what is wrong and the form expected, on
// one line; withLines adds the line of the text (for files).
func decode(data []byte, c *Config, withLines bool) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return nil // EOF: an empty file
	}
	msg := err.Error()
	unknown := fieldNotFound.FindAllStringSubmatch(msg, -1)
	wrong := wrongType.FindAllStringSubmatch(msg, -1)
	if unknown == nil && wrong == nil {
		return err
	}
	nodes := keyPaths(data)
	at := func(line string) string {
		if withLines {
			return " (line " + line + ")"
		}
		return ""
	}
	var parts []string
	for _, g := range unknown {
		line, _ := strconv.Atoi(g[1])
		parts = append(parts, fmt.Sprintf("%s: unknown key (%s)%s", nodes.key(line, g[2]), sectionHint(g[3]), at(g[1])))
	}
	for _, g := range wrong {
		line, _ := strconv.Atoi(g[1])
		if g[3] == "" && (g[2] == "map" || g[2] == "seq") {
			got := map[string]string{"map": "a section of keys", "seq": "a list"}[g[2]]
			parts = append(parts, fmt.Sprintf("%s: %s is not %s%s", nodes.value(line, ""), got, expectedForm(g[4]), at(g[1])))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %q is not %s%s", nodes.value(line, g[3]), g[3], expectedForm(g[4]), at(g[1])))
	}
	return errors.New(strings.Join(parts, "; "))
}

// expectedForm describes what a Go type accepts, for error messages.
func expectedForm(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "time.Duration":
		return "a duration (e.g. 30s)"
	case "int", "int64", "int32", "uint", "uint64":
		return "a whole number (e.g. 4)"
	case "float64", "float32":
		return "a number (e.g. 0.5)"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	if strings.HasPrefix(goType, "[]") {
		return "a list (e.g. [a, b])"
	}
	if strings.HasPrefix(goType, "map[") || strings.HasPrefix(goType, "config.") {
		return "a section of keys"
	}
	return "a " + goType
}

// yamlEntry is one key, scalar value or nested section of YAML text with its
// dotted key path (roles.verifier.timeout).
type yamlEntry struct {
	line  int
	path  string
	value string
	kind  yaml.Kind // 0 for a key
}

type yamlEntries []yamlEntry

// keyPaths lists the keys, values and sections of YAML text with their key
// paths, so decoding errors (which give only a line) can name the key.
func keyPaths(data []byte) yamlEntries {
	var root yaml.Node
	var out yamlEntries
	if yaml.Unmarshal(data, &root) != nil {
		return out
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind != yaml.DocumentNode && path != "" {
			out = append(out, yamlEntry{line: n.Line, path: path, value: n.Value, kind: n.Kind})
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				out = append(out, yamlEntry{line: n.Content[i].Line, path: p})
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&root, "")
	return out
}

// key is the path of the key name on line (name itself when not found).
func (es yamlEntries) key(line int, name string) string {
	for _, e := range es {
		if e.kind == 0 && e.line == line && (e.path == name || strings.HasSuffix(e.path, "."+name)) {
			return e.path
		}
	}
	return name
}

// value is the path of the value on line that reads text (long values
// come truncated, "abc..."), or of the section there when text is "".
func (es yamlEntries) value(line int, text string) string {
	for i := len(es) - 1; i >= 0; i-- { // innermost first
		e := es[i]
		if e.kind == 0 || e.line != line {
			continue
		}
		if text == "" && e.kind != yaml.ScalarNode {
			return e.path
		}
		if text != "" && e.kind == yaml.ScalarNode && (e.value == text || strings.HasSuffix(text, "...") && strings.HasPrefix(e.value, strings.TrimSuffix(text, "..."))) {
			return e.path
		}
	}
	return fmt.Sprintf("line %d", line)
}

// sectionHint lists the keys accepted where an unknown key appeared.
func sectionHint(typeName string) string {
	name := strings.TrimPrefix(typeName, "config.")
	if t, ok := sectionTypes(reflect.TypeOf(Config{}), map[string]reflect.Type{})[name]; ok {
		return "valid keys: " + strings.Join(yamlKeys(t), ", ")
	}
	return "not a valid key here"
}

// sectionTypes maps the name of every struct type reachable from t
// (sections added by other parts of the program included) to its type.
func sectionTypes(t reflect.Type, seen map[string]reflect.Type) map[string]reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
		return seen
	}
	if _, ok := seen[t.Name()]; ok {
		return seen
	}
	seen[t.Name()] = t
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).IsExported() {
			sectionTypes(t.Field(i).Type, seen)
		}
	}
	return seen
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, tag)
	}
	sort.Strings(keys)
	return keys
}

// Environment variables (see docs/configuration.md):
//
//	IMAGESCOPE_HOME, IMAGESCOPE_CLIP_MODEL, IMAGESCOPE_CLIP_THREADS,
//	IMAGESCOPE_CACHE_PATH, IMAGESCOPE_NO_CACHE,
//	IMAGESCOPE_<ROLE>_ENDPOINTS, IMAGESCOPE_<ROLE>_MODEL,
//	IMAGESCOPE_<ROLE>_MAX_IN_FLIGHT, IMAGESCOPE_<ROLE>_TIMEOUT
func (c *Config) applyEnv(getenv func(string) string) error {
	set := func(env, key string) error {
		if v := getenv(env); v != "" {
			if key == "cache.disabled" {
				// A switch in the environment is commonly 1 or 0.
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("environment %s: %q is not true or false (or 1 or 0)", env, v)
				}
				v = strconv.FormatBool(b)
			}
			if err := c.Set(key, v); err != nil {
				return fmt.Errorf("environment %s: %w", env, err)
			}
		}
		return nil
	}
	pairs := [][2]string{
		{"IMAGESCOPE_HOME", "home"},
		{"IMAGESCOPE_CLIP_MODEL", "clip.model"},
		{"IMAGESCOPE_CLIP_THREADS", "clip.threads"},
		{"IMAGESCOPE_CACHE_PATH", "cache.path"},
		{"IMAGESCOPE_NO_CACHE", "cache.disabled"},
	}
	for _, n := range modelrole.All() {
		r := string(n)
		u := "IMAGESCOPE_" + strings.ToUpper(r) + "_"
		pairs = append(pairs,
			[2]string{u + "ENDPOINTS", "roles." + r + ".endpoints"},
			[2]string{u + "MODEL", "roles." + r + ".model"},
			[2]string{u + "MAX_IN_FLIGHT", "roles." + r + ".max_in_flight"},
			[2]string{u + "TIMEOUT", "roles." + r + ".timeout"},
		)
	}
	for _, p := range pairs {
		if err := set(p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

// Set overrides one key given in dotted form ("roles.verifier.timeout",
// "weaviate.url", "cache.disabled") as flags do: the value is read as one
// YAML scalar ("30s", "64", "true"; a flow list "[a, b]" or mapping
// "{k: v}" when it starts with "[" or "{"), placed under the key's nested
// mapping and decoded over c exactly as the file is, so every key of the
// file can be set and an unknown key or a value of the wrong type is
// reported with the key path and the form expected. Call Finish afterwards
// to re-apply defaults and validate.
func (c *Config) Set(key, value string) error {
	data, err := overlay(key, value)
	if err != nil {
		return err
	}
	// An inheriting role takes the override into its settings as written,
	// so that Finish inherits what is still unset from the reasoner.
	for _, name := range inheriting {
		if own := c.own[name]; own != nil {
			*c.rolePtr(name) = *own
		}
	}
	err = decode(data, c, false)
	for _, name := range inheriting {
		if c.own[name] != nil {
			own := *c.rolePtr(name)
			c.own[name] = &own
		}
	}
	return err
}

// overlay is the YAML text that sets the dotted key to value.
func overlay(key, value string) ([]byte, error) {
	parts := strings.Split(key, ".")
	for _, p := range parts {
		if strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf("%q is not a dotted key (e.g. roles.verifier.timeout)", key)
		}
	}
	n := valueNode(value)
	for i := len(parts) - 1; i >= 0; i-- {
		n = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: parts[i]}, n}}
	}
	return yaml.Marshal(n)
}

// valueNode reads a flag value as a YAML scalar, or as a flow list or
// mapping; anything else (text with a comment sign, a colon, several
// lines) is taken as the literal string.
func valueNode(v string) *yaml.Node {
	var doc yaml.Node
	if yaml.Unmarshal([]byte(v), &doc) == nil && len(doc.Content) == 1 {
		n := doc.Content[0]
		comments := doc.HeadComment + doc.LineComment + doc.FootComment + n.HeadComment + n.LineComment + n.FootComment
		switch {
		case comments != "":
		case n.Kind == yaml.ScalarNode && n.Style == 0 && n.Value == strings.TrimSpace(v):
			return n
		case n.Kind == yaml.ScalarNode && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0:
			return n
		case (n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode) && n.Style&yaml.FlowStyle != 0:
			return n
		}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

// Finish applies defaults that depend on other values (the proposer and
// questioner inheriting from the reasoner, per-role timeouts, the cache path), resolves
// API keys from the environment and validates everything. Load calls it;
// call it again after Set.
func (c *Config) Finish(getenv func(string) string) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if c.CLIP.Model == "" {
		c.CLIP.Model = DefaultCLIPModel
	}
	if c.CLIP.Threads < 0 {
		return fmt.Errorf("clip.threads: must be >= 0, got %d", c.CLIP.Threads)
	}
	if c.Ask.Questions < 0 || c.Ask.Probe < 0 {
		return fmt.Errorf("ask.questions and ask.probe: must be >= 0, got %d and %d", c.Ask.Questions, c.Ask.Probe)
	}
	if c.Home == "" {
		c.Home = defaultHome(getenv)
	}
	c.Home = expandHome(c.Home, getenv)
	c.Cache.Path = expandHome(c.Cache.Path, getenv)
	c.CLIP.Model = expandHome(c.CLIP.Model, getenv)
	if c.Cache.Path == "" {
		c.Cache.Path = filepath.Join(c.Home, "cache", "answers.db")
	}
	if c.own == nil {
		c.own = map[modelrole.Name]*Role{}
	}
	for _, name := range inheriting {
		p := c.rolePtr(name)
		if c.own[name] == nil {
			own := *p
			c.own[name] = &own
		}
		base := c.Roles.Reasoner
		if own := c.own[name]; own.Model != "" && own.Model != base.Model && own.ModelID == "" {
			// Another model: the reasoner's identity in the cache key
			// would mix their answers up.
			base.ModelID = ""
		}
		*p = inherit(*c.own[name], base)
	}
	for _, name := range modelrole.All() {
		r := c.rolePtr(name)
		applyRoleDefaults(name, r)
		if err := r.validate(); err != nil {
			return fmt.Errorf("roles.%s.%w", name, err)
		}
		if r.APIKeyEnv != "" {
			r.APIKey = getenv(r.APIKeyEnv)
		}
	}
	return nil
}

// expandHome turns a leading "~/" into the user's home directory.
func expandHome(p string, getenv func(string) string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	h := getenv("HOME")
	if h == "" {
		if d, err := os.UserHomeDir(); err == nil {
			h = d
		}
	}
	if h == "" {
		return p
	}
	return filepath.Join(h, strings.TrimPrefix(p, "~"))
}

// inherit fills p's zero fields from base (the proposer defaults to the
// reasoner's settings).
func inherit(p, base Role) Role {
	pv := reflect.ValueOf(&p).Elem()
	bv := reflect.ValueOf(base)
	for i := 0; i < pv.NumField(); i++ {
		f := pv.Field(i)
		if f.IsZero() && f.CanSet() {
			f.Set(bv.Field(i))
		}
	}
	return p
}

func applyRoleDefaults(name modelrole.Name, r *Role) {
	d := roleDefaults[name]
	if r.Timeout == 0 {
		r.Timeout = d.timeout
	}
	if r.MaxTokens == 0 {
		r.MaxTokens = d.maxTokens
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = 32
	}
	if r.Cooldown == 0 {
		r.Cooldown = 10 * time.Second
	}
	if r.DownAfter == 0 {
		r.DownAfter = DefaultDownAfter
	}
	if r.Temperature == nil {
		zero := 0.0
		r.Temperature = &zero
	}
	if r.Image.Format == "" {
		r.Image.Format = "jpeg"
	}
	if r.Image.Quality == 0 {
		r.Image.Quality = 95
	}
	for i, e := range r.Endpoints {
		r.Endpoints[i] = NormalizeEndpoint(e)
	}
}

// NormalizeEndpoint trims a trailing slash and adds "/v1" to a URL that has
// no path.
func NormalizeEndpoint(e string) string {
	e = strings.TrimRight(strings.TrimSpace(e), "/")
	if u, err := url.Parse(e); err == nil && (u.Path == "" || u.Path == "/") {
		return e + "/v1"
	}
	return e
}

func (r *Role) validate() error {
	for _, e := range r.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("endpoints: %q is not an http(s) URL", e)
		}
	}
	if r.Configured() && r.Model == "" {
		return errors.New("model: required when endpoints are set")
	}
	switch {
	case r.MaxInFlight < 1:
		return fmt.Errorf("max_in_flight: must be >= 1, got %d", r.MaxInFlight)
	case r.Timeout < 0:
		return fmt.Errorf("timeout: must be positive, got %v", r.Timeout)
	case r.Retries != nil && *r.Retries < 0:
		return fmt.Errorf("retries: must be >= 0, got %d", *r.Retries)
	case r.Cooldown < 0 || r.DownAfter < 0 || r.Backoff < 0 || r.RetryAfterMax < 0:
		return errors.New("cooldown, down_after, backoff and retry_after_max: must not be negative")
	case r.MaxTokens < 0:
		return fmt.Errorf("max_tokens: must be >= 0, got %d", r.MaxTokens)
	case *r.Temperature < 0:
		return fmt.Errorf("temperature: must be >= 0, got %v", *r.Temperature)
	case r.TopLogprobs < 0 || r.TopLogprobs > 20:
		return fmt.Errorf("top_logprobs: must be in [0, 20], got %d", r.TopLogprobs)
	case r.Image.MaxSide < 0 || r.Image.Width < 0 || r.Image.Height < 0:
		return errors.New("image: sizes must be >= 0")
	case (r.Image.Width == 0) != (r.Image.Height == 0):
		return errors.New("image: set both width and height, or neither")
	case r.Image.Format != "jpeg" && r.Image.Format != "png":
		return fmt.Errorf("image.format: %q is not jpeg or png", r.Image.Format)
	case r.Image.Quality < 1 || r.Image.Quality > 100:
		return fmt.Errorf("image.quality: must be in [1, 100], got %d", r.Image.Quality)
	}
	for k := range r.Extra {
		switch k {
		case "model", "messages", "input":
			return fmt.Errorf("extra: %q is set by the client and cannot be overridden", k)
		}
	}
	return nil
}

// Overrides collects repeatable "--set key=value" flags (keys as in Set).
type Overrides []string

// String implements flag.Value.
func (o *Overrides) String() string { return strings.Join(*o, " ") }

// Set implements flag.Value.
func (o *Overrides) Set(v string) error {
	k, _, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value (e.g. roles.verifier.max_in_flight=64), got %q", v)
	}
	*o = append(*o, v)
	return nil
}

// Apply sets every override on c and re-runs Finish.
func (o Overrides) Apply(c *Config, getenv func(string) string) error {
	for _, kv := range o {
		k, v, _ := strings.Cut(kv, "=")
		if err := c.Set(k, v); err != nil {
			return fmt.Errorf("--set %s: %w", kv, err)
		}
	}
	return c.Finish(getenv)
}
