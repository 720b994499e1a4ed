package prompt

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrNoJSON means a reply held no decodable JSON object.
var ErrNoJSON = errors.New("no JSON object found in reply")

var fenced = regexp.MustCompile("(?is)```\\s*json\\s*\\n?(.*?)```")

// Extraction says how a JSON object was obtained from a reply.
type Extraction struct {
	// From is "fenced" (a ```json block), "span" (the first {...} span)
	// or "" when nothing was found.
	From string `json:"from"`
	// Repaired is true when the text had to be repaired before decoding.
	Repaired bool `json:"repaired"`
}

// ExtractJSON finds the JSON object in a model reply and decodes it into v.
// It takes the first fenced block marked json; otherwise the first {...}
// span (the shortest one that decodes, starting at the first '{'). Common
// damage (trailing commas, single-quoted strings, Python literals,
// unclosed strings and brackets) is repaired before decoding.
func ExtractJSON(reply string, v any) (Extraction, error) {
	text, ex, err := FindJSON(reply)
	if err != nil {
		return ex, err
	}
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return ex, fmt.Errorf("decode JSON object from reply: %w", err)
	}
	return ex, nil
}

// isObject reports whether s is one valid JSON object.
func isObject(s string) bool {
	s = strings.TrimSpace(s)
	return strings.HasPrefix(s, "{") && json.Valid([]byte(s))
}

// FindJSON returns the text of the JSON object in a reply (repaired where
// needed), following the rules of ExtractJSON.
func FindJSON(reply string) (string, Extraction, error) {
	if m := fenced.FindStringSubmatch(reply); m != nil {
		body := strings.TrimSpace(m[1])
		if i := strings.IndexAny(body, "{["); i >= 0 {
			body = body[i:]
		}
		if t := body; isObject(t) {
			return t, Extraction{From: "fenced"}, nil
		}
		if t := Repair(body); isObject(t) {
			return t, Extraction{From: "fenced", Repaired: true}, nil
		}
	} else if i := strings.Index(strings.ToLower(reply), "```json"); i >= 0 {
		// An unterminated fence (the reply was cut off): decode what follows.
		body := reply[i+len("```json"):]
		if j := strings.Index(body, "{"); j >= 0 {
			if t := Repair(body[j:]); isObject(t) {
				return t, Extraction{From: "fenced", Repaired: true}, nil
			}
		}
	}
	start := strings.Index(reply, "{")
	if start < 0 {
		return "", Extraction{}, ErrNoJSON
	}
	rest := reply[start:]
	// The shortest span that decodes as it is; failing that, the shortest
	// one that decodes after repair.
	for _, repair := range []bool{false, true} {
		for j := 0; j < len(rest); j++ {
			if rest[j] != '}' {
				continue
			}
			span := rest[:j+1]
			if repair {
				span = Repair(span)
			}
			if t := span; isObject(t) {
				return t, Extraction{From: "span", Repaired: repair}, nil
			}
		}
	}
	// No closing brace gives a decodable object: the reply may be cut off.
	if t := Repair(rest); isObject(t) {
		return t, Extraction{From: "span", Repaired: true}, nil
	}
	return "", Extraction{}, ErrNoJSON
}

// Repair rewrites almost-JSON into JSON: single-quoted strings become
// double-quoted, bare True/False/None become true/false/null, trailing
// commas before a closing bracket are dropped, and an unclosed string and
// unclosed brackets are closed at the end.
func Repair(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	var stack []byte
	inStr := false
	var quote byte
	n := len(s)
	for i := 0; i < n; i++ {
		c := s[i]
		if inStr {
			switch {
			case c == '\\' && i+1 < n:
				if quote == '\'' && s[i+1] == '\'' {
					b.WriteByte('\'')
				} else {
					b.WriteByte(c)
					b.WriteByte(s[i+1])
				}
				i++
			case c == quote:
				// A single quote inside a word (don't, it's) is an apostrophe,
				// not the end of a single-quoted string.
				if quote == '\'' && i+1 < n && isWordByte(s[i+1]) && i > 0 && isWordByte(s[i-1]) {
					b.WriteByte('\'')
					continue
				}
				b.WriteByte('"')
				inStr = false
			case c == '"' && quote == '\'':
				b.WriteString(`\"`)
			case c == '\n':
				b.WriteString(`\n`)
			case c == '\t':
				b.WriteString(`\t`)
			case c == '\r':
			default:
				b.WriteByte(c)
			}
			continue
		}
		switch c {
		case '"', '\'':
			inStr, quote = true, c
			b.WriteByte('"')
		case '{', '[':
			stack = append(stack, c)
			b.WriteByte(c)
		case '}', ']':
			trimTrailingComma(&b)
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			b.WriteByte(c)
		default:
			if lit, ok := pyLiteral(s[i:]); ok && (i == 0 || !isWordByte(s[i-1])) {
				b.WriteString(lit.json)
				i += len(lit.py) - 1
				continue
			}
			b.WriteByte(c)
		}
	}
	if inStr {
		b.WriteByte('"')
	}
	for len(stack) > 0 {
		trimTrailingComma(&b)
		if stack[len(stack)-1] == '{' {
			// An object cut after a key or a colon cannot be closed validly;
			// drop the dangling part.
			trimDanglingKey(&b)
			b.WriteByte('}')
		} else {
			b.WriteByte(']')
		}
		stack = stack[:len(stack)-1]
	}
	return b.String()
}

type literal struct{ py, json string }

func pyLiteral(s string) (literal, bool) {
	for _, l := range []literal{{"True", "true"}, {"False", "false"}, {"None", "null"}} {
		if strings.HasPrefix(s, l.py) && (len(s) == len(l.py) || !isWordByte(s[len(l.py)])) {
			return l, true
		}
	}
	return literal{}, false
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// trimTrailingComma removes a comma (and the blanks after it) at the end of b.
func trimTrailingComma(b *strings.Builder) {
	s := b.String()
	t := strings.TrimRight(s, " \t\r\n")
	if strings.HasSuffix(t, ",") {
		t = t[:len(t)-1]
		b.Reset()
		b.WriteString(t)
	}
}

// trimDanglingKey removes a trailing `"key"` or `"key":` left without a value.
func trimDanglingKey(b *strings.Builder) {
	s := strings.TrimRight(b.String(), " \t\r\n")
	colon := strings.HasSuffix(s, ":")
	if colon {
		s = strings.TrimRight(s[:len(s)-1], " \t\r\n")
	}
	if !strings.HasSuffix(s, `"`) {
		return
	}
	// Find the opening quote of this trailing string and what precedes it.
	j := len(s) - 2
	for j >= 0 && !(s[j] == '"' && (j == 0 || s[j-1] != '\\')) {
		j--
	}
	if j < 0 {
		return
	}
	before := strings.TrimRight(s[:j], " \t\r\n")
	if !colon && !(strings.HasSuffix(before, "{") || strings.HasSuffix(before, ",")) {
		return // a value, not a key
	}
	if colon || strings.HasSuffix(before, "{") || strings.HasSuffix(before, ",") {
		before = strings.TrimSuffix(before, ",")
		b.Reset()
		b.WriteString(before)
	}
}
