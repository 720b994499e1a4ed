package dataset

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCaptionCSV: no CSV makes the Flickr30K/MSCOCO reader panic.
func FuzzCaptionCSV(f *testing.F) {
	f.Add([]byte("filename,split,raw\na.jpg,test,\"[\"\"x\"\"]\"\n"))
	f.Add([]byte("raw,filename\n[],b.jpg\n"))
	f.Add([]byte("\ufefffilename,raw\n,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = readCaptionCSV(context.Background(), "f.csv", data)
	})
}

// FuzzCIRRCaptions: no caption file makes the CIRR loader panic.
func FuzzCIRRCaptions(f *testing.F) {
	f.Add([]byte(`[{"pairid": 1, "reference": "a", "caption": " ", "target_hard": "b", "target_soft": {"b": 1}, "img_set": {"members": ["a", "b"]}}]`))
	f.Add([]byte(`[{"pairid": 1.5}]`))
	f.Add([]byte(`[{"img_set": {"members": null}}]`))
	root := f.TempDir()
	dir := filepath.Join(root, "CIRR")
	for _, d := range []string{"captions", "image_splits"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "image_splits", "split.rc2.val.json"), []byte(`{"a": "./dev/a.png", "b": "./dev/b.png"}`), 0o644); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, "captions", "cap.rc2.val.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = LoadAnnotations(context.Background(), "CIRR", root, "val")
	})
}
