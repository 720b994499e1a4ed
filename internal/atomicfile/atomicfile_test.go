package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAndCreatesFolders(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "out.json")
	for _, content := range []string{"first", "second, longer content", ""} {
		if err := Write(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read back %q (%v), want %q", b, err, content)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("folder holds %d entries, want only the target", len(ents))
	}
}

func TestWriteFuncFailureKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.txt")
	if err := Write(p, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFunc(p, func(w io.Writer) error {
		io.WriteString(w, "half of the new")
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v should wrap the cause and name the path", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("target changed to %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("a temporary file remains: %v", ents)
	}
}

func TestWriteIntoUnwritablePlaceNamesPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	p := filepath.Join(file, "below-a-file.txt")
	if err := Write(p, []byte("x")); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v should name %s", err, p)
	}
}

func TestWriteAllIsAllOrNothingWhileWriting(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	text := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	if err := WriteAll([]File{{a, text("a1")}, {b, text("b1")}}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteAll([]File{{a, text("a2")}, {b, func(w io.Writer) error { return boom }}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), b) {
		t.Fatalf("error %v should wrap the cause and name the failing file", err)
	}
	for p, want := range map[string]string{a: "a1", b: "b1"} {
		if got, _ := os.ReadFile(p); string(got) != want {
			t.Errorf("%s = %q after a failed set, want %q", filepath.Base(p), got, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("temporary files remain: %v", ents)
	}
	if err := WriteAll([]File{{a, text("a3")}, {b, text("b3")}}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{a: "a3", b: "b3"} {
		if got, _ := os.ReadFile(p); string(got) != want {
			t.Errorf("%s = %q, want %q", filepath.Base(p), got, want)
		}
	}
}
