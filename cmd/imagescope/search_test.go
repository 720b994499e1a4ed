package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

func TestSearchCommand(t *testing.T) {
	f := newEvalFixture(t, true)
	gal := testutil.Fixtures(t, "datasets", "CIRCO", "unlabeled2017")

	// Composed query with every role configured, JSON output.
	out, errs, code := f.search(t, "is blue instead of red", "--ref", filepath.Join(gal, "000000001001.jpg"), "--gallery", gal, "--json", "-n", "5")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var res struct {
		Ranking []struct {
			Name    string `json:"name"`
			Verdict string `json:"verdict"`
		} `json:"ranking"`
		Stages  []map[string]any  `json:"stages"`
		Skipped map[string]string `json:"skipped"`
		Paths   map[string]string `json:"paths"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Ranking) != 5 || len(res.Stages) != 3 || len(res.Skipped) != 0 {
		t.Fatalf("ranking %d stages %d skipped %v", len(res.Ranking), len(res.Stages), res.Skipped)
	}
	for _, c := range res.Ranking {
		if c.Name == "000000001001.jpg" {
			t.Error("the reference image is ranked")
		}
		if res.Paths[c.Name] == "" {
			t.Errorf("no path for %s", c.Name)
		}
	}

	// Only CLIP configured: stages 2 and 3 and the reasoner are skipped, and the output says why.
	cfg := filepath.Join(f.root, "clip-only.yaml")
	os.WriteFile(cfg, []byte("home: "+f.home+"\nclip:\n  model: "+testutil.Fixtures(t, "clip", "tiny-clip-quickgelu")+"\n"), 0o644)
	out, errs, code = f.searchWith(t, cfg, "a red circle", "--gallery", gal)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"skipped stage2: no reasoner or proposer configured", "skipped stage3: no evaluator configured", "skipped reasoning", "ranking:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A chat from a file.
	dlg := filepath.Join(f.root, "dialog.txt")
	os.WriteFile(dlg, []byte("a single shape\nwhat color is it? blue\n"), 0o644)
	out, errs, code = f.search(t, "is it round? yes", "--dialog", dlg, "--gallery", gal, "--stages", "s1")
	if code != 0 || !strings.Contains(out, "stage 1 round 2") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}

	// Bad usage.
	if _, _, code := f.search(t, "x"); code != 2 {
		t.Errorf("no gallery: exit %d, want 2", code)
	}
	if _, errs, code := f.search(t, "x", "--gallery", gal, "--dialog", filepath.Join(f.root, "missing.txt")); code != 1 || !strings.Contains(errs, "missing.txt") {
		t.Errorf("missing dialog file: exit %d: %s", code, errs)
	}
}

func (f *evalFixture) search(t *testing.T, args ...string) (string, string, int) {
	return f.searchWith(t, f.cfgPath, args...)
}

func (f *evalFixture) searchWith(t *testing.T, cfg string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb strings.Builder
	code := run(t.Context(), append([]string{"search", "--config", cfg}, args...), strings.NewReader(""), &out, &errb, f.env)
	return out.String(), errb.String(), code
}
