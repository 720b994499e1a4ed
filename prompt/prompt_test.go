package prompt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLibrary(t *testing.T) {
	lib, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Domains() {
		for _, n := range Names() {
			data := map[string]any{"Instruction": "make it red", "Reference": "a blue car", "Atomic": "(1) Modification: blue becomes red", "Question": "Is the car red?",
				"Dialogue": "(0) ein rotes Auto", "Candidates": "(1) a red car", "Count": 3}
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
			// Queries come in any language; what reaches CLIP and the
			// verifier must be English, and the prompts say so.
			if (n == Reason || n == Propose || n == Ask) && !strings.Contains(s, "English") {
				t.Errorf("%s/%s does not state the language rule", d, n)
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
