package prompt

import (
	"errors"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"plain", `{"a": [1, "x", true, null]}`, Object{{"a", []any{Number("1"), "x", true, nil}}}},
		{"trailing commas", `{"a": [1, 2,], }`, Object{{"a", []any{Number("1"), Number("2")}}}},
		{"single quotes and apostrophes", `{'a': ['it\'s', 'the dog's toy', 'a "big" dog']}`, Object{{"a", []any{"it's", "the dog's toy", `a "big" dog`}}}},
		{"python literals", `{'a': True, 'b': [False, None], 'c': 'TrueStory'}`, Object{{"a", true}, {"b", []any{false, nil}}, {"c", "TrueStory"}}},
		{"unquoted keys", `{step1: [["Addition", "a dog"]], step2: ["x"]}`, Object{{"step1", []any{[]any{"Addition", "a dog"}}}, {"step2", []any{"x"}}}},
		{"hash comments", "{\n  # the atomic instructions\n  \"a\": 1, # one\n  \"b\": 2\n}", Object{{"a", Number("1")}, {"b", Number("2")}}},
		{"slash comments", "{\n  // first\n  \"a\": 1, /* inline */ \"b\": \"http://x\"\n}", Object{{"a", Number("1")}, {"b", "http://x"}}},
		{"missing commas", "{\"a\": 1\n \"b\": [\"x\" \"y\"]}", Object{{"a", Number("1")}, {"b", []any{"x", "y"}}}},
		{"bare words", `{"a": [Addition, a red hat]}`, Object{{"a", []any{"Addition", "a red hat"}}}},
		{"cut in a string", `{"a": ["one", "tw`, Object{{"a", []any{"one", "tw"}}}},
		{"cut after a key", `{"a": ["one"], "b":`, Object{{"a", []any{"one"}}}},
		{"cut after the brace", `{`, Object{}},
		{"escapes", `{"a": "line\nnext \u00e9 \"q\""}`, Object{{"a", "line\nnext é \"q\""}}},
		{"curly quotes", `{“a”: “b”}`, Object{{"a", "b"}}},
		{"number kept as written", `{"a": 2.50, "b": -3}`, Object{{"a", Number("2.50")}, {"b", Number("-3")}}},
		{"inner double quotes", `{"a": ["a "big" dog", "x"], "b": "the "old" car"
}`, Object{{"a", []any{`a "big" dog`, "x"}}, {"b", `the "old" car`}}},
		{"mismatched closer", `{"a": [1, 2}`, Object{{"a", []any{Number("1"), Number("2")}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Parse(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
		})
	}
}

func TestFindObject(t *testing.T) {
	tests := []struct {
		name  string
		reply string
		want  Object
		from  string
	}{
		{"fenced first", "thinking...\n```json\n{\"step2\": [\"a dog\"]}\n```\nbye {\"step2\": [\"other\"]}", Object{{"step2", []any{"a dog"}}}, "fenced"},
		{"fence any case", "```JSON\n{\"step2\": [\"x\"]}```", Object{{"step2", []any{"x"}}}, "fenced"},
		{"unmarked fence", "```\n{\"step2\": [\"x\"]}\n```", Object{{"step2", []any{"x"}}}, "fenced"},
		{"span", "Here: {\"step2\": [\"a cat\"]} and {\"step2\": [\"no\"]}", Object{{"step2", []any{"a cat"}}}, "span"},
		{"nested object kept whole", `Answer: {"step1": [{"type": "Addition", "content": "x"}], "step2": ["y"]}`,
			Object{{"step1", []any{Object{{"type", "Addition"}, {"content", "x"}}}}, {"step2", []any{"y"}}}, "span"},
		{"block with the keys wins", "Format: ```json\n{\"example\": true}\n```\nMine: ```json\n{\"step1\": [], \"step2\": [\"z\"]}\n```", Object{{"step1", []any{}}, {"step2", []any{"z"}}}, "fenced"},
		{"more keys win", "{\"step2\": [\"a\"]} then {\"step1\": [], \"step2\": [\"b\"]}", Object{{"step1", []any{}}, {"step2", []any{"b"}}}, "span"},
		{"wrapped", `{"result": {"step1": [], "step2": ["w"]}}`, Object{{"step1", []any{}}, {"step2", []any{"w"}}}, "span"},
		{"unterminated fence", "```json\n{\"step2\": [\"one\", \"two", Object{{"step2", []any{"one", "two"}}}, "fenced"},
		{"braces in prose first", "Use {curly} braces. {\"step2\": [\"q\"]}", Object{{"step2", []any{"q"}}}, "span"},
		{"braces inside strings", `{"step2": ["a {curly} sign"]}`, Object{{"step2", []any{"a {curly} sign"}}}, "span"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := FindObject(tc.reply, "step1", "step2")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.Object, tc.want) || f.From != tc.from {
				t.Errorf("got %#v from %s, want %#v from %s", f.Object, f.From, tc.want, tc.from)
			}
		})
	}
	for _, reply := range []string{"", "no json here", "[1,2,3]", "{{{:::", "```json\n{", "{}", `{"other": 1}`} {
		if f, err := FindObject(reply, "step1", "step2"); !errors.Is(err, ErrNoJSON) {
			t.Errorf("FindObject(%q) = %#v, %v; want ErrNoJSON", reply, f, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"a": [1, {"b": 'c'}]}`, "{# x\n a: b}", "{", `{"a": "\u12`, "[[[[", "{/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		Parse(s)
		_, _ = FindObject(s, "step1", "step2")
	})
}
