package thumbs

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePNG(t testing.TB, path string, w, h int) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 90, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMakeFitsWithoutEnlarging(t *testing.T) {
	for _, c := range []struct{ w, h, size, ww, wh int }{
		{800, 600, 256, 256, 192},
		{600, 800, 128, 96, 128},
		{100, 50, 256, 100, 50},
	} {
		b, err := Make(image.NewRGBA(image.Rect(0, 0, c.w, c.h)), c.size)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got := img.Bounds().Size(); got.X != c.ww || got.Y != c.wh {
			t.Errorf("%dx%d at %d: got %v, want %dx%d", c.w, c.h, c.size, got, c.ww, c.wh)
		}
	}
}

func TestPrepareAll(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(dir, n+".png")
		writePNG(t, p, 300, 200)
		files[n] = p
	}
	bad := filepath.Join(dir, "bad.png")
	os.WriteFile(bad, []byte("not an image"), 0o644)
	files["bad"] = bad
	st, err := Open(filepath.Join(dir, "db.thumbs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	sum, err := st.PrepareAll(context.Background(), files, 2, func() { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Made != 3 || sum.Failed != 1 || sum.UpToDate != 0 || len(sum.Errors) != 1 || calls != 4 {
		t.Fatalf("first pass %+v, %d progress calls", sum, calls)
	}
	fi, _ := os.Stat(files["a"])
	for _, size := range Prepared {
		b, ok := st.Get("a", fi, size)
		if !ok {
			t.Fatalf("no %d thumbnail of a", size)
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() != size {
			t.Fatalf("%d thumbnail: %v %v", size, img.Bounds(), err)
		}
	}
	if _, ok := st.Get("a", fi, 512); ok {
		t.Fatal("512 is made on request, not ahead")
	}
	// Nothing to do the second time; a changed file gets new thumbnails.
	sum, _ = st.PrepareAll(context.Background(), files, 2, nil)
	if sum.Made != 0 || sum.UpToDate != 3 {
		t.Fatalf("second pass %+v", sum)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(files["b"], later, later)
	sum, _ = st.PrepareAll(context.Background(), files, 2, nil)
	if sum.Made != 1 || sum.UpToDate != 2 {
		t.Fatalf("after a change %+v", sum)
	}
	// A canceled context stops early and says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.PrepareAll(ctx, files, 2, nil); err == nil {
		t.Fatal("canceled PrepareAll reported no error")
	}
}

func BenchmarkPrepare(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "x.png")
	writePNG(b, p, 1600, 1200)
	for i := 0; i < b.N; i++ {
		st, err := Open(filepath.Join(dir, "t", string(rune('a'+i%26))+time.Now().Format("150405.000000000")), 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Prepare("x", p); err != nil {
			b.Fatal(err)
		}
	}
}
