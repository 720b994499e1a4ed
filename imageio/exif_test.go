package imageio

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// tiffWithOrientation is a minimal TIFF/EXIF block holding IFD0 with one
// orientation entry.
func tiffWithOrientation(o uint16, bo binary.ByteOrder) []byte {
	b := make([]byte, 8+2+12+4)
	if bo == binary.LittleEndian {
		copy(b, "II")
	} else {
		copy(b, "MM")
	}
	bo.PutUint16(b[2:], 42)
	bo.PutUint32(b[4:], 8)
	bo.PutUint16(b[8:], 1)
	bo.PutUint16(b[10:], 0x0112)
	bo.PutUint16(b[12:], 3)
	bo.PutUint32(b[14:], 1)
	bo.PutUint16(b[18:], o)
	return b
}

func jpegWithExif(t *testing.T, img image.Image, tiff []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	j := buf.Bytes()
	seg := []byte{0xff, 0xe1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(2+6+len(tiff)))
	seg = append(seg, "Exif\x00\x00"...)
	seg = append(seg, tiff...)
	out := append([]byte{}, j[:2]...)
	out = append(out, seg...)
	return append(out, j[2:]...)
}

func pngWithExif(t *testing.T, img image.Image, tiff []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	p := buf.Bytes()
	ihdrEnd := 8 + 8 + 13 + 4
	var c []byte
	c = binary.BigEndian.AppendUint32(c, uint32(len(tiff)))
	body := append([]byte("eXIf"), tiff...)
	c = append(c, body...)
	c = binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(body))
	out := append([]byte{}, p[:ihdrEnd]...)
	out = append(out, c...)
	return append(out, p[ihdrEnd:]...)
}

// quadrants is a 64x32 image with four solid quadrants.
var quadColors = [4]color.NRGBA{
	{255, 0, 0, 255},     // top-left
	{0, 255, 0, 255},     // top-right
	{0, 0, 255, 255},     // bottom-left
	{255, 255, 255, 255}, // bottom-right
}

const (
	tl = iota
	tr
	bl
	br
)

func quadrants() *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, 64, 32))
	for y := 0; y < 32; y++ {
		for x := 0; x < 64; x++ {
			q := 0
			if x >= 32 {
				q++
			}
			if y >= 16 {
				q += 2
			}
			m.SetNRGBA(x, y, quadColors[q])
		}
	}
	return m
}

// where[o][q] is the output corner holding input corner q after applying
// EXIF orientation o.
var where = map[int][4]int{
	1: {tl, tr, bl, br},
	2: {tr, tl, br, bl}, // mirror
	3: {br, bl, tr, tl}, // rotate 180
	4: {bl, br, tl, tr}, // flip vertically
	5: {tl, bl, tr, br}, // transpose
	6: {tr, br, tl, bl}, // rotate 90 clockwise
	7: {br, tr, bl, tl}, // transverse
	8: {bl, tl, br, tr}, // rotate 90 counter-clockwise
}

func cornerColor(img image.Image, corner int) [3]uint8 {
	b := img.Bounds()
	x, y := b.Min.X+b.Dx()/4, b.Min.Y+b.Dy()/4
	if corner == tr || corner == br {
		x = b.Min.X + 3*b.Dx()/4
	}
	if corner == bl || corner == br {
		y = b.Min.Y + 3*b.Dy()/4
	}
	return colorRGB(img.At(x, y))
}

func near(a, b [3]uint8, tol int) bool {
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d > tol || d < -tol {
			return false
		}
	}
	return true
}

func TestEXIFOrientation(t *testing.T) {
	src := quadrants()
	for o := 1; o <= 8; o++ {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			tiff := tiffWithOrientation(uint16(o), bo)
			for _, f := range []struct {
				name string
				data []byte
				tol  int
			}{
				{"jpeg", jpegWithExif(t, src, tiff), 40},
				{"png", pngWithExif(t, src, tiff), 0},
			} {
				img, info, err := DecodeBytes(f.data, Limits{})
				if err != nil {
					t.Fatalf("%s o=%d: %v", f.name, o, err)
				}
				wantW, wantH := 64, 32
				if o >= 5 {
					wantW, wantH = 32, 64
				}
				if info.Orientation != o || info.Oriented != (o != 1) || info.Width != wantW || info.Height != wantH ||
					img.Bounds().Dx() != wantW || img.Bounds().Dy() != wantH {
					t.Fatalf("%s o=%d %v: info %+v bounds %v", f.name, o, bo, info, img.Bounds())
				}
				for q := 0; q < 4; q++ {
					want := colorRGB(quadColors[q])
					if got := cornerColor(img, where[o][q]); !near(got, want, f.tol) {
						t.Errorf("%s o=%d %v: corner %d holds %v, want %v", f.name, o, bo, where[o][q], got, want)
					}
				}
				// IgnoreOrientation keeps the stored layout.
				img, info, err = DecodeBytes(f.data, Limits{IgnoreOrientation: true})
				if err != nil || info.Oriented || img.Bounds().Dx() != 64 || info.Orientation != o {
					t.Errorf("%s o=%d ignore: %+v %v", f.name, o, info, err)
				}
			}
		}
	}
	// WebP EXIF chunk: orientation 6 swaps the size.
	w := solidWebP(3, 2, color.NRGBA{1, 2, 3, 255}, tiffWithOrientation(6, binary.LittleEndian))
	img, info, err := DecodeBytes(w, Limits{})
	if err != nil || info.Orientation != 6 || img.Bounds() != image.Rect(0, 0, 2, 3) {
		t.Errorf("webp exif: %+v %v %v", info, img, err)
	}
}

func TestEXIFMalformedIgnored(t *testing.T) {
	src := quadrants()
	for _, tiff := range [][]byte{
		nil, []byte("XX"), []byte("II*\x00\xff\xff\xff\xff"), tiffWithOrientation(0, binary.LittleEndian),
		tiffWithOrientation(9, binary.BigEndian), tiffWithOrientation(6, binary.BigEndian)[:15],
	} {
		img, info, err := DecodeBytes(jpegWithExif(t, src, tiff), Limits{})
		if err != nil || info.Orientation != 1 || img.Bounds().Dx() != 64 {
			t.Errorf("tiff %q: %+v %v", tiff, info, err)
		}
	}
}
