package pipeline

import (
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/prompt"
)

// Reading the reasoner's and the proposer's replies. Replies are read with
// prompt.FindObject (the tolerant JSON reader) and then interpreted the
// way the method means them, accepting the shapes instruction-tuned models
// write besides the asked-for one. docs/trace.md lists the rules.

// ParseReasoning reads a stage-1 reasoner reply. It returns the atomic
// instructions and the descriptions, and the fallback taken ("" if none):
// no object with step1 or step2 gives step1 = [["Modification",
// instruction]] and step2 = [refCaption]; a missing or empty step2 gives
// [refCaption].
func ParseReasoning(reply, instruction, refCaption string) (atomic []Atomic, descriptions []string, fallback string) {
	f, err := prompt.FindObject(reply, "step1", "step2")
	if err != nil {
		return []Atomic{{Type: "Modification", Content: instruction}}, []string{refCaption}, FallbackUnparseable
	}
	s1, _ := f.Object.Get("step1")
	s2, _ := f.Object.Get("step2")
	atomic = readAtomics(s1)
	descriptions = readStrings(s2)
	if len(descriptions) == 0 {
		return atomic, []string{refCaption}, FallbackNoDescriptions
	}
	return atomic, descriptions, ""
}

// ParsePropositions reads a proposer reply: step1 statements and step2
// yes/no questions with the expected answer. A question without a
// readable expected answer (null, "maybe") is dropped: it could never
// agree with a yes/no answer. ok is false when no object with step1 or
// step2 was found.
func ParsePropositions(reply string) (statements []string, props []Proposition, ok bool) {
	f, err := prompt.FindObject(reply, "step1", "step2")
	if err != nil {
		return nil, nil, false
	}
	s1, _ := f.Object.Get("step1")
	s2, _ := f.Object.Get("step2")
	return readStrings(s1), readPropositions(s2), true
}

// atomicType maps a type as models write it ("addition", "ADD",
// "Removed", "Change:") to its canonical name; ok is false for a type
// that is none of the five.
func atomicType(s string) (string, bool) {
	t := strings.ToLower(strings.Trim(strings.TrimSpace(s), " \t:.-*_`'\"()[]"))
	if t == "" {
		return "", false
	}
	for _, c := range []struct{ canon, prefix string }{
		{"Addition", "add"}, {"Removal", "remov"}, {"Removal", "delet"}, {"Removal", "exclu"},
		{"Modification", "modif"}, {"Modification", "chang"}, {"Modification", "replac"}, {"Modification", "alter"},
		{"Comparison", "compar"}, {"Retention", "retain"}, {"Retention", "retention"}, {"Retention", "keep"}, {"Retention", "preserv"},
	} {
		if strings.HasPrefix(t, c.prefix) && !strings.Contains(t, " ") {
			return c.canon, true
		}
	}
	return "", false
}

// readAtomics reads step1 of the reasoner: a list of [TYPE, content]
// pairs, and also items written as {"type": .., "content": ..} objects,
// as {"Addition": "a dog"}, as lists of three or more ([n, TYPE, content],
// [TYPE, what, how]), as "Addition: a dog" strings, or the whole list
// wrapped under an outer key. Known types are canonicalised; a pair with
// another type keeps it as written (the proposer still sees it), and
// scalar contents are read as text (["Modification", 3] -> "3").
func readAtomics(v any) []Atomic {
	out := []Atomic{}
	switch t := v.(type) {
	case []any:
		for _, it := range t {
			out = append(out, readAtomic(it)...)
		}
	case prompt.Object:
		if a, ok := atomicFromObject(t); ok {
			return append(out, a)
		}
		if l, ok := onlyList(t); ok {
			return readAtomics(l)
		}
		for _, m := range t {
			if typ, ok := atomicType(m.Key); ok {
				if c := prompt.Text(m.Value); c != "" {
					out = append(out, Atomic{Type: typ, Content: c})
				}
				continue
			}
			out = append(out, readAtomic(m.Value)...)
		}
	case string:
		if a, ok := atomicFromString(t); ok {
			out = append(out, a)
		}
	}
	return out
}

func readAtomic(it any) []Atomic {
	switch t := it.(type) {
	case []any:
		if a, ok := atomicFromList(t); ok {
			return []Atomic{a}
		}
	case prompt.Object:
		if a, ok := atomicFromObject(t); ok {
			return []Atomic{a}
		}
		var out []Atomic
		for _, m := range t {
			if typ, ok := atomicType(m.Key); ok {
				if c := prompt.Text(m.Value); c != "" {
					out = append(out, Atomic{Type: typ, Content: c})
				}
			}
		}
		return out
	case string:
		if a, ok := atomicFromString(t); ok {
			return []Atomic{a}
		}
	}
	return nil
}

func atomicFromList(l []any) (Atomic, bool) {
	if len(l) == 1 {
		if s, ok := l[0].(string); ok {
			return atomicFromString(s)
		}
		return Atomic{}, false
	}
	if len(l) == 2 {
		a, b := prompt.Text(l[0]), prompt.Text(l[1])
		if _, aKnown := atomicType(a); !aKnown {
			if _, bKnown := atomicType(b); bKnown {
				a, b = b, a // [content, TYPE]
			}
		}
		if a == "" || b == "" {
			return Atomic{}, false
		}
		if canon, ok := atomicType(a); ok {
			a = canon
		}
		return Atomic{Type: a, Content: b}, true
	}
	for k, e := range l {
		canon, ok := atomicType(prompt.Text(e))
		if !ok {
			continue
		}
		var parts []string
		for _, r := range l[k+1:] {
			if s := prompt.Text(r); s != "" {
				parts = append(parts, s)
			}
		}
		if len(parts) == 0 {
			return Atomic{}, false
		}
		return Atomic{Type: canon, Content: strings.Join(parts, ": ")}, true
	}
	return Atomic{}, false
}

var (
	typeKeys    = []string{"type", "kind", "category", "instruction_type", "operation", "action"}
	contentKeys = []string{"content", "instruction", "text", "description", "value", "detail", "details", "target"}
)

func firstText(o prompt.Object, keys []string) string {
	for _, k := range keys {
		if v, ok := o.Get(k); ok {
			if s := prompt.Text(v); s != "" {
				return s
			}
		}
	}
	return ""
}

func atomicFromObject(o prompt.Object) (Atomic, bool) {
	typ, content := firstText(o, typeKeys), firstText(o, contentKeys)
	if typ == "" || content == "" {
		if len(o) == 1 {
			if canon, ok := atomicType(o[0].Key); ok {
				if c := prompt.Text(o[0].Value); c != "" {
					return Atomic{Type: canon, Content: c}, true
				}
			}
		}
		return Atomic{}, false
	}
	if canon, ok := atomicType(typ); ok {
		typ = canon
	}
	return Atomic{Type: typ, Content: content}, true
}

// atomicFromString reads "Addition: a dog", "(1) Removal - the hat".
func atomicFromString(s string) (Atomic, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimLeft(s, "0123456789().-*• \t")
	for _, sep := range []string{":", " - ", " – "} {
		if i := strings.Index(s, sep); i > 0 {
			if canon, ok := atomicType(s[:i]); ok {
				if c := strings.TrimSpace(s[i+len(sep):]); c != "" {
					return Atomic{Type: canon, Content: c}, true
				}
			}
		}
	}
	return Atomic{}, false
}

// onlyList returns the list value of an object that has exactly one
// list-valued member ({"instructions": [...]}).
func onlyList(o prompt.Object) ([]any, bool) {
	var found []any
	n := 0
	for _, m := range o {
		if l, ok := m.Value.([]any); ok {
			found, n = l, n+1
		}
	}
	return found, n == 1
}

var descriptionKeys = []string{"description", "text", "content", "caption", "target", "value"}

// readStrings reads a list of texts (step2 descriptions, step1
// statements): a list, a single string, objects carrying the text, or the
// list wrapped under an outer key. Blank entries are dropped.
func readStrings(v any) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	switch t := v.(type) {
	case string, prompt.Number:
		add(prompt.Text(t))
	case []any:
		for _, it := range t {
			switch e := it.(type) {
			case string, prompt.Number:
				add(prompt.Text(e))
			case prompt.Object:
				s := firstText(e, descriptionKeys)
				if s == "" {
					for _, m := range e {
						if s = prompt.Text(m.Value); s != "" {
							break
						}
					}
				}
				add(s)
			}
		}
	case prompt.Object:
		if l, ok := onlyList(t); ok {
			return readStrings(l)
		}
		for _, m := range t {
			if s, ok := m.Value.(string); ok {
				add(s)
			}
		}
	}
	return out
}

var (
	questionKeys = []string{"question", "q", "query", "text"}
	answerKeys   = []string{"answer", "expected", "expected_answer", "truth", "label", "value", "a"}
)

// readPropositions reads step2 of the proposer: [question, answer] pairs,
// and also {"question": .., "answer": ..} objects, lists of three or more
// ([statement, question, answer]), {"question": answer} objects, or the
// list wrapped under an outer key.
func readPropositions(v any) []Proposition {
	var out []Proposition
	switch t := v.(type) {
	case []any:
		for _, it := range t {
			if p, ok := readProposition(it); ok {
				out = append(out, p)
			}
		}
	case prompt.Object:
		if p, ok := readProposition(t); ok {
			return []Proposition{p}
		}
		if l, ok := onlyList(t); ok {
			return readPropositions(l)
		}
		for _, m := range t {
			q := strings.TrimSpace(m.Key)
			if exp, ok := truthValue(m.Value); ok && q != "" {
				out = append(out, Proposition{Question: q, Expected: exp})
			}
		}
	}
	return out
}

func readProposition(it any) (Proposition, bool) {
	switch t := it.(type) {
	case []any:
		if len(t) < 2 {
			return Proposition{}, false
		}
		if len(t) == 2 {
			q := prompt.Text(t[0])
			exp, ok := truthValue(t[1])
			if _, isStr := t[0].(string); !isStr || q == "" || !ok {
				return Proposition{}, false
			}
			return Proposition{Question: q, Expected: exp}, true
		}
		// Longer lists: the last truth value is the answer; the question is
		// the text before it that asks something, else the one just before.
		for a := len(t) - 1; a >= 1; a-- {
			exp, ok := truthValue(t[a])
			if !ok {
				continue
			}
			q := ""
			for i := a - 1; i >= 0; i-- {
				if s, isStr := t[i].(string); isStr && strings.Contains(s, "?") {
					q = strings.TrimSpace(s)
					break
				}
			}
			if q == "" {
				if s, isStr := t[a-1].(string); isStr {
					q = strings.TrimSpace(s)
				}
			}
			if q == "" {
				return Proposition{}, false
			}
			return Proposition{Question: q, Expected: exp}, true
		}
	case prompt.Object:
		q := firstText(t, questionKeys)
		if q == "" {
			return Proposition{}, false
		}
		for _, k := range answerKeys {
			if v, ok := t.Get(k); ok {
				if exp, ok := truthValue(v); ok {
					return Proposition{Question: q, Expected: exp}, true
				}
			}
		}
	}
	return Proposition{}, false
}

// truthValue reads an expected answer: true/false (JSON or Python),
// "True"/"False", "Yes"/"No" (any case, trailing punctuation, or first
// word of a longer answer: "Yes, it is"), 1/0. ok is false for null and
// anything else.
func truthValue(v any) (bool, bool) {
	switch t := v.(type) {
	case bool:
		return t, true
	case prompt.Number:
		switch f, _ := strconv.ParseFloat(string(t), 64); f {
		case 1:
			return true, true
		case 0:
			return false, true
		}
	case string:
		s := strings.ToLower(strings.TrimSpace(t))
		if i := strings.IndexFunc(s, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }); i >= 0 {
			s = s[:i]
		}
		switch s {
		case "true", "yes", "y", "1":
			return true, true
		case "false", "no", "n", "0":
			return false, true
		}
	}
	return false, false
}
