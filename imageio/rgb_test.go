package imageio

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"testing"
)

// TestToRGBPerModel checks each source model's conversion on one pixel
// against PIL's convert("RGB") rule, and on a sub-image against the same
// window of the whole image's conversion (each converter reads rows from
// the source's own origin and stride).
func TestToRGBPerModel(t *testing.T) {
	half := color.NRGBA{200, 100, 50, 128}
	tests := []struct {
		name string
		make func(r image.Rectangle) draw.Image
		px   color.Color // set at (0,0)
		want [3]uint8
	}{
		{"RGB", func(r image.Rectangle) draw.Image { return NewRGB(r) }, color.RGBA{1, 2, 3, 255}, [3]uint8{1, 2, 3}},
		{"NRGBA alpha dropped", func(r image.Rectangle) draw.Image { return image.NewNRGBA(r) }, half, [3]uint8{200, 100, 50}},
		// Premultiplied storage at half alpha keeps 7 bits: un-premultiplying
		// cannot restore the lowest one.
		{"RGBA un-premultiplied", func(r image.Rectangle) draw.Image { return image.NewRGBA(r) }, half, [3]uint8{199, 99, 49}},
		{"Gray", func(r image.Rectangle) draw.Image { return image.NewGray(r) }, color.Gray{77}, [3]uint8{77, 77, 77}},
		{"Gray16 clipped", func(r image.Rectangle) draw.Image { return image.NewGray16(r) }, color.Gray16{300}, [3]uint8{255, 255, 255}},
		{"NRGBA64 high byte", func(r image.Rectangle) draw.Image { return image.NewNRGBA64(r) },
			color.NRGBA64{0x12ff, 0xab00, 0x0101, 0x8000}, [3]uint8{0x12, 0xab, 0x01}},
		{"RGBA64 un-premultiplied", func(r image.Rectangle) draw.Image { return image.NewRGBA64(r) },
			color.NRGBA64{0xc800, 0x6400, 0x3200, 0x8000}, [3]uint8{199, 99, 49}},
		{"Paletted stored colour", func(r image.Rectangle) draw.Image {
			return image.NewPaletted(r, color.Palette{color.NRGBA{9, 8, 7, 0}, color.RGBA{0, 0, 0, 255}, color.RGBA{255, 255, 255, 255}})
		}, color.NRGBA{9, 8, 7, 0}, [3]uint8{9, 8, 7}},
		{"CMYK", func(r image.Rectangle) draw.Image { return image.NewCMYK(r) }, color.CMYK{0, 128, 255, 64}, [3]uint8{191, 95, 0}},
		{"other models: the generic path", func(r image.Rectangle) draw.Image { return image.NewAlpha(r) }, color.Alpha{255}, [3]uint8{255, 255, 255}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			one := tt.make(image.Rect(0, 0, 1, 1))
			one.Set(0, 0, tt.px)
			if got := ToRGB(one).Pix; !bytes.Equal(got, tt.want[:]) {
				t.Errorf("pixel = %v, want %v", got, tt.want)
			}
			whole := tt.make(image.Rect(-2, -1, 7, 6))
			src := noiseImage(9, 7)
			for y := 0; y < 7; y++ {
				for x := 0; x < 9; x++ {
					whole.Set(x-2, y-1, src.At(x, y))
				}
			}
			all := ToRGB(whole)
			win := image.Rect(0, 1, 4, 4)
			sub := ToRGB(whole.(interface {
				SubImage(image.Rectangle) image.Image
			}).SubImage(win))
			if sub.Rect != image.Rect(0, 0, win.Dx(), win.Dy()) {
				t.Fatalf("sub-image rect %v", sub.Rect)
			}
			for y := 0; y < win.Dy(); y++ {
				i := all.PixOffset(win.Min.X+2, win.Min.Y+1+y)
				if got, want := sub.Pix[sub.PixOffset(0, y):][:3*win.Dx()], all.Pix[i:i+3*win.Dx()]; !bytes.Equal(got, want) {
					t.Errorf("sub-image row %d = %v, want %v", y, got, want)
				}
			}
		})
	}
}

func BenchmarkToRGB(b *testing.B) {
	src := noiseImage(1024, 768)
	rgba := image.NewRGBA(src.Rect)
	draw.Draw(rgba, rgba.Rect, src, image.Point{}, draw.Src)
	for _, c := range []struct {
		name string
		img  image.Image
	}{{"NRGBA", src}, {"RGBA", rgba}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(src.Pix)))
			for b.Loop() {
				ToRGB(c.img)
			}
		})
	}
}
