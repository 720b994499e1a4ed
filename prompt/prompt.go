// Package prompt holds imagescope's prompt templates (one set per domain,
// embedded in the binary and overridable from a directory) and the tolerant
// JSON extraction used to read model replies.
package prompt

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

//go:embed templates
var embedded embed.FS

// Template names.
const (
	Caption  = "caption"  // captioner instruction for gallery images
	Reason   = "reason"   // stage 1: atomic instructions + target descriptions
	Propose  = "propose"  // stage 2: yes/no propositions
	Verify   = "verify"   // stage 2: verifier question about one candidate
	Evaluate = "evaluate" // stage 3: evaluator judgement of a side-by-side image
	Ask      = "ask"      // chat: questions to ask the user next
)

// Names lists every template name.
var names = []string{Caption, Reason, Propose, Verify, Evaluate, Ask}

// Names returns every template name.
func Names() []string { return append([]string(nil), names...) }

// Domains lists the prompt domains (dataset.Dataset.Domain values).
func Domains() []string {
	return []string{"general", "cirr", "fashion-dress", "fashion-shirt", "fashion-toptee", "chat"}
}

// BlankReference is the reference caption used when a query has no
// reference image.
const BlankReference = "a blank image"

// Library is the full set of templates for every domain.
type Library struct {
	// text[domain][name] is the template source after overrides.
	text map[string]map[string]string
	// source[domain][name] says where the text came from ("embedded" or a path).
	source map[string]map[string]string
	tmpl   map[string]map[string]*template.Template
}

// Load returns the embedded templates, with any file found in overrideDir
// replacing its embedded counterpart. Override lookup for template NAME in
// DOMAIN: <dir>/<domain>/<name>.txt, then <dir>/shared/<name>.txt, then
// <dir>/<name>.txt. overrideDir "" means embedded only.
func Load(overrideDir string) (*Library, error) {
	if overrideDir != "" {
		st, err := os.Stat(overrideDir)
		if err != nil {
			return nil, fmt.Errorf("prompt directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("prompt directory %s: not a directory", overrideDir)
		}
	}
	lib := &Library{
		text:   map[string]map[string]string{},
		source: map[string]map[string]string{},
		tmpl:   map[string]map[string]*template.Template{},
	}
	for _, d := range Domains() {
		lib.text[d] = map[string]string{}
		lib.source[d] = map[string]string{}
		lib.tmpl[d] = map[string]*template.Template{}
		for _, n := range names {
			txt, src, err := lookup(overrideDir, d, n)
			if err != nil {
				return nil, err
			}
			t, err := template.New(d + "/" + n).Option("missingkey=error").Parse(txt)
			if err != nil {
				return nil, fmt.Errorf("parse prompt template %s (%s): %w", n, src, err)
			}
			lib.text[d][n] = txt
			lib.source[d][n] = src
			lib.tmpl[d][n] = t
		}
	}
	return lib, nil
}

func lookup(dir, domain, name string) (text, source string, err error) {
	file := name + ".txt"
	if dir != "" {
		for _, p := range []string{filepath.Join(dir, domain, file), filepath.Join(dir, "shared", file), filepath.Join(dir, file)} {
			b, err := os.ReadFile(p)
			if err == nil {
				return string(b), p, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", "", fmt.Errorf("read prompt override %s: %w", p, err)
			}
		}
	}
	for _, p := range []string{"templates/" + domain + "/" + file, "templates/shared/" + file} {
		b, err := embedded.ReadFile(p)
		if err == nil {
			return string(b), "embedded:" + strings.TrimPrefix(p, "templates/"), nil
		}
	}
	return "", "", fmt.Errorf("no prompt template %q for domain %q", name, domain)
}

// HasDomain reports whether domain is known.
func (l *Library) HasDomain(domain string) bool { _, ok := l.text[domain]; return ok }

// Text returns the template source of name in domain.
func (l *Library) Text(domain, name string) (string, error) {
	m, ok := l.text[domain]
	if !ok {
		return "", fmt.Errorf("unknown prompt domain %q (known: %s)", domain, strings.Join(Domains(), ", "))
	}
	t, ok := m[name]
	if !ok {
		return "", fmt.Errorf("unknown prompt template %q", name)
	}
	return t, nil
}

// Render fills template name of domain with data.
func (l *Library) Render(domain, name string, data any) (string, error) {
	m, ok := l.tmpl[domain]
	if !ok {
		return "", fmt.Errorf("unknown prompt domain %q (known: %s)", domain, strings.Join(Domains(), ", "))
	}
	t, ok := m[name]
	if !ok {
		return "", fmt.Errorf("unknown prompt template %q", name)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render prompt %s/%s: %w", domain, name, err)
	}
	return strings.TrimSpace(b.String()), nil
}

// CaptionInstruction returns the captioner instruction of a domain.
func (l *Library) CaptionInstruction(domain string) (string, error) {
	t, err := l.Text(domain, Caption)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(t), nil
}

// Hash returns a short content hash of a template (for cache keys: the
// gallery keys captions by captioner model and caption prompt hash).
func Hash(text string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(text)))
	return hex.EncodeToString(s[:])[:16]
}

// WriteDir copies every template (after overrides) into dir as
// <dir>/<domain>/<name>.txt, plus SOURCES.txt saying where each came from.
// Run folders keep the prompts a run used this way.
func (l *Library) WriteDir(dir string) error {
	var src strings.Builder
	domains := make([]string, 0, len(l.text))
	for d := range l.text {
		domains = append(domains, d)
	}
	sort.Strings(domains)
	for _, d := range domains {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("write prompts: %w", err)
		}
		for _, n := range names {
			p := filepath.Join(dir, d, n+".txt")
			if err := os.WriteFile(p, []byte(l.text[d][n]), 0o644); err != nil {
				return fmt.Errorf("write prompt %s: %w", p, err)
			}
			fmt.Fprintf(&src, "%s/%s.txt\t%s\t%s\n", d, n, l.source[d][n], Hash(l.text[d][n]))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "SOURCES.txt"), []byte(src.String()), 0o644); err != nil {
		return fmt.Errorf("write prompts: %w", err)
	}
	return nil
}
