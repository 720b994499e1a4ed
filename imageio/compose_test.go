package imageio

import (
	"image"
	"image/color"
	"testing"
)

func solid(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func TestSideBySideLayout(t *testing.T) {
	red := color.RGBA{200, 0, 0, 255}
	blue := color.RGBA{0, 0, 200, 255}
	out := SideBySide(solid(32, 20, red), solid(50, 70, blue))
	b := out.Bounds()
	if b.Dx() != 2*ComposeSide+ComposeGap || b.Dy() != ComposeLabel+ComposeSide {
		t.Fatalf("size %v", b)
	}
	at := func(x, y int) color.RGBA {
		r, g, bb, a := out.At(x, y).RGBA()
		return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bb >> 8), uint8(a >> 8)}
	}
	if c := at(400, ComposeLabel+400); c != red {
		t.Errorf("left centre %v, want red", c)
	}
	if c := at(ComposeSide+ComposeGap+400, ComposeLabel+400); c != blue {
		t.Errorf("right centre %v, want blue", c)
	}
	mid := ComposeSide + ComposeGap/2
	if c := at(mid, 5); c != (color.RGBA{0, 0, 0, 255}) {
		t.Errorf("divider %v, want black", c)
	}
	if c := at(ComposeSide+3, ComposeLabel+400); c != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("gap %v, want white", c)
	}
	// Labels: some dark pixels in each label band, none in the corners.
	dark := func(x0, x1 int) int {
		n := 0
		for y := 0; y < ComposeLabel; y++ {
			for x := x0; x < x1; x++ {
				if c := at(x, y); c.R < 100 {
					n++
				}
			}
		}
		return n
	}
	if dark(100, 700) < 50 || dark(ComposeSide+ComposeGap+100, ComposeSide+ComposeGap+700) < 50 {
		t.Error("labels not drawn")
	}
	if dark(0, 20) != 0 {
		t.Error("label band corner not white")
	}
	// No reference: black placeholder.
	out = SideBySide(nil, solid(8, 8, blue))
	if c := at(400, ComposeLabel+400); c != (color.RGBA{0, 0, 0, 255}) {
		t.Errorf("placeholder %v, want black", c)
	}
}

func BenchmarkSideBySide(b *testing.B) {
	ref, cand := solid(500, 375, color.RGBA{1, 2, 3, 255}), solid(640, 480, color.RGBA{9, 9, 9, 255})
	for b.Loop() {
		SideBySide(ref, cand)
	}
}
