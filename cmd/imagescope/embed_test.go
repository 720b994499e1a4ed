package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

func TestEmbedCommand(t *testing.T) {
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	img := testutil.CLIP(t, "images", "square_224x224.png")
	bad := filepath.Join(t.TempDir(), "empty.png")
	if err := os.WriteFile(bad, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"embed", "--model", model, "--text", "a photo of a cat",
		"--image", img, "--image", bad, "--text", "", "--normalize", "--threads", "1"},
		strings.NewReader(""), &out, &errb, func(string) string { return "" })
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %s)", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout lines %q", lines)
	}
	for i, want := range []struct{ kind, input string }{{"text", "a photo of a cat"}, {"image", img}} {
		var rec struct {
			Kind      string    `json:"kind"`
			Input     string    `json:"input"`
			Embedding []float64 `json:"embedding"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Kind != want.kind || rec.Input != want.input || len(rec.Embedding) != 12 {
			t.Fatalf("line %d: %+v", i, rec)
		}
		var n float64
		for _, v := range rec.Embedding {
			n += v * v
		}
		if math.Abs(n-1) > 1e-5 {
			t.Errorf("line %d: norm² %v with --normalize", i, n)
		}
	}
	if !strings.Contains(errb.String(), "empty.png") || !strings.Contains(errb.String(), "empty text") ||
		!strings.Contains(errb.String(), "2 of 4 items failed") {
		t.Errorf("stderr: %s", errb.String())
	}
	// Usage errors.
	if code := run(context.Background(), []string{"embed", "--clip", model}, strings.NewReader(""), &out, &errb, func(string) string { return "" }); code != 2 {
		t.Errorf("no items: exit %d", code)
	}
}
