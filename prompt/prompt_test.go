package prompt

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type reasonOut struct {
	Step1 [][]string `json:"step1"`
	Step2 []string   `json:"step2"`
}

func TestExtractJSON(t *testing.T) {
	tests := []struct {
		name     string
		reply    string
		want     reasonOut
		from     string
		repaired bool
	}{
		{"fenced", "thinking...\n```json\n{\"step1\": [[\"Addition\", \"a dog\"]], \"step2\": [\"a dog\"]}\n```\nbye {\"step2\": [\"other\"]}",
			reasonOut{[][]string{{"Addition", "a dog"}}, []string{"a dog"}}, "fenced", false},
		{"fence uppercase", "```JSON\n{\"step2\": [\"x\"]}```", reasonOut{nil, []string{"x"}}, "fenced", false},
		{"span", "Here: {\"step2\": [\"a cat\"]} and {\"step2\": [\"no\"]}", reasonOut{nil, []string{"a cat"}}, "span", false},
		{"trailing commas", "{\"step1\": [[\"Removal\", \"hat\"],], \"step2\": [\"a\", \"b\",],}", reasonOut{[][]string{{"Removal", "hat"}}, []string{"a", "b"}}, "span", true},
		{"single quotes", "{'step2': ['it\\'s red', \"don't stop\", 'a \"big\" dog']}", reasonOut{nil, []string{"it's red", "don't stop", `a "big" dog`}}, "span", true},
		{"apostrophe in single quoted", "{'step2': ['the dog's toy']}", reasonOut{nil, []string{"the dog's toy"}}, "span", true},
		{"unclosed", "```json\n{\"step1\": [[\"Addition\", \"a hat\"]], \"step2\": [\"one\", \"two", reasonOut{[][]string{{"Addition", "a hat"}}, []string{"one", "two"}}, "fenced", true},
		{"unclosed span dangling key", "{\"step2\": [\"one\"], \"step1\":", reasonOut{nil, []string{"one"}}, "span", true},
		{"nested braces in string", "{\"step2\": [\"a {curly} sign\"]}", reasonOut{nil, []string{"a {curly} sign"}}, "span", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got reasonOut
			ex, err := ExtractJSON(tc.reply, &got)
			if err != nil {
				t.Fatalf("ExtractJSON: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if ex.From != tc.from || ex.Repaired != tc.repaired {
				t.Errorf("extraction %+v, want from=%s repaired=%v", ex, tc.from, tc.repaired)
			}
		})
	}
}

func TestExtractJSONNothing(t *testing.T) {
	for _, reply := range []string{"", "no json here", "[1,2,3]", "{{{:::"} {
		var v reasonOut
		if _, err := ExtractJSON(reply, &v); err == nil {
			t.Errorf("ExtractJSON(%q) = nil error, want ErrNoJSON", reply)
		}
	}
}

func TestRepairPython(t *testing.T) {
	got := Repair(`{'a': True, 'b': [False, None], 'c': 'TrueStory'}`)
	want := `{"a": true, "b": [false, null], "c": "TrueStory"}`
	if got != want {
		t.Errorf("Repair = %s, want %s", got, want)
	}
}

func TestLibrary(t *testing.T) {
	lib, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Domains() {
		for _, n := range Names() {
			data := map[string]any{"Instruction": "make it red", "Reference": "a blue car", "Atomic": "(1) Modification: blue becomes red", "Question": "Is the car red?"}
			s, err := lib.Render(d, n, data)
			if err != nil {
				t.Fatalf("%s/%s: %v", d, n, err)
			}
			if s == "" {
				t.Fatalf("%s/%s renders empty", d, n)
			}
			if n == Reason && !strings.Contains(s, "make it red") {
				t.Errorf("%s/%s lacks the instruction", d, n)
			}
		}
	}
	if _, err := lib.Render("nope", Reason, nil); err == nil {
		t.Error("unknown domain accepted")
	}
	if _, err := lib.Render("general", Reason, map[string]any{}); err == nil {
		t.Error("missing field accepted")
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "chat"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "chat", "reason.txt"), []byte("CHAT {{.Instruction}}"), 0o644)
	os.WriteFile(filepath.Join(dir, "verify.txt"), []byte("Q? {{.Question}}"), 0o644)
	lib2, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := lib2.Render("chat", Reason, map[string]any{"Instruction": "x"}); s != "CHAT x" {
		t.Errorf("override not used: %q", s)
	}
	if s, _ := lib2.Render("general", Reason, map[string]any{"Instruction": "x", "Reference": "y"}); strings.HasPrefix(s, "CHAT") {
		t.Error("chat override leaked into general")
	}
	if s, _ := lib2.Render("cirr", Verify, map[string]any{"Question": "red?"}); s != "Q? red?" {
		t.Errorf("top-level override not used: %q", s)
	}
	out := t.TempDir()
	if err := lib2.WriteDir(out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "chat", "reason.txt"))
	if err != nil || string(b) != "CHAT {{.Instruction}}" {
		t.Errorf("copied prompt = %q, %v", b, err)
	}
	os.WriteFile(filepath.Join(dir, "evaluate.txt"), []byte("{{.Broken"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "evaluate") {
		t.Errorf("broken override error = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing override dir accepted")
	}
}
