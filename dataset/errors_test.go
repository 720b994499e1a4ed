package dataset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

// copyTree copies a fixture dataset folder (annotation files only) into a
// temp data root so a test can break one file.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if IsImageFile(p) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	fix := testutil.Datasets(t)
	cases := []struct {
		name, dataset, split string
		file                 string // relative to the data root; "" = delete nothing
		content              *string
		want                 []string // substrings of the error
	}{
		{"cirr missing caption file", "CIRR", "val", "CIRR/captions/cap.rc2.val.json", nil, []string{"cap.rc2.val.json", "not found"}},
		{"cirr malformed json", "CIRR", "val", "CIRR/captions/cap.rc2.val.json", ptr("[{\"pairid\": 1,\n \"reference\": }]"), []string{"cap.rc2.val.json:2", "malformed JSON"}},
		{"cirr not an array", "CIRR", "val", "CIRR/captions/cap.rc2.val.json", ptr(`{"a": 1}`), []string{"cap.rc2.val.json", "want a JSON array"}},
		{"cirr trailing data", "CIRR", "val", "CIRR/captions/cap.rc2.val.json", ptr(`[] []`), []string{"cap.rc2.val.json", "after the top-level value"}},
		{"cirr missing pairid", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"reference": "dev-11-0-img0", "caption": "x", "target_hard": "dev-27-1-img0", "img_set": {"members": []}}]`),
			[]string{"cap.rc2.val.json:1", "record 0", `field "pairid"`, "missing"}},
		{"cirr pairid string", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"pairid": "7", "reference": "dev-11-0-img0", "caption": "x", "target_hard": "dev-27-1-img0", "img_set": {"members": []}}]`),
			[]string{"record 0", `field "pairid"`, "want an integer, got string"}},
		{"cirr duplicate pairid", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr("[{\"pairid\": 7, \"reference\": \"dev-11-0-img0\", \"caption\": \"x\", \"target_hard\": \"dev-27-1-img0\", \"img_set\": {\"members\": []}},\n{\"pairid\": 7, \"reference\": \"dev-11-0-img0\", \"caption\": \"x\", \"target_hard\": \"dev-27-1-img0\", \"img_set\": {\"members\": []}}]"),
			[]string{"cap.rc2.val.json:2", "record 1 (pairid 7)", "duplicate pairid"}},
		{"cirr members wrong type", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"pairid": 7, "reference": "dev-11-0-img0", "caption": "x", "target_hard": "dev-27-1-img0", "img_set": {"members": [1]}}]`),
			[]string{"record 0 (pairid 7)", `field "img_set.members"`, "item 0: want a string, got number"}},
		{"cirr missing target in val", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"pairid": 7, "reference": "dev-11-0-img0", "caption": "x", "img_set": {"members": []}}]`),
			[]string{"record 0 (pairid 7)", `field "target_hard"`, "missing"}},
		{"cirr unknown reference", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"pairid": 7, "reference": "dev-0-0-img0", "caption": "x", "target_hard": "dev-27-1-img0", "img_set": {"members": []}}]`),
			[]string{"record 0 (pairid 7)", `field "reference"`, "not in split.rc2.val.json"}},
		{"cirr soft target not a number", "CIRR", "val", "CIRR/captions/cap.rc2.val.json",
			ptr(`[{"pairid": 7, "reference": "dev-11-0-img0", "caption": "x", "target_hard": "dev-27-1-img0", "target_soft": {"dev-27-1-img0": "1"}, "img_set": {"members": []}}]`),
			[]string{"record 0 (pairid 7)", `field "target_soft.dev-27-1-img0"`, "want a number"}},
		{"cirr split duplicate key", "CIRR", "val", "CIRR/image_splits/split.rc2.val.json",
			ptr("{\"a\": \"./dev/a.png\",\n\"a\": \"./dev/a.png\"}"), []string{"split.rc2.val.json:2", `key "a"`, "duplicate key"}},
		{"cirr split escaping path", "CIRR", "val", "CIRR/image_splits/split.rc2.val.json",
			ptr(`{"a": "../../etc/passwd"}`), []string{"split.rc2.val.json", `image "a"`, "not relative"}},
		{"circo missing file", "CIRCO", "val", "CIRCO/captions/val.json", nil, []string{"CIRCO", "val.json not found"}},
		{"circo gt wrong type", "CIRCO", "val", "CIRCO/captions/val.json",
			ptr(`[{"id": 0, "reference_img_id": 1, "relative_caption": "x", "target_img_id": 2, "gt_img_ids": 2}]`),
			[]string{"val.json:1", "record 0 (id 0)", `field "gt_img_ids"`, "want an array of integers, got number"}},
		{"circo target not in gt", "CIRCO", "val", "CIRCO/captions/val.json",
			ptr(`[{"id": 0, "reference_img_id": 1, "relative_caption": "x", "target_img_id": 2, "gt_img_ids": [3]}]`),
			[]string{"record 0 (id 0)", `field "gt_img_ids"`, "does not contain target_img_id 2"}},
		{"circo duplicate id", "CIRCO", "test", "CIRCO/captions/test.json",
			ptr(`[{"id": 0, "reference_img_id": 1, "relative_caption": "x"}, {"id": 0, "reference_img_id": 1, "relative_caption": "y"}]`),
			[]string{"test.json", "record 1 (id 0)", "duplicate id"}},
		{"circo record not object", "CIRCO", "test", "CIRCO/captions/test.json", ptr(`[3]`), []string{"test.json", "record 0", "want a JSON object, got number"}},
		{"fiq one caption", "FashionIQ-dress", "val", "FashionIQ/captions/cap.dress.val.json",
			ptr(`[{"target": "B00FXDR002", "candidate": "B00FXDR001", "captions": ["x"]}]`),
			[]string{"cap.dress.val.json", "record 0", `field "captions"`, "want 2 captions, got 1"}},
		{"fiq missing candidate", "FashionIQ-shirt", "val", "FashionIQ/captions/cap.shirt.val.json",
			ptr(`[{"target": "B00FXSH002", "captions": ["x", "y"]}]`), []string{"record 0", `field "candidate"`, "missing"}},
		{"fiq split not strings", "FashionIQ-toptee", "val", "FashionIQ/image_splits/split.toptee.val.json",
			ptr(`["B00FXTT001", 5]`), []string{"split.toptee.val.json", "item 1", "got number"}},
		{"fiq target outside split", "FashionIQ-dress", "val", "FashionIQ/captions/cap.dress.val.json",
			ptr(`[{"target": "B0NOPE", "candidate": "B00FXDR001", "captions": ["x", "y"]}]`), []string{"record 0", `field "target"`, "not in split.dress.val.json"}},
		{"flickr missing csv", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", nil, []string{"test_1k_flickr.csv", "not found"}},
		{"flickr missing raw column", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr("filename,split\na.jpg,test\n"),
			[]string{"test_1k_flickr.csv:1", `field "raw"`, "no such column"}},
		{"flickr raw not json", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr("filename,split,raw\na.jpg,test,\"[\"\"x\"\"]\"\nb.jpg,test,not json\n"),
			[]string{"test_1k_flickr.csv:3", "row 1", `field "raw"`, "JSON array"}},
		{"flickr raw wrong item type", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr("filename,split,raw\na.jpg,test,\"[\"\"x\"\", 3]\"\n"),
			[]string{"row 0", `field "raw"`, "item 1: want a string, got number"}},
		{"flickr ragged row", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr("filename,split,raw\na.jpg,test\n"),
			[]string{"test_1k_flickr.csv:2", "malformed CSV"}},
		{"flickr bad quotes", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr("filename,split,raw\na.jpg,test,\"[\"x\"]\"\n"),
			[]string{"test_1k_flickr.csv:2", "malformed CSV"}},
		{"flickr empty file", "Flickr30K", "test", "Flickr30K/test_1k_flickr.csv", ptr(""), []string{"test_1k_flickr.csv", "empty CSV"}},
		{"mscoco duplicate image", "MSCOCO", "test", "MSCOCO/test_5k_mscoco_2014.csv", ptr("filename,split,raw\na.jpg,test,[]\na.jpg,test,[]\n"),
			[]string{"test_5k_mscoco_2014.csv:3", "row 1", `field "filename"`, "already listed in row 0"}},
		{"mscoco filename with path", "MSCOCO", "test", "MSCOCO/test_5k_mscoco_2014.csv", ptr("filename,split,raw\n../a.jpg,test,[]\n"),
			[]string{"row 0", `field "filename"`, "not a plain file name"}},
		{"visdial short dialog", "VisDial", "val", "VisDial/VisDial_v1.0_queries_val.json",
			ptr(`[{"img": "unlabeled2017/000000002004.jpg", "dialog": ["a", "b"]}]`), []string{"VisDial_v1.0_queries_val.json", "record 0", `field "dialog"`, "want 11 entries (caption + 10 turns), got 2"}},
		{"visdial target outside space", "VisDial", "val", "VisDial/VisDial_v1.0_queries_val.json",
			ptr(`[{"img": "unlabeled2017/000000009999.jpg", "dialog": ["a","b","c","d","e","f","g","h","i","j","k"]}]`), []string{"record 0", `field "img"`, "not in Search_Space_val_50k.json"}},
		{"visdial img wrong type", "VisDial", "val", "VisDial/VisDial_v1.0_queries_val.json",
			ptr(`[{"img": 5, "dialog": []}]`), []string{"record 0", `field "img"`, "want a string, got number"}},
		{"visdial space duplicate", "VisDial", "val", "VisDial/Search_Space_val_50k.json",
			ptr(`["unlabeled2017/000000002004.jpg", "x/000000002004.jpg"]`), []string{"Search_Space_val_50k.json", "item 1", "duplicate image"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			dir := strings.SplitN(c.file, "/", 2)[0]
			copyTree(t, filepath.Join(fix, dir), filepath.Join(root, dir))
			p := filepath.Join(root, filepath.FromSlash(c.file))
			if c.content == nil {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(p, []byte(*c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(context.Background(), c.dataset, root, c.split)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFormatErrorAs(t *testing.T) {
	root := t.TempDir()
	copyTree(t, filepath.Join(testutil.Datasets(t), "CIRCO"), filepath.Join(root, "CIRCO"))
	if err := os.WriteFile(filepath.Join(root, "CIRCO", "captions", "val.json"), []byte("[\n{\"id\": 0, \"reference_img_id\": true}]"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(context.Background(), "CIRCO", root, "val")
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Line != 2 || fe.Record != "record 0 (id 0)" || fe.Field != "reference_img_id" {
		t.Fatalf("err = %#v", err)
	}
	// Images absent: Load still works (scoring needs annotations only),
	// CheckImages names what is missing.
	ds, err := Load(context.Background(), "CIRR", filepath.Join(testutil.Datasets(t)), "val")
	if err != nil {
		t.Fatal(err)
	}
	noImg := t.TempDir()
	copyTree(t, filepath.Join(testutil.Datasets(t), "CIRR"), filepath.Join(noImg, "CIRR"))
	ds2, err := Load(context.Background(), "CIRR", noImg, "val")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds2.Queries) != len(ds.Queries) {
		t.Fatal("queries differ without images")
	}
	if err := ds2.CheckImages(context.Background()); err == nil || !strings.Contains(err.Error(), "6 of 6 image files missing") || !strings.Contains(err.Error(), "(1 more)") {
		t.Errorf("CheckImages = %v", err)
	}
}

func TestCaptionCSVWithoutSplitColumn(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "Flickr30K")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	csv := "\ufeffraw,extra,filename\n\"[\"\"b1\"\", \"\"b2\"\"]\",x,b.jpg\n\"[\"\"a1\"\"]\",y,a.jpg\n"
	if err := os.WriteFile(filepath.Join(dir, "test_1k_flickr.csv"), []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := Load(context.Background(), "flickr30k", root, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Queries) != 3 || ds.Queries[2].Instruction != "a1" || ds.Queries[2].ID != "2" || ds.Queries[0].Targets[0] != "b.jpg" ||
		ds.Gallery[0].Name != "a.jpg" || ds.Gallery[1].Name != "b.jpg" {
		t.Errorf("dataset = %+v", ds)
	}
}

func ptr(s string) *string { return &s }

func TestCIRCOGalleryFromImageInfo(t *testing.T) {
	root := t.TempDir()
	copyTree(t, filepath.Join(testutil.Datasets(t), "CIRCO"), filepath.Join(root, "CIRCO"))
	ann := filepath.Join(root, "CIRCO", "COCO2017_unlabeled", "annotations")
	if err := os.MkdirAll(ann, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "CIRCO", "unlabeled2017")); err != nil {
		t.Fatal(err)
	}
	info := `{"info": {}, "images": [{"id": 1002, "file_name": "000000001002.jpg"}, {"id": 1001, "file_name": "000000001001.jpg"}]}`
	if err := os.WriteFile(filepath.Join(ann, "image_info_unlabeled2017.json"), []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, load := range []func(context.Context, string, string, string) (*Dataset, error){Load, LoadAnnotations} {
		ds, err := load(context.Background(), "CIRCO", root, "val")
		if err != nil {
			t.Fatal(err)
		}
		if ds.GalleryUnlisted || len(ds.Gallery) != 2 || ds.Gallery[0].Name != "000000001001.jpg" ||
			ds.Gallery[0].Path != filepath.Join(root, "CIRCO", "unlabeled2017", "000000001001.jpg") {
			t.Errorf("gallery = %+v (unlisted %v)", ds.Gallery, ds.GalleryUnlisted)
		}
	}
	bad := `{"images": [{"file_name": "x.png"}]}`
	if err := os.WriteFile(filepath.Join(ann, "image_info_unlabeled2017.json"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(context.Background(), "CIRCO", root, "val"); err == nil || !strings.Contains(err.Error(), `images[0]: field "file_name"`) {
		t.Errorf("bad image info: %v", err)
	}
}
