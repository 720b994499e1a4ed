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
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
// reference image (the reference layout's is ReferenceBlank).
const BlankReference = "a blank image"

// ReferenceBlank is the text the reference implementation uses for a
// missing reference image; a library in the reference layout uses it.
const ReferenceBlank = "A blank image."

// Layouts of a prompt folder.
const (
	// LayoutTemplates is imagescope's: <domain>/<name>.txt Go templates.
	LayoutTemplates = "templates"
	// LayoutReference is the reference implementation's: one folder per
	// dataset holding prompt1_stage1_reasoner.txt,
	// prompt2_stage2_reasoner.txt, prompt3_stage3_evaluator.txt and
	// caption.txt, with [[INSTRUCTION]], [[REF_IMAGE_DESC]] and
	// [[ATOMIC_INST]] placeholders. It has no verifier prompt: ours is used.
	LayoutReference = "reference"
)

// ReferenceDatasets are the dataset folder names of the reference layout.
var referenceDatasets = []string{"CIRR", "CIRCO", "FashionIQ-dress", "FashionIQ-shirt", "FashionIQ-toptee", "Flickr30K", "MSCOCO", "VisDial"}

// referenceFiles maps template names to the reference layout's file names.
var referenceFiles = map[string]string{
	Reason:   "prompt1_stage1_reasoner.txt",
	Propose:  "prompt2_stage2_reasoner.txt",
	Evaluate: "prompt3_stage3_evaluator.txt",
	Caption:  "caption.txt",
}

// Placeholders of the reference layout.
const (
	PlaceholderInstruction = "[[INSTRUCTION]]"
	PlaceholderReference   = "[[REF_IMAGE_DESC]]"
	PlaceholderAtomic      = "[[ATOMIC_INST]]"
)

var placeholderRE = regexp.MustCompile(`\[\[[A-Za-z0-9_]+\]\]`)

// Atomic is one atomic instruction as the proposer prompt lists it.
type Atomic struct{ Type, Content string }

// Fields are what a prompt is filled with.
type Fields struct {
	// Instruction is the query text (for the evaluator: as prepared by
	// the pipeline).
	Instruction string
	// Reference is the reference caption, or for chat rounds the carried
	// description.
	Reference string
	// Atomic are the atomic instructions from stage 1.
	Atomic []Atomic
	// Question is the verifier's yes/no question.
	Question string
	// Dialogue, Candidates and Count fill the questioner's prompt (ask):
	// the conversation so far, the current candidates' captions, and how
	// many questions to propose.
	Dialogue, Candidates string
	Count                int
}

// templateData is what our Go templates see: {{.Instruction}},
// {{.Reference}}, {{.Atomic}} (the numbered list), {{.Question}},
// {{.Dialogue}}, {{.Candidates}}, {{.Count}}.
type templateData struct {
	Instruction, Reference, Atomic, Question string
	Dialogue, Candidates                     string
	Count                                    int
}

// NumberedAtomic renders atomic instructions as our proposer template
// shows them: "(1) Type: content", one per line.
func NumberedAtomic(as []Atomic) string {
	var b strings.Builder
	for i, a := range as {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "(%d) %s: %s", i+1, a.Type, a.Content)
	}
	return b.String()
}

// referenceAtomic renders atomic instructions the way the reference
// implementation fills [[ATOMIC_INST]]: a newline, then one indented
// "(i) Type: content" line each.
func referenceAtomic(as []Atomic) string {
	var b strings.Builder
	b.WriteByte('\n')
	for i, a := range as {
		fmt.Fprintf(&b, "   (%d) %s: %s\n", i+1, a.Type, a.Content)
	}
	return b.String()
}

// Library is the full set of templates for every domain.
type Library struct {
	layout string
	// text[domain][name] is the template source after overrides.
	text map[string]map[string]string
	// source[domain][name] says where the text came from ("embedded" or a path).
	source map[string]map[string]string
	tmpl   map[string]map[string]*template.Template
	// ref[dataset][name] are the reference layout's texts (not Verify),
	// keyed by the dataset's name as referenceDatasets spells it.
	ref map[string]map[string]string
}

// Load returns the prompts of overrideDir ("" means the embedded ones).
//
// A folder in the reference layout (LayoutReference: per-dataset folders
// such as CIRR/ holding prompt1_stage1_reasoner.txt, ...) is detected and
// read as such: each dataset folder found gives a domain named after the
// dataset (see DatasetDomain); the verifier prompt, which that layout
// lacks, is ours (<dir>/<Dataset>/verify.txt or <dir>/verify.txt override
// it). Our own domains stay available beside them.
//
// Otherwise files in overrideDir replace their embedded counterparts.
// Override lookup for template NAME in DOMAIN: <dir>/<domain>/<name>.txt,
// then <dir>/shared/<name>.txt, then <dir>/<name>.txt.
func Load(overrideDir string) (*Library, error) {
	lib := &Library{
		layout: LayoutTemplates,
		text:   map[string]map[string]string{},
		source: map[string]map[string]string{},
		tmpl:   map[string]map[string]*template.Template{},
	}
	var refDirs map[string]string
	if overrideDir != "" {
		st, err := os.Stat(overrideDir)
		if err != nil {
			return nil, fmt.Errorf("prompt directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("prompt directory %s: not a directory", overrideDir)
		}
		if refDirs, err = referenceLayout(overrideDir); err != nil {
			return nil, err
		}
	}
	ourDir := overrideDir
	if refDirs != nil {
		lib.layout, ourDir = LayoutReference, ""
	}
	for _, d := range Domains() {
		for _, n := range names {
			txt, src, err := lookup(ourDir, d, n)
			if err != nil {
				return nil, err
			}
			if err := lib.addTemplate(d, n, txt, src); err != nil {
				return nil, err
			}
		}
	}
	if refDirs == nil {
		return lib, nil
	}
	lib.ref = map[string]map[string]string{}
	for ds, folder := range refDirs {
		lib.ref[ds] = map[string]string{}
		for _, n := range names {
			if _, ok := referenceFiles[n]; !ok {
				// Verify (and the chat questioner's ask): ours.
				txt, src, err := lookup(overrideDir, folder, n)
				if err != nil {
					return nil, err
				}
				if err := lib.addTemplate(ds, n, txt, src); err != nil {
					return nil, err
				}
				continue
			}
			p := filepath.Join(overrideDir, folder, referenceFiles[n])
			b, err := os.ReadFile(p)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("prompt directory %s (reference layout): %s has no %s; each dataset folder needs %s", overrideDir, folder, referenceFiles[n], referenceFileList())
				}
				return nil, fmt.Errorf("read prompt %s: %w", p, err)
			}
			for _, ph := range placeholderRE.FindAllString(string(b), -1) {
				if ph != PlaceholderInstruction && ph != PlaceholderReference && ph != PlaceholderAtomic {
					return nil, fmt.Errorf("prompt %s: unknown placeholder %s (known: %s, %s, %s)", p, ph, PlaceholderInstruction, PlaceholderReference, PlaceholderAtomic)
				}
			}
			if lib.text[ds] == nil {
				lib.text[ds], lib.source[ds] = map[string]string{}, map[string]string{}
			}
			lib.ref[ds][n] = string(b)
			lib.text[ds][n] = string(b)
			lib.source[ds][n] = p
		}
	}
	return lib, nil
}

func referenceFileList() string {
	return strings.Join([]string{referenceFiles[Reason], referenceFiles[Propose], referenceFiles[Evaluate], referenceFiles[Caption]}, ", ")
}

// referenceLayout finds the dataset folders of the reference layout in dir
// (dataset name -> folder name); nil when dir is not in that layout.
func referenceLayout(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("prompt directory: %w", err)
	}
	// caption.txt is a file name of both layouts: the three stage files
	// are what tells the reference layout.
	stageFiles := []string{referenceFiles[Reason], referenceFiles[Propose], referenceFiles[Evaluate]}
	var found map[string]string
	for _, e := range ents {
		if !e.IsDir() {
			if slices.Contains(stageFiles, e.Name()) {
				return nil, fmt.Errorf("prompt directory %s holds %s itself: in the reference layout it sits in a folder per dataset (%s); pass the folder above", dir, e.Name(), strings.Join(referenceDatasets, ", "))
			}
			continue
		}
		for _, ds := range referenceDatasets {
			if !strings.EqualFold(e.Name(), ds) {
				continue
			}
			for _, f := range stageFiles {
				if _, err := os.Stat(filepath.Join(dir, e.Name(), f)); err == nil {
					if found == nil {
						found = map[string]string{}
					}
					found[ds] = e.Name()
					break
				}
			}
		}
	}
	return found, nil
}

func (l *Library) addTemplate(domain, name, txt, src string) error {
	t, err := template.New(domain + "/" + name).Option("missingkey=error").Parse(txt)
	if err != nil {
		return fmt.Errorf("parse prompt template %s (%s): %w", name, src, err)
	}
	// Fail now, not in the middle of a run, on a field that does not exist.
	if err := t.Execute(io.Discard, templateData{}); err != nil {
		return fmt.Errorf("prompt template %s (%s): %w", name, src, err)
	}
	if l.text[domain] == nil {
		l.text[domain], l.source[domain], l.tmpl[domain] = map[string]string{}, map[string]string{}, map[string]*template.Template{}
	}
	if l.tmpl[domain] == nil {
		l.tmpl[domain] = map[string]*template.Template{}
	}
	l.text[domain][name] = txt
	l.source[domain][name] = src
	l.tmpl[domain][name] = t
	return nil
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

// Layout returns LayoutTemplates or LayoutReference.
func (l *Library) Layout() string { return l.layout }

// DatasetDomain returns the domain a benchmark's queries use: in the
// reference layout the dataset's own folder (an error when the folder
// lacks it), otherwise domain itself.
func (l *Library) DatasetDomain(dataset, domain string) (string, error) {
	if l.layout != LayoutReference {
		return domain, nil
	}
	for ds := range l.ref {
		if strings.EqualFold(ds, dataset) {
			return ds, nil
		}
	}
	have := slices.Sorted(maps.Keys(l.ref))
	return "", fmt.Errorf("the prompts folder (reference layout) has no %s folder (it has %s)", dataset, strings.Join(have, ", "))
}

// HasDomain reports whether domain is known.
func (l *Library) HasDomain(domain string) bool { _, ok := l.text[domain]; return ok }

// DomainNames lists the library's domains: ours, then the reference
// layout's datasets.
func (l *Library) DomainNames() []string {
	return append(Domains(), slices.Sorted(maps.Keys(l.ref))...)
}

// BlankReference returns the text standing for a missing reference image
// in domain.
func (l *Library) BlankReference(domain string) string {
	if _, ok := l.ref[domain]; ok {
		return ReferenceBlank
	}
	return BlankReference
}

// Text returns the template source of name in domain.
func (l *Library) Text(domain, name string) (string, error) {
	m, ok := l.text[domain]
	if !ok {
		return "", fmt.Errorf("unknown prompt domain %q (known: %s)", domain, strings.Join(l.DomainNames(), ", "))
	}
	t, ok := m[name]
	if !ok {
		return "", fmt.Errorf("unknown prompt template %q", name)
	}
	return t, nil
}

// Render fills template name of domain. Our templates are Go templates
// (the result is trimmed); the reference layout's files get their
// placeholders replaced, in the reference implementation's order, and
// nothing else changes: [[INSTRUCTION]] by the instruction,
// [[REF_IMAGE_DESC]] by the reference description (trimmed),
// [[ATOMIC_INST]] by the numbered atomic instructions.
func (l *Library) Render(domain, name string, f Fields) (string, error) {
	if _, isRef := referenceFiles[name]; isRef && l.ref[domain] != nil {
		r := l.ref[domain]
		t, ok := r[name]
		if !ok {
			return "", fmt.Errorf("unknown prompt template %q", name)
		}
		t = strings.ReplaceAll(t, PlaceholderInstruction, f.Instruction)
		switch name {
		case Reason:
			t = strings.ReplaceAll(t, PlaceholderReference, strings.TrimSpace(f.Reference))
		case Propose:
			t = strings.ReplaceAll(t, PlaceholderAtomic, referenceAtomic(f.Atomic))
		}
		return t, nil
	}
	m, ok := l.tmpl[domain]
	if !ok {
		return "", fmt.Errorf("unknown prompt domain %q (known: %s)", domain, strings.Join(l.DomainNames(), ", "))
	}
	t, ok := m[name]
	if !ok {
		return "", fmt.Errorf("unknown prompt template %q", name)
	}
	var b bytes.Buffer
	data := templateData{Instruction: f.Instruction, Reference: f.Reference, Atomic: NumberedAtomic(f.Atomic), Question: f.Question,
		Dialogue: f.Dialogue, Candidates: f.Candidates, Count: f.Count}
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render prompt %s/%s: %w", domain, name, err)
	}
	return strings.TrimSpace(b.String()), nil
}

// CaptionInstruction returns the captioner instruction of a domain (the
// reference layout's caption.txt exactly as written).
func (l *Library) CaptionInstruction(domain string) (string, error) {
	t, err := l.Text(domain, Caption)
	if err != nil {
		return "", err
	}
	if _, ok := l.ref[domain]; ok {
		return t, nil
	}
	return strings.TrimSpace(t), nil
}

// Hash returns a short content hash of a template (for cache keys: the
// gallery keys captions by captioner model and caption prompt hash).
func Hash(text string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(text)))
	return hex.EncodeToString(s[:])[:16]
}

// WriteDir copies the prompts into dir, plus SOURCES.txt saying where each
// came from and its hash. Our layout: every template (after overrides) as
// <dir>/<domain>/<name>.txt. The reference layout: each dataset folder's
// four files as they were, beside our prompts used with them
// (<dir>/<Dataset>/verify.txt, ask.txt); Load reads such a folder back the
// same.
// Run folders keep the prompts a run used this way.
func (l *Library) WriteDir(dir string) error {
	var src strings.Builder
	type file struct{ rel, text, source string }
	var files []file
	if l.layout == LayoutReference {
		fmt.Fprintf(&src, "# layout: %s (per-dataset folders, [[...]] placeholders); verify.txt, ask.txt: imagescope's prompts used with them\n", LayoutReference)
		for _, d := range slices.Sorted(maps.Keys(l.ref)) {
			for _, n := range []string{Reason, Propose, Evaluate, Caption} {
				files = append(files, file{d + "/" + referenceFiles[n], l.ref[d][n], l.source[d][n]})
			}
			for _, n := range names {
				if _, isRef := referenceFiles[n]; !isRef {
					files = append(files, file{d + "/" + n + ".txt", l.text[d][n], l.source[d][n]})
				}
			}
		}
	} else {
		for _, d := range slices.Sorted(maps.Keys(l.text)) {
			for _, n := range names {
				files = append(files, file{d + "/" + n + ".txt", l.text[d][n], l.source[d][n]})
			}
		}
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write prompts: %w", err)
		}
		if err := os.WriteFile(p, []byte(f.text), 0o644); err != nil {
			return fmt.Errorf("write prompt %s: %w", p, err)
		}
		fmt.Fprintf(&src, "%s\t%s\t%s\n", f.rel, f.source, Hash(f.text))
	}
	if err := os.WriteFile(filepath.Join(dir, "SOURCES.txt"), []byte(src.String()), 0o644); err != nil {
		return fmt.Errorf("write prompts: %w", err)
	}
	return nil
}
