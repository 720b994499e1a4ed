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
			data := Fields{Instruction: "make it red", Reference: "a blue car", Atomic: []Atomic{{"Modification", "blue becomes red"}}, Question: "Is the car red?",
				Dialogue: "(0) ein rotes Auto", Candidates: "(1) a red car", Count: 3}
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
	if _, err := lib.Render("nope", Reason, Fields{}); err == nil {
		t.Error("unknown domain accepted")
	}
	if s, _ := lib.Render("general", Propose, Fields{Atomic: []Atomic{{"Addition", "a dog"}, {"Removal", "the cat"}}}); !strings.Contains(s, "(1) Addition: a dog\n(2) Removal: the cat") {
		t.Errorf("numbered atomic instructions missing:\n%s", s)
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
	if s, _ := lib2.Render("chat", Reason, Fields{Instruction: "x"}); s != "CHAT x" {
		t.Errorf("override not used: %q", s)
	}
	if s, _ := lib2.Render("general", Reason, Fields{Instruction: "x", Reference: "y"}); strings.HasPrefix(s, "CHAT") {
		t.Error("chat override leaked into general")
	}
	if s, _ := lib2.Render("cirr", Verify, Fields{Question: "red?"}); s != "Q? red?" {
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
	os.WriteFile(filepath.Join(dir, "evaluate.txt"), []byte("{{.Nope}}"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "Nope") {
		t.Errorf("unknown template field error = %v", err)
	}
}

// writeRefLayout writes sample prompt files of our own in the reference
// implementation's layout.
func writeRefLayout(t *testing.T, dir string, datasets ...string) {
	t.Helper()
	for _, ds := range datasets {
		files := map[string]string{
			"prompt1_stage1_reasoner.txt":  ds + " reasoner.\nRequest: [[INSTRUCTION]]\nStart: [[REF_IMAGE_DESC]]\nAgain: [[INSTRUCTION]]\n",
			"prompt2_stage2_reasoner.txt":  ds + " proposer. Request: [[INSTRUCTION]]\nAtomic:[[ATOMIC_INST]]End.\n",
			"prompt3_stage3_evaluator.txt": ds + " evaluator: does the right image match \"[[INSTRUCTION]]\"?\n",
			"caption.txt":                  ds + " caption this image.\n",
		}
		if err := os.MkdirAll(filepath.Join(dir, ds), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, ds, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReferenceLayout(t *testing.T) {
	dir := t.TempDir()
	writeRefLayout(t, dir, "CIRCO", "VisDial")
	lib, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if lib.Layout() != LayoutReference {
		t.Fatalf("layout %q", lib.Layout())
	}
	dom, err := lib.DatasetDomain("circo", "general")
	if err != nil || dom != "CIRCO" {
		t.Fatalf("DatasetDomain = %q, %v", dom, err)
	}
	if _, err := lib.DatasetDomain("CIRR", "cirr"); err == nil || !strings.Contains(err.Error(), "no CIRR folder") {
		t.Errorf("missing dataset folder error = %v", err)
	}
	f := Fields{Instruction: "make it red", Reference: "  a blue car \n", Atomic: []Atomic{{"Modification", "blue becomes red"}, {"Addition", "a dog"}}, Question: "Is it red?"}
	for _, tc := range []struct{ name, want string }{
		{Reason, "CIRCO reasoner.\nRequest: make it red\nStart: a blue car\nAgain: make it red\n"},
		{Propose, "CIRCO proposer. Request: make it red\nAtomic:\n   (1) Modification: blue becomes red\n   (2) Addition: a dog\nEnd.\n"},
		{Evaluate, "CIRCO evaluator: does the right image match \"make it red\"?\n"},
	} {
		got, err := lib.Render("CIRCO", tc.name, f)
		if err != nil || got != tc.want {
			t.Errorf("Render %s = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if c, _ := lib.CaptionInstruction("CIRCO"); c != "CIRCO caption this image.\n" {
		t.Errorf("caption %q", c)
	}
	embedded, _ := Load("")
	wantVerify, _ := embedded.Render("general", Verify, f)
	if v, err := lib.Render("CIRCO", Verify, f); err != nil || v != wantVerify {
		t.Errorf("verifier prompt %q, %v; want ours %q", v, err, wantVerify)
	}
	if lib.BlankReference("CIRCO") != ReferenceBlank || lib.BlankReference("general") != BlankReference {
		t.Error("blank reference texts")
	}
	if !lib.HasDomain("general") || !lib.HasDomain("VisDial") {
		t.Error("domains missing")
	}

	// The run folder copy reads back the same, and says what was used.
	out := t.TempDir()
	if err := lib.WriteDir(out); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(filepath.Join(out, "SOURCES.txt"))
	for _, want := range []string{"# layout: reference", "CIRCO/prompt1_stage1_reasoner.txt\t" + filepath.Join(dir, "CIRCO", "prompt1_stage1_reasoner.txt"), "VisDial/verify.txt\tembedded:shared/verify.txt"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("SOURCES.txt lacks %q:\n%s", want, src)
		}
	}
	back, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{Reason, Propose, Evaluate, Verify} {
		a, _ := lib.Render("VisDial", n, f)
		b, _ := back.Render("VisDial", n, f)
		if a != b {
			t.Errorf("%s differs after the round trip: %q vs %q", n, a, b)
		}
	}

	// Bad folders get errors that say what to do.
	bad := t.TempDir()
	writeRefLayout(t, bad, "CIRR")
	os.Remove(filepath.Join(bad, "CIRR", "caption.txt"))
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "CIRR has no caption.txt") {
		t.Errorf("missing file error = %v", err)
	}
	writeRefLayout(t, bad, "CIRR")
	os.WriteFile(filepath.Join(bad, "CIRR", "prompt1_stage1_reasoner.txt"), []byte("[[INSTRUCTIONS]]"), 0o644)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "unknown placeholder [[INSTRUCTIONS]]") {
		t.Errorf("unknown placeholder error = %v", err)
	}
	if _, err := Load(filepath.Join(bad, "CIRR")); err == nil || !strings.Contains(err.Error(), "folder above") {
		t.Errorf("one dataset folder error = %v", err)
	}

	// Our layout shares caption.txt and domain names such as cirr/ with it:
	// a copy of our templates is not taken for the reference layout.
	ours := t.TempDir()
	if err := embedded.WriteDir(ours); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ours, "caption.txt"), []byte("Describe it."), 0o644)
	if l, err := Load(ours); err != nil {
		t.Errorf("our layout: %v", err)
	} else if l.Layout() != LayoutTemplates {
		t.Errorf("our layout read as %s", l.Layout())
	}
}
