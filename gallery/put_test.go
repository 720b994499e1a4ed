package gallery

import (
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestPutIdempotentAndLoadable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "a.png")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, image.NewGray(image.Rect(0, 0, 3, 2))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db, err := Open(ctx, filepath.Join(dir, "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec := Record{Item: Item{Name: "a", Path: path}, Pos: 0, Caption: "a grey square", CaptionModel: "cap", CaptionPrompt: "p",
		Image: []float32{3, 4, 0}, CaptionVec: []float32{0, 0, 2}}
	for range 2 {
		r := rec
		r.Image, r.CaptionVec = append([]float32(nil), rec.Image...), append([]float32(nil), rec.CaptionVec...)
		if err := db.Put(ctx, "clip-x", 3, r); err != nil {
			t.Fatal(err)
		}
	}
	other := rec
	other.Item.Name, other.Pos = "b", 1
	other.Image, other.CaptionVec = []float32{1, 0, 0}, []float32{0, 1, 0}
	if err := db.Put(ctx, "clip-x", 3, other); err != nil {
		t.Fatal(err)
	}
	ix, err := db.Load(ctx, "clip-x", CaptionKey("cap", "p"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Names) != 2 || ix.Names[0] != "a" || ix.Names[1] != "b" || !ix.HasCaption {
		t.Fatalf("loaded %v (captions %v)", ix.Names, ix.HasCaption)
	}
	if ix.Image[0] != 0.6 || ix.Image[1] != 0.8 || ix.Caption[2] != 1 {
		t.Fatalf("vectors not normalised: %v %v", ix.Image[:3], ix.Caption[:3])
	}
	if err := db.Put(ctx, "other-model", 3, rec); err == nil {
		t.Fatal("a record for another CLIP model was accepted")
	}
	bad := rec
	bad.Image = []float32{1, 2}
	if err := db.Put(ctx, "clip-x", 3, bad); err == nil {
		t.Fatal("a 2-d vector was accepted")
	}
}
