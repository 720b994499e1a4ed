package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// FormatError reports malformed input: the file, where in it (line and/or
// record) and which field is wrong. Loaders and the ranking readers in
// package metrics return it (possibly wrapped).
type FormatError struct {
	File string
	// Line is the 1-based line in File (0 when not known).
	Line int
	// Record names the record: "record 3", "record 3 (pairid 101)",
	// "row 5", "query \"101\"" ("" when the whole file is wrong).
	Record string
	// Field is the field (JSON key or CSV column) at fault ("" if none).
	Field string
	Msg   string
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Record != "" {
		b.WriteString(": ")
		b.WriteString(e.Record)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// LineAt returns the 1-based line number of byte offset off in data.
func LineAt(data []byte, off int64) int {
	if off < 0 {
		return 0
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte{'\n'}) + 1
}

// JSONError turns an encoding/json error on data (read from file) into a
// FormatError carrying the line where decoding failed.
func JSONError(file string, data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &FormatError{File: file, Line: LineAt(data, se.Offset), Msg: "malformed JSON: " + se.Error()}
	case errors.As(err, &te):
		return &FormatError{File: file, Line: LineAt(data, te.Offset), Field: te.Field,
			Msg: fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
	case errors.Is(err, errTrailing):
		return &FormatError{File: file, Msg: "malformed JSON: data after the top-level value"}
	}
	return &FormatError{File: file, Msg: "malformed JSON: " + err.Error()}
}

var errTrailing = errors.New("trailing data")

// readFile reads a whole annotation file; a missing file is reported with
// its path.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: file not found: %w", path, err)
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// readJSONArray reads a file holding a JSON array and returns its elements
// with the line each starts on.
func readJSONArray(path string) ([]json.RawMessage, []int, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	return splitJSONArray(path, data)
}

func splitJSONArray(path string, data []byte) ([]json.RawMessage, []int, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, JSONError(path, data, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, nil, &FormatError{File: path, Line: LineAt(data, dec.InputOffset()), Msg: "want a JSON array at the top level, got " + tokenKind(tok)}
	}
	var items []json.RawMessage
	var lines []int
	for dec.More() {
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, JSONError(path, data, err)
		}
		items = append(items, raw)
		lines = append(lines, LineAt(data, start+int64(leadingSpace(data[start:]))))
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, JSONError(path, data, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, JSONError(path, data, errTrailing)
	}
	return items, lines, nil
}

// leadingSpace counts JSON whitespace and a separating comma at the start of b.
func leadingSpace(b []byte) int {
	n := 0
	for n < len(b) && (b[n] == ' ' || b[n] == '\t' || b[n] == '\n' || b[n] == '\r' || b[n] == ',') {
		n++
	}
	return n
}

func tokenKind(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return "a number"
	}
}

// Kind names the JSON type of a raw value ("string", "number", "object",
// "array", "boolean", "null").
func Kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// record gives typed, error-reporting access to the fields of one JSON
// object in an annotation file.
type record struct {
	file   string
	line   int
	index  int
	label  string // "pairid 101" once known
	prefix string // "img_set." for a nested object
	fields map[string]json.RawMessage
}

func newRecord(file string, index, line int, raw json.RawMessage) (*record, error) {
	r := &record{file: file, index: index, line: line}
	if Kind(raw) != "object" {
		return nil, r.errf("", "want a JSON object, got %s", Kind(raw))
	}
	if err := json.Unmarshal(raw, &r.fields); err != nil {
		return nil, r.errf("", "malformed object: %v", err)
	}
	return r, nil
}

func (r *record) name() string {
	if r.label != "" {
		return fmt.Sprintf("record %d (%s)", r.index, r.label)
	}
	return fmt.Sprintf("record %d", r.index)
}

func (r *record) errf(field, format string, a ...any) error {
	if field != "" {
		field = r.prefix + field
	}
	return &FormatError{File: r.file, Line: r.line, Record: r.name(), Field: field, Msg: fmt.Sprintf(format, a...)}
}

// get returns the raw value of field; null counts as absent.
func (r *record) get(field string) (json.RawMessage, bool) {
	v, ok := r.fields[field]
	if !ok || Kind(v) == "null" {
		return nil, false
	}
	return v, true
}

func (r *record) missing(field string) error { return r.errf(field, "missing") }

func (r *record) wrongType(field, want string, raw json.RawMessage) error {
	return r.errf(field, "want %s, got %s", want, Kind(raw))
}

// str reads a string field; ok is false when it is absent and not required.
func (r *record) str(field string, required bool) (string, bool, error) {
	raw, ok := r.get(field)
	if !ok {
		if required {
			return "", false, r.missing(field)
		}
		return "", false, nil
	}
	var s string
	if Kind(raw) != "string" || json.Unmarshal(raw, &s) != nil {
		return "", false, r.wrongType(field, "a string", raw)
	}
	return s, true, nil
}

// integer reads an integral JSON number field.
func (r *record) integer(field string, required bool) (int64, bool, error) {
	raw, ok := r.get(field)
	if !ok {
		if required {
			return 0, false, r.missing(field)
		}
		return 0, false, nil
	}
	n, err := parseInt(raw)
	if err != nil {
		return 0, false, r.wrongType(field, "an integer", raw)
	}
	return n, true, nil
}

func parseInt(raw json.RawMessage) (int64, error) {
	if Kind(raw) != "number" {
		return 0, errors.New("not a number")
	}
	s := string(bytes.TrimSpace(raw))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, errors.New("not an integer")
	}
	return int64(f), nil
}

// strList reads an array of strings.
func (r *record) strList(field string, required bool) ([]string, bool, error) {
	return readList(r, field, required, "an array of strings", "a string", func(raw json.RawMessage) (string, error) {
		var v string
		if Kind(raw) != "string" || json.Unmarshal(raw, &v) != nil {
			return "", errors.New("not a string")
		}
		return v, nil
	})
}

// intList reads an array of integers.
func (r *record) intList(field string, required bool) ([]int64, bool, error) {
	return readList(r, field, required, "an array of integers", "an integer", parseInt)
}

// readList reads an array field whose items parse reads; want and wantItem
// say in errors what the field and each item should be.
func readList[T any](r *record, field string, required bool, want, wantItem string, parse func(json.RawMessage) (T, error)) ([]T, bool, error) {
	raw, ok := r.get(field)
	if !ok {
		if required {
			return nil, false, r.missing(field)
		}
		return nil, false, nil
	}
	var items []json.RawMessage
	if Kind(raw) != "array" || json.Unmarshal(raw, &items) != nil {
		return nil, false, r.wrongType(field, want, raw)
	}
	out := make([]T, len(items))
	for i, it := range items {
		v, err := parse(it)
		if err != nil {
			return nil, false, r.errf(field, "item %d: want %s, got %s", i, wantItem, Kind(it))
		}
		out[i] = v
	}
	return out, true, nil
}

// object reads a nested object field as a record sharing this one's
// position (errors name the nested field as "outer.inner").
func (r *record) object(field string, required bool) (*record, bool, error) {
	raw, ok := r.get(field)
	if !ok {
		if required {
			return nil, false, r.missing(field)
		}
		return nil, false, nil
	}
	sub := &record{file: r.file, line: r.line, index: r.index, label: r.label, prefix: r.prefix + field + "."}
	if Kind(raw) != "object" || json.Unmarshal(raw, &sub.fields) != nil {
		return nil, false, r.wrongType(field, "an object", raw)
	}
	return sub, true, nil
}

// member is one key/value of a JSON object, in file order.
type member struct {
	key  string
	val  json.RawMessage
	line int
}

// splitJSONObject returns the members of a top-level JSON object in file
// order; a key given twice is an error.
func splitJSONObject(path string, data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, JSONError(path, data, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &FormatError{File: path, Line: LineAt(data, dec.InputOffset()), Msg: "want a JSON object at the top level, got " + tokenKind(tok)}
	}
	var out []member
	seen := map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, JSONError(path, data, err)
		}
		key, _ := tok.(string)
		line := LineAt(data, dec.InputOffset())
		if first, dup := seen[key]; dup {
			return nil, &FormatError{File: path, Line: line, Record: fmt.Sprintf("key %q", key), Msg: fmt.Sprintf("duplicate key (first on line %d)", first)}
		}
		seen[key] = line
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, JSONError(path, data, err)
		}
		out = append(out, member{key: key, val: raw, line: line})
	}
	if _, err := dec.Token(); err != nil {
		return nil, JSONError(path, data, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, JSONError(path, data, errTrailing)
	}
	return out, nil
}

// SplitJSONObject is splitJSONObject for other packages: the members of a
// top-level object in file order with their line numbers; duplicate keys
// are an error.
func SplitJSONObject(path string, data []byte) (keys []string, vals []json.RawMessage, lines []int, err error) {
	ms, err := splitJSONObject(path, data)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, m := range ms {
		keys = append(keys, m.key)
		vals = append(vals, m.val)
		lines = append(lines, m.line)
	}
	return keys, vals, lines, nil
}

// eachRecord reads the JSON array of objects at path and calls fn with
// each element as a record, in order, checking ctx every 1024 records.
func eachRecord(ctx context.Context, path string, fn func(i int, r *record) error) error {
	items, lines, err := readJSONArray(path)
	if err != nil {
		return err
	}
	for i, raw := range items {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		r, err := newRecord(path, i, lines[i], raw)
		if err != nil {
			return err
		}
		if err := fn(i, r); err != nil {
			return err
		}
	}
	return nil
}
