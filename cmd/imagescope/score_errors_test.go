package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

func TestScoreErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fix := fixturesRoot(t)
	unknown := write("unknown.json", "{\"101\": [\"dev-27-1-img0\"],\n \"102\": [\"dev-27-1-img0\", \"no-such-image\"]}")
	malformed := write("malformed.json", "{\"101\": [\"dev-27-1-img0\"")
	dupID := write("dup.json", "{\"101\": [],\n\"101\": []}")
	wrongType := write("type.json", `{"101": {"a": 1}}`)
	// A CIRCO folder whose image folder exists but is empty.
	emptyCIRCO := filepath.Join(dir, "empty", "CIRCO")
	if err := os.MkdirAll(filepath.Join(emptyCIRCO, "unlabeled2017"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(emptyCIRCO, "captions"), os.DirFS(filepath.Join(fixturesRoot(t), "CIRCO", "captions"))); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown image", []string{"--dataset", "CIRR", "--split", "val", "--ranking", unknown}, 1,
			[]string{"unknown.json:2", `query "102"`, `item 1: unknown image name "no-such-image"`}},
		{"malformed", []string{"--dataset", "CIRR", "--split", "val", "--ranking", malformed}, 1, []string{"malformed.json", "malformed JSON"}},
		{"duplicate ids", []string{"--dataset", "CIRR", "--split", "val", "--ranking", dupID}, 1, []string{"dup.json:2", `key "101"`, "duplicate key"}},
		{"wrong type", []string{"--dataset", "CIRR", "--split", "val", "--ranking", wrongType}, 1, []string{"type.json:1", `query "101"`, "got object"}},
		{"missing ranking file", []string{"--dataset", "CIRR", "--split", "val", "--ranking", filepath.Join(dir, "nope.json")}, 1, []string{"nope.json", "not found"}},
		{"missing data root", []string{"--dataset", "CIRR", "--split", "val", "--data", filepath.Join(dir, "nodata"), "--ranking", unknown}, 1, []string{"nodata"}},
		{"CIRCO ranking for CIRR", []string{"--dataset", "CIRR", "--split", "val", "--ranking", "testdata/sample/circo_val_ranking.json"}, 1, []string{"circo_val_ranking.json", `query "0"`, "unknown"}},
		{"VisDial single lists", []string{"--dataset", "VisDial", "--ranking", "testdata/sample/cirr_val_ranking.json"}, 1, []string{"cirr_val_ranking.json", `query "101"`}},
		{"FashionIQ bad category", []string{"--dataset", "FashionIQ", "--ranking", "testdata/sample/cirr_val_ranking.json"}, 1, []string{"cirr_val_ranking.json", `key "101"`, "want one of dress, shirt, toptee"}},
		{"empty image folder", []string{"--dataset", "CIRCO", "--split", "val", "--data", emptyCIRCO, "--ranking", "testdata/sample/circo_val_ranking.json"}, 1,
			[]string{"unlabeled2017 exists but holds no images", "remove the empty folder"}},
		{"no dataset", []string{"--ranking", unknown}, 2, []string{"--dataset is required"}},
		{"no ranking", []string{"--dataset", "CIRR"}, 2, []string{"--ranking is required"}},
		{"unknown dataset", []string{"--dataset", "ImageNet", "--ranking", unknown}, 2, []string{`unknown dataset "ImageNet"`}},
		{"bad split", []string{"--dataset", "Flickr30K", "--split", "val", "--ranking", unknown}, 2, []string{`Flickr30K has no split "val"`}},
		{"bad k", []string{"--dataset", "CIRR", "--recall-k", "1,x", "--ranking", unknown}, 2, []string{`"x" is not a positive integer`}},
		{"extra args", []string{"--dataset", "CIRR", "--ranking", unknown, "extra"}, 2, []string{"unexpected arguments: extra"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"score", "--data", fix}, c.args...)
			code, out, errOut := runCmd(t, nil, args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, errOut)
			}
			if c.code == 1 && out != "" {
				t.Errorf("stdout not empty on error: %q", out)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
	// --data defaults to $IMAGESCOPE_DATA.
	code, _, errOut := runCmd(t, map[string]string{"IMAGESCOPE_DATA": fix}, "score", "--dataset", "CIRR", "--ranking", "testdata/sample/cirr_val_ranking.json")
	if code != 0 {
		t.Errorf("IMAGESCOPE_DATA: exit %d: %s", code, errOut)
	}
	code, _, errOut = runCmd(t, nil, "score", "--dataset", "CIRR", "--ranking", "x.json")
	if code != 2 || !strings.Contains(errOut, "--data is required") {
		t.Errorf("no data: exit %d: %s", code, errOut)
	}
	code, out, _ := runCmd(t, nil, "score", "--help")
	if code != 0 || !strings.Contains(out, "--ranking") || !strings.Contains(out, "Usage: imagescope score") {
		t.Errorf("help: exit %d: %s", code, out)
	}
}

// --dataset FashionIQ with one rankings file per category (three eval
// runs) gives the same numbers as the combined file.
func TestScoreFashionIQPerCategoryFiles(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "testdata", "sample", "fashioniq_val_ranking.json"))
	if err != nil {
		t.Fatal(err)
	}
	var byCat map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byCat); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"score", "--data", fixturesRoot(t), "--dataset", "FashionIQ", "--split", "val"}
	for _, c := range []string{"toptee", "dress", "shirt"} {
		p := filepath.Join(dir, c+".json")
		if err := os.WriteFile(p, byCat[c], 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--ranking", c+"="+p)
	}
	code, out, errOut := runCmd(t, nil, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, want, _ := runCmd(t, nil, "score", "--data", fixturesRoot(t), "--dataset", "FashionIQ", "--split", "val", "--ranking", "testdata/sample/fashioniq_val_ranking.json")
	if code != 0 || out != want {
		t.Errorf("per-category files give\n%s\nthe combined file\n%s", out, want)
	}
	if code, _, errOut := runCmd(t, nil, "score", "--data", fixturesRoot(t), "--dataset", "FashionIQ", "--ranking", "dress=a", "--ranking", "skirt=b", "--ranking", "toptee=c"); code != 2 || !strings.Contains(errOut, "CATEGORY=FILE") {
		t.Errorf("bad category: exit %d %s", code, errOut)
	}
}
