package app

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/testutil"
)

func TestReadDialog(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
		wantErr    string
	}{
		{"json", `["a dog", "is it brown? yes"]`, []string{"a dog", "is it brown? yes"}, ""},
		{"lines", "a dog\n\n  is it brown? yes  \n", []string{"a dog", "is it brown? yes"}, ""},
		{"bad json", `["a dog", 3]`, nil, "want a JSON array of strings"},
		{"empty", "\n \n", nil, "no turns"},
		{"empty turn", `["a dog", " "]`, nil, "turn 1 is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "chat.txt")
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ReadDialog(p)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := ReadDialog(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "dialog file") {
		t.Errorf("missing file: %v", err)
	}
}

// The reference of a search is a gallery image when given by name or by
// one of the gallery's files, else the decoded file.
func TestOpenSearchReference(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default(func(string) string { return "" })
	cfg.Home, cfg.Cache.Disabled = t.TempDir(), true
	cfg.CLIP.Model = testutil.CLIP(t, "tiny-clip-quickgelu")
	folder := testutil.Data(t, "datasets", "CIRCO", "unlabeled2017")
	files, _ := filepath.Glob(filepath.Join(folder, "*"))
	if len(files) == 0 {
		t.Fatal("no gallery images")
	}
	outside := filepath.Join(t.TempDir(), "copy"+filepath.Ext(files[0]))
	b, _ := os.ReadFile(files[0])
	os.WriteFile(outside, b, 0o644)
	open := func(ref string) (*Search, error) {
		return OpenSearch(ctx, cfg, SearchSpec{Gallery: GallerySpec{Folder: folder}, Text: "red", Ref: ref, MaxStage: 1, Depth: 3, TopK: 3, Alpha: 1}, Options{})
	}
	s, err := open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	name := s.Request.Reference
	if name == "" || s.Request.ReferenceImage != nil || s.Gallery.Images[name] == "" || !s.HasReference() {
		t.Errorf("a gallery file: reference %q, image %v", name, s.Request.ReferenceImage != nil)
	}
	if s.Refines() {
		t.Error("stage 1 only, no roles: nothing refines")
	}
	s.Close()
	for _, tc := range []struct {
		ref       string
		wantName  string
		wantImage bool
	}{{name, name, false}, {outside, "", true}} {
		s, err := open(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if s.Request.Reference != tc.wantName || (s.Request.ReferenceImage != nil) != tc.wantImage {
			t.Errorf("ref %s: reference %q, image %v", tc.ref, s.Request.Reference, s.Request.ReferenceImage != nil)
		}
		res, err := s.Run(ctx, nil)
		if err != nil || len(res.Ranking) == 0 {
			t.Errorf("ref %s: search %v, %d results", tc.ref, err, len(res.Ranking))
		}
		s.Close()
	}
	if _, err := open(filepath.Join(t.TempDir(), "missing.png")); err == nil || !strings.Contains(err.Error(), "reference image") {
		t.Errorf("missing reference file: %v", err)
	}
}
