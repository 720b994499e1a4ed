package prompt

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrNoJSON means a reply held no JSON object with any of the expected keys.
var ErrNoJSON = errors.New("no JSON object with the expected keys found in reply")

// Object is a JSON object read from a model reply, members in the order
// the model wrote them.
type Object []Member

// Member is one key and its value. Values are Object, []any, string,
// Number, bool or nil.
type Member struct {
	Key   string
	Value any
}

// Number is a JSON number as the model wrote it ("3", "2.50").
type Number string

// Get returns the value of key, matched case-insensitively; the first
// member wins when a key is repeated.
func (o Object) Get(key string) (any, bool) {
	for _, m := range o {
		if strings.EqualFold(strings.TrimSpace(m.Key), key) {
			return m.Value, true
		}
	}
	return nil, false
}

// Found is the object read from a reply and where it came from.
type Found struct {
	Object Object
	// From is "fenced" (a ``` block) or "span" (a {...} span in the text).
	From string
}

var fenceRE = regexp.MustCompile("(?s)```([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)(?:```|$)")

// FindObject reads the JSON object a model reply carries. Every ``` block
// (those marked json first) and every {...} span of the text is read with
// Parse, which repairs what models damage; the object holding the most of
// keys wins, the first one on a tie. Objects nested under an outer key
// ({"answer": {"step1": ...}}) count as well. ErrNoJSON means no object
// holds any of keys.
//
// This reads at least what the reference flow reads (the first ```json
// block, else the shortest {...} match, decoded with the json_repair
// library): the block it takes is a candidate here too, read whole where
// the shortest match would cut a nested object short, and a candidate
// with none of the keys (the empty object of a reply cut right after its
// opening brace, say) is not taken for an answer.
func FindObject(reply string, keys ...string) (Found, error) {
	var cands []Found
	var marked, other []string
	for _, m := range fenceRE.FindAllStringSubmatch(reply, -1) {
		if strings.EqualFold(m[1], "json") {
			marked = append(marked, m[2])
		} else {
			other = append(other, m[2])
		}
	}
	for _, body := range append(marked, other...) {
		for _, o := range objectsIn(body) {
			cands = append(cands, Found{Object: o, From: "fenced"})
		}
	}
	for _, o := range objectsIn(reply) {
		cands = append(cands, Found{Object: o, From: "span"})
	}
	best, bestScore := Found{}, 0
	for _, c := range cands {
		o, score := withKeys(c.Object, keys, 0)
		if score > bestScore {
			best, bestScore = Found{Object: o, From: c.From}, score
		}
	}
	if bestScore == 0 {
		return Found{}, ErrNoJSON
	}
	return best, nil
}

// withKeys returns the object (o itself or one nested in it) holding the
// most of keys, and how many it holds.
func withKeys(o Object, keys []string, depth int) (Object, int) {
	best, score := o, 0
	for _, k := range keys {
		if _, ok := o.Get(k); ok {
			score++
		}
	}
	if score > 0 || depth >= 3 {
		return best, score
	}
	for _, m := range o {
		if inner, ok := m.Value.(Object); ok {
			if io, s := withKeys(inner, keys, depth+1); s > score {
				best, score = io, s
			}
		}
	}
	return best, score
}

// objectsIn reads every top-level {...} span of text, in order.
func objectsIn(text string) []Object {
	var out []Object
	for i := 0; i < len(text); {
		j := strings.IndexByte(text[i:], '{')
		if j < 0 {
			break
		}
		p := &parser{s: text, i: i + j}
		v := p.value(0)
		if o, ok := v.(Object); ok && len(o) > 0 {
			out = append(out, o)
		}
		if p.i <= i+j {
			p.i = i + j + 1
		}
		i = p.i
	}
	return out
}

// Parse reads one JSON value from the start of s the way a forgiving reader
// should read what language models write: single-quoted strings (with
// apostrophes inside words), unquoted keys and bare words, Python
// True/False/None, # and // line comments and /* */ comments, trailing
// and missing commas, and strings and brackets left open by a reply that
// was cut off. It never fails; what cannot be read is skipped.
func Parse(s string) any {
	p := &parser{s: s}
	p.skip()
	return p.value(0)
}

type parser struct {
	s string
	i int
}

const maxDepth = 64

func (p *parser) eof() bool { return p.i >= len(p.s) }

// skip passes white space and comments.
func (p *parser) skip() {
	for !p.eof() {
		c := p.s[p.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			p.i++
		case c == '#' || c == '/' && p.i+1 < len(p.s) && p.s[p.i+1] == '/':
			if k := strings.IndexByte(p.s[p.i:], '\n'); k >= 0 {
				p.i += k + 1
			} else {
				p.i = len(p.s)
			}
		case c == '/' && p.i+1 < len(p.s) && p.s[p.i+1] == '*':
			if k := strings.Index(p.s[p.i+2:], "*/"); k >= 0 {
				p.i += k + 4
			} else {
				p.i = len(p.s)
			}
		default:
			return
		}
	}
}

func (p *parser) value(depth int) any {
	p.skip()
	if p.eof() {
		return nil
	}
	switch c := p.s[p.i]; {
	case c == '{':
		if depth >= maxDepth {
			return p.bare("")
		}
		return p.object(depth)
	case c == '[':
		if depth >= maxDepth {
			return p.bare("")
		}
		return p.array(depth)
	case c == '"' || c == '\'':
		return p.str(c)
	case strings.HasPrefix(p.s[p.i:], "“"):
		return p.curly()
	default:
		return p.bare("")
	}
}

func (p *parser) object(depth int) Object {
	p.i++ // {
	o := Object{}
	for {
		p.skip()
		if p.eof() {
			return o
		}
		switch p.s[p.i] {
		case '}':
			p.i++
			return o
		case ',', ':':
			p.i++
			continue
		case ']':
			p.i++ // a stray closer
			continue
		}
		var key string
		switch c := p.s[p.i]; {
		case c == '"' || c == '\'':
			key = p.str(c)
		case strings.HasPrefix(p.s[p.i:], "“"):
			key = p.curly()
		case c == '{' || c == '[':
			p.value(depth + 1) // a value without a key: dropped
			continue
		default:
			key = p.word(":,}\n")
		}
		p.skip()
		if p.eof() {
			return o // cut after a key: drop it
		}
		if p.s[p.i] == ':' || p.s[p.i] == '=' {
			p.i++
		} else if c := p.s[p.i]; c == ',' || c == '}' {
			continue // a key without a value: drop it
		}
		p.skip()
		if p.eof() {
			return o
		}
		if c := p.s[p.i]; c == ',' || c == '}' {
			continue
		}
		o = append(o, Member{Key: key, Value: p.value(depth + 1)})
	}
}

func (p *parser) array(depth int) []any {
	p.i++ // [
	a := []any{}
	for {
		p.skip()
		if p.eof() {
			return a
		}
		switch p.s[p.i] {
		case ']':
			p.i++
			return a
		case ',':
			p.i++
			continue
		case '}':
			return a // the enclosing object closes: so does this list
		}
		a = append(a, p.value(depth+1))
	}
}

// str reads a quoted string; the quote is p.s[p.i].
func (p *parser) str(q byte) string {
	p.i++
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		switch {
		case c == '\\' && p.i+1 < len(p.s):
			p.i += 2
			switch e := p.s[p.i-1]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'b', 'f':
			case 'u':
				if p.i+4 <= len(p.s) {
					if n, err := strconv.ParseUint(p.s[p.i:p.i+4], 16, 32); err == nil {
						b.WriteRune(rune(n))
						p.i += 4
						continue
					}
				}
				b.WriteByte('u')
			default:
				b.WriteByte(e)
			}
			continue
		case c == q:
			// A single quote between two letters is an apostrophe (don't).
			if q == '\'' && p.i > 0 && p.i+1 < len(p.s) && isWordByte(p.s[p.i-1]) && isWordByte(p.s[p.i+1]) {
				b.WriteByte(c)
				p.i++
				continue
			}
			// An unescaped double quote followed by more text on the same
			// line is part of the string ("a "big" dog").
			if q == '"' && !endsString(p.s[p.i+1:]) {
				b.WriteByte(c)
				p.i++
				continue
			}
			p.i++
			return b.String()
		}
		b.WriteByte(c)
		p.i++
	}
	return b.String() // cut off inside the string
}

// curly reads a string in typographic double quotes.
func (p *parser) curly() string {
	p.i += len("“")
	end := strings.Index(p.s[p.i:], "”")
	if end < 0 {
		s := p.s[p.i:]
		p.i = len(p.s)
		return s
	}
	s := p.s[p.i : p.i+end]
	p.i += end + len("”")
	return s
}

// word reads an unquoted token up to one of stops (or the end of the
// line), trimmed.
func (p *parser) word(stops string) string {
	start := p.i
	for !p.eof() && !strings.ContainsRune(stops, rune(p.s[p.i])) {
		p.i++
	}
	return strings.TrimSpace(p.s[start:p.i])
}

// bare reads an unquoted value: a number, a literal or a bare word.
func (p *parser) bare(extraStops string) any {
	w := p.word(",]}\n" + extraStops)
	if w == "" {
		if !p.eof() && !strings.ContainsRune(",]}\n", rune(p.s[p.i])) {
			_, n := utf8.DecodeRuneInString(p.s[p.i:])
			p.i += n // an unreadable character: skip it
		}
		return nil
	}
	switch w {
	case "true", "True", "TRUE":
		return true
	case "false", "False", "FALSE":
		return false
	case "null", "None", "NULL", "none", "nil":
		return nil
	}
	if _, err := strconv.ParseFloat(w, 64); err == nil && w[0] != '+' && !strings.ContainsAny(w, "xXnN_") {
		return Number(w)
	}
	return w
}

// endsString reports whether what follows a double quote makes it the end
// of a string: a delimiter, a comment, another string, a line break or the
// end of the text, after blanks.
func endsString(rest string) bool {
	if strings.HasPrefix(rest, `"`) {
		// Two quotes in a row: the first is inside the string when the
		// second ends it ("a sign saying "STOP"").
		return !endsString(rest[1:])
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; c {
		case ' ', '\t', '\r':
			continue
		case ',', ':', ']', '}', '"', '#', '/', '\n':
			return true
		default:
			return false
		}
	}
	return true
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// Text returns a scalar as text: strings as they are (trimmed), numbers
// as written, booleans as true/false. Lists, objects and null give "".
func Text(v any) string {
	switch t := v.(type) {
	case string:
		return strings.TrimSpace(t)
	case Number:
		return string(t)
	case bool:
		return strconv.FormatBool(t)
	}
	return ""
}
