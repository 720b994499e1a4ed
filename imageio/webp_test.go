package imageio

import (
	"image"
	"testing"
)

func TestWebPLossyConversion(t *testing.T) {
	// Limited-range levels: Y=16 is black, Y=235 white, with neutral chroma.
	for _, c := range []struct {
		y    uint8
		want uint8
	}{{16, 0}, {235, 255}, {126, 128}} {
		for _, sz := range [][2]int{{1, 1}, {2, 2}, {5, 3}, {6, 7}} {
			m := image.NewYCbCr(image.Rect(0, 0, sz[0], sz[1]), image.YCbCrSubsampleRatio420)
			for i := range m.Y {
				m.Y[i] = c.y
			}
			for i := range m.Cb {
				m.Cb[i], m.Cr[i] = 128, 128
			}
			out := webpToImage(m).(*RGB)
			for i, v := range out.Pix {
				if d := int(v) - int(c.want); d > 1 || d < -1 {
					t.Fatalf("Y=%d %v: byte %d = %d, want %d", c.y, sz, i, v, c.want)
				}
			}
		}
	}
	// Alpha is kept; a chroma edge is smoothed, not replicated.
	m := image.NewNYCbCrA(image.Rect(0, 0, 4, 2), image.YCbCrSubsampleRatio420)
	for i := range m.Y {
		m.Y[i], m.A[i] = 128, uint8(60*i)
	}
	m.Cb[0], m.Cb[1], m.Cr[0], m.Cr[1] = 128, 128, 60, 200
	out := webpToImage(m).(*image.NRGBA)
	if out.Pix[3] != 0 || out.Pix[4*3+3] != 180 {
		t.Errorf("alpha: %v", out.Pix)
	}
	r := [4]uint8{out.Pix[0], out.Pix[4], out.Pix[8], out.Pix[12]}
	if !(r[0] < r[1] && r[1] < r[2] && r[2] < r[3]) {
		t.Errorf("red across a chroma step is not smoothed: %v", r)
	}
}
