package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

// expected mirrors fixtures/datasets/expected_queries.json.
type expectedSplit struct {
	Queries []struct {
		PairID    *int64   `json:"pairid"`
		ID        *int64   `json:"id"`
		Reference string   `json:"reference"`
		Text      string   `json:"text"`
		Target    *string  `json:"target"`
		Subset    []string `json:"subset_candidates"`
		GT        []int64  `json:"gt_img_ids"`
	} `json:"queries"`
	Dialogues []struct {
		Target  string   `json:"target"`
		Caption string   `json:"caption"`
		Turns   []string `json:"turns"`
	} `json:"dialogues"`
	Gallery []string `json:"gallery"`
}

func loadExpected(t *testing.T, root string) map[string]map[string]expectedSplit {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "expected_queries.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string]map[string]expectedSplit
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	return exp
}

// TestLoadMatchesExpectedQueries checks the loaders against the queries and
// galleries listed beside the miniature benchmarks in testdata/datasets
// (written by scripts/gen-testdata), then against the independent ones in
// ../shared/fixtures/datasets.
func TestLoadMatchesExpectedQueries(t *testing.T) {
	t.Run("testdata", func(t *testing.T) { checkExpectedQueries(t, testutil.Datasets(t)) })
	t.Run("shared", func(t *testing.T) { checkExpectedQueries(t, testutil.Fixtures(t, "datasets")) })
}

func checkExpectedQueries(t *testing.T, root string) {
	exp := loadExpected(t, root)
	cases := []struct {
		name, split     string
		expDS, expSplit string
		task            Task
		domain          string
	}{
		{"CIRR", "val", "CIRR", "val", Composed, "cirr"},
		{"cirr", "test", "CIRR", "test1", Composed, "cirr"},
		{"CIRCO", "valid", "CIRCO", "val", Composed, "general"},
		{"CIRCO", "test", "CIRCO", "test", Composed, "general"},
		{"FashionIQ-dress", "val", "FashionIQ", "dress", Composed, "fashion-dress"},
		{"fashioniq-shirt", "valid", "FashionIQ", "shirt", Composed, "fashion-shirt"},
		{"FashionIQ-toptee", "val", "FashionIQ", "toptee", Composed, "fashion-toptee"},
		{"Flickr30K", "test", "Flickr30K", "test", TextToImage, "general"},
		{"mscoco", "test", "MSCOCO", "test", TextToImage, "general"},
		{"VisDial", "valid", "VisDial", "val", Chat, "chat"},
	}
	for _, c := range cases {
		t.Run(c.expDS+"/"+c.expSplit, func(t *testing.T) {
			ds, err := Load(context.Background(), c.name, root, c.split)
			if err != nil {
				t.Fatal(err)
			}
			want, ok := exp[c.expDS][c.expSplit]
			if !ok {
				t.Fatalf("no expectation for %s/%s", c.expDS, c.expSplit)
			}
			if ds.Task != c.task || ds.Domain != c.domain {
				t.Errorf("task/domain = %s/%s, want %s/%s", ds.Task, ds.Domain, c.task, c.domain)
			}
			var gallery []string
			for _, im := range ds.Gallery {
				gallery = append(gallery, im.Name)
			}
			if !reflect.DeepEqual(gallery, want.Gallery) {
				t.Errorf("gallery = %v\nwant %v", gallery, want.Gallery)
			}
			if err := ds.CheckImages(context.Background()); err != nil {
				t.Errorf("CheckImages: %v", err)
			}
			if c.expDS == "VisDial" {
				if len(ds.Queries) != len(want.Dialogues) {
					t.Fatalf("%d queries, want %d", len(ds.Queries), len(want.Dialogues))
				}
				for i, d := range want.Dialogues {
					q := ds.Queries[i]
					wantTurns := append([]string{d.Caption}, d.Turns...)
					if q.ID != strconv.Itoa(i) || !reflect.DeepEqual(q.Turns, wantTurns) ||
						!reflect.DeepEqual(q.Targets, []string{d.Target}) || q.Reference != "" || q.Instruction != "" {
						t.Errorf("query %d = %+v", i, q)
					}
				}
				return
			}
			if len(ds.Queries) != len(want.Queries) {
				t.Fatalf("%d queries, want %d", len(ds.Queries), len(want.Queries))
			}
			for i, w := range want.Queries {
				q := ds.Queries[i]
				id := strconv.Itoa(i)
				switch {
				case w.PairID != nil:
					id = strconv.FormatInt(*w.PairID, 10)
				case w.ID != nil:
					id = strconv.FormatInt(*w.ID, 10)
				}
				var targets []string
				if w.Target != nil {
					targets = []string{*w.Target}
				}
				if w.GT != nil {
					targets = nil
					for _, g := range w.GT {
						targets = append(targets, COCOName(g))
					}
					if targets[0] != *w.Target {
						t.Fatalf("fixture: target is not gt[0]")
					}
				}
				if q.ID != id || q.Instruction != w.Text || q.Reference != w.Reference || !reflect.DeepEqual(q.Targets, targets) {
					t.Errorf("query %d = {id %q text %q ref %q targets %v}\nwant {id %q text %q ref %q targets %v}",
						i, q.ID, q.Instruction, q.Reference, q.Targets, id, w.Text, w.Reference, targets)
				}
				if !reflect.DeepEqual(q.Subset, w.Subset) {
					t.Errorf("query %d subset = %v, want %v", i, q.Subset, w.Subset)
				}
			}
		})
	}
}

func TestLoadDetails(t *testing.T) {
	ctx := context.Background()
	root := testutil.Datasets(t)

	// The dataset folder itself is accepted as the data root.
	ds, err := Load(ctx, "CIRR", filepath.Join(root, "CIRR"), "val")
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.Gallery[0].Path; got != filepath.Join(root, "CIRR", "dev", "dev-11-0-img0.png") {
		t.Errorf("CIRR path = %s", got)
	}
	if got := ds.Queries[1].SoftTargets; !reflect.DeepEqual(got, map[string]float64{"dev-305-2-img0": 1, "dev-305-3-img1": -1}) {
		t.Errorf("soft targets = %v", got)
	}

	// CIRR train has NLVR2 numeric sub-folders.
	tr, err := Load(ctx, "CIRR", root, "train")
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.CheckImages(ctx); err != nil {
		t.Error(err)
	}

	c, err := Load(ctx, "CIRCO", root, "val")
	if err != nil {
		t.Fatal(err)
	}
	if c.GalleryUnlisted || !reflect.DeepEqual(c.Queries[1].SemanticAspects, []string{"compare_change", "negation"}) {
		t.Errorf("CIRCO val: unlisted=%v aspects=%v", c.GalleryUnlisted, c.Queries[1].SemanticAspects)
	}
	// LoadAnnotations never lists the CIRCO image folder.
	ca, err := LoadAnnotations(ctx, "CIRCO", root, "val")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.GalleryUnlisted || len(ca.Gallery) != 0 || len(ca.Queries) != 3 {
		t.Errorf("LoadAnnotations CIRCO: unlisted=%v gallery=%d queries=%d", ca.GalleryUnlisted, len(ca.Gallery), len(ca.Queries))
	}
	ok := ca.NameChecker()
	if !ok("000000123456.jpg") || ok("123456") || ok("000000123456.png") {
		t.Error("unlisted CIRCO name form check")
	}
	if chk := c.NameChecker(); !chk("000000001001.jpg") || chk("000000123456.jpg") {
		t.Error("listed CIRCO name check")
	}

	// FashionIQ test split: queries without targets.
	ft, err := Load(ctx, "FashionIQ-dress", root, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(ft.Queries) != 1 || ft.Queries[0].Targets != nil || ft.Queries[0].Instruction != "is brown and is longer" || ft.HasLabels() {
		t.Errorf("FashionIQ dress test = %+v", ft.Queries)
	}

	for _, bad := range []struct{ name, split string }{{"Flickr30K", "val"}, {"VisDial", "test"}, {"ImageNet", "val"}, {"CIRCO", "train"}} {
		if _, err := Load(ctx, bad.name, root, bad.split); err == nil {
			t.Errorf("Load(%s, %s) succeeded", bad.name, bad.split)
		}
	}
	if _, err := Load(ctx, "CIRR", filepath.Join(root, "nope"), "val"); err == nil {
		t.Error("missing data root accepted")
	}
	if _, err := Load(ctx, "CIRR", filepath.Join(root, "CIRCO"), "val"); err == nil {
		t.Error("wrong dataset folder accepted")
	}
}

func TestCanonical(t *testing.T) {
	for _, c := range []struct{ in, split, name, sp string }{
		{"cirr", "test", "CIRR", "test1"},
		{"CIRR", "valid", "CIRR", "val"},
		{"fashioniq_toptee", "val", "FashionIQ-toptee", "val"},
		{"FLICKR30K", "", "Flickr30K", "test"},
		{"visdial", "valid", "VisDial", "val"},
	} {
		n, s, err := Canonical(c.in, c.split)
		if err != nil || n != c.name || s != c.sp {
			t.Errorf("Canonical(%q,%q) = %q,%q,%v", c.in, c.split, n, s, err)
		}
	}
}

func TestFashionIQText(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{"is blue.", "is the same length?", "is blue and is the same length"},
		{"", "is grey with no pattern", " and is grey with no pattern"},
		{" ..is orange. ? ", "Is brighter. ", "is orange and Is brighter"},
		{"a.b", "c?d", "a.b and c?d"},
	} {
		if got := FashionIQText(c.a, c.b); got != c.want {
			t.Errorf("FashionIQText(%q,%q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestLoadFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"b.jpg", "a.PNG", "sub/c.webp", "sub/deeper/d.jpeg", "._a.PNG", ".hidden/e.jpg", "notes.txt", "sub/f.gif", "g.bmp"} {
		write(f)
	}
	if err := os.Symlink(filepath.Join(dir, "b.jpg"), filepath.Join(dir, "link.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing.jpg"), filepath.Join(dir, "dangling.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop.png", filepath.Join(dir, "loop.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "sub"), filepath.Join(dir, "subdir.jpg")); err != nil {
		t.Fatal(err)
	}
	ds, err := LoadFolder(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range ds.Gallery {
		names = append(names, im.Name)
	}
	// Links that cannot be followed stay in, so indexing reports them as
	// unreadable; a link to a folder is not an image.
	want := []string{"a.PNG", "b.jpg", "dangling.jpg", "g.bmp", "link.jpg", "loop.png", "sub/c.webp", "sub/deeper/d.jpeg", "sub/f.gif"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("folder gallery = %v, want %v", names, want)
	}
	if ds.Name != Folder || len(ds.Queries) != 0 || ds.Gallery[6].Path != filepath.Join(dir, "sub", "c.webp") {
		t.Errorf("folder dataset = %+v", ds)
	}
	if _, err := LoadFolder(context.Background(), filepath.Join(dir, "b.jpg")); err == nil {
		t.Error("file accepted as folder")
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFolder(context.Background(), empty); !errors.Is(err, ErrNoImages) || !strings.Contains(err.Error(), "holds no images") {
		t.Errorf("folder without images: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Load(ctx, "CIRR", testutil.Datasets(t), "val"); err == nil {
		t.Error("cancelled load succeeded")
	}
}
