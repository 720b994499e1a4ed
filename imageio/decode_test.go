package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
)

// noiseImage is a deterministic NRGBA test image.
func noiseImage(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	s := uint32(12345)
	for i := range m.Pix {
		s = s*1664525 + 1013904223
		m.Pix[i] = uint8(s >> 24)
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	return m
}

func encodeWith(t *testing.T, enc func(*bytes.Buffer) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := enc(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// solidWebP is a lossless WebP (VP8L) of one colour, built by hand: five
// single-symbol prefix codes, so the pixel data takes no bits. With exif,
// it is wrapped in the extended (VP8X) form with an EXIF chunk.
func solidWebP(w, h int, c color.NRGBA, exif []byte) []byte {
	var bitBuf []byte
	var n uint
	put := func(v uint64, k uint) {
		for i := uint(0); i < k; i++ {
			if n%8 == 0 {
				bitBuf = append(bitBuf, 0)
			}
			bitBuf[n/8] |= byte(v>>i&1) << (n % 8)
			n++
		}
	}
	put(uint64(w-1), 14)
	put(uint64(h-1), 14)
	put(0, 1) // alpha hint
	put(0, 3) // version
	put(0, 1) // no transform
	put(0, 1) // no colour cache
	put(0, 1) // no meta prefix codes
	for _, sym := range []uint8{c.G, c.R, c.B, c.A, 0} {
		put(1, 1) // simple code
		put(0, 1) // one symbol
		put(1, 1) // 8-bit symbol
		put(uint64(sym), 8)
	}
	vp8l := append([]byte{0x2f}, bitBuf...)
	chunk := func(id string, data []byte) []byte {
		out := append([]byte(id), 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(out[4:], uint32(len(data)))
		out = append(out, data...)
		if len(data)%2 == 1 {
			out = append(out, 0)
		}
		return out
	}
	body := []byte("WEBP")
	if exif != nil {
		x := make([]byte, 10)
		x[0] = 0x08 // EXIF present
		x[4], x[5], x[6] = byte(w-1), byte((w-1)>>8), byte((w-1)>>16)
		x[7], x[8], x[9] = byte(h-1), byte((h-1)>>8), byte((h-1)>>16)
		body = append(body, chunk("VP8X", x)...)
	}
	body = append(body, chunk("VP8L", vp8l)...)
	if exif != nil {
		body = append(body, chunk("EXIF", exif)...)
	}
	out := append([]byte("RIFF"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(body)))
	return append(out, body...)
}

func TestDecodeFormats(t *testing.T) {
	src := noiseImage(37, 23)
	pal := image.NewPaletted(src.Rect, color.Palette{color.RGBA{10, 20, 30, 255}, color.RGBA{200, 100, 50, 255}})
	for i := range pal.Pix {
		pal.Pix[i] = uint8(i % 2)
	}
	cases := []struct {
		name, format string
		data         []byte
		want         image.Image // exact expected RGB source; nil: loose
	}{
		{"png", "png", encodeWith(t, func(b *bytes.Buffer) error { return png.Encode(b, src) }), src},
		{"gif", "gif", encodeWith(t, func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) }), pal},
		{"bmp", "bmp", encodeWith(t, func(b *bytes.Buffer) error { return bmp.Encode(b, src) }), src},
		{"jpeg", "jpeg", encodeWith(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, src, &jpeg.Options{Quality: 95}) }), nil},
		{"webp", "webp", solidWebP(37, 23, color.NRGBA{10, 200, 30, 255}, nil), image.NewUniform(color.NRGBA{10, 200, 30, 255})},
	}
	for _, c := range cases {
		img, info, err := DecodeBytes(c.data, Limits{})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if info.Format != c.format || info.Width != 37 || info.Height != 23 || info.Orientation != 1 || info.Oriented {
			t.Errorf("%s: info %+v", c.name, info)
		}
		got := ToRGB(img)
		if c.want == nil {
			continue
		}
		for y := 0; y < 23; y++ {
			for x := 0; x < 37; x++ {
				w := colorRGB(c.want.At(x, y))
				i := got.PixOffset(x, y)
				if [3]uint8{got.Pix[i], got.Pix[i+1], got.Pix[i+2]} != w {
					t.Fatalf("%s: pixel (%d,%d) = %v, want %v", c.name, x, y, got.Pix[i:i+3], w)
				}
			}
		}
	}
}

func TestToRGBPILRules(t *testing.T) {
	// Alpha is dropped, not composited.
	n := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	n.Pix = []uint8{200, 100, 50, 0}
	if p := ToRGB(n).Pix; !bytes.Equal(p, []uint8{200, 100, 50}) {
		t.Errorf("NRGBA: %v", p)
	}
	// 16-bit RGB keeps the high byte; 16-bit gray clips (PIL mode I).
	r16 := image.NewRGBA64(image.Rect(0, 0, 1, 1))
	r16.SetRGBA64(0, 0, color.RGBA64{0x12ff, 0xab00, 0xffff, 0xffff})
	if p := ToRGB(r16).Pix; !bytes.Equal(p, []uint8{0x12, 0xab, 0xff}) {
		t.Errorf("RGBA64: %x", p)
	}
	g16 := image.NewGray16(image.Rect(0, 0, 2, 1))
	g16.SetGray16(0, 0, color.Gray16{200})
	g16.SetGray16(1, 0, color.Gray16{1000})
	if p := ToRGB(g16).Pix; !bytes.Equal(p, []uint8{200, 200, 200, 255, 255, 255}) {
		t.Errorf("Gray16: %v", p)
	}
	// CMYK with PIL's integer formula.
	cm := image.NewCMYK(image.Rect(0, 0, 1, 1))
	cm.Pix = []uint8{0, 128, 255, 64}
	// nk = 191; r = 191 - 0; g = 191 - muldiv(128,191)=191-96=95; b = 0
	if p := ToRGB(cm).Pix; !bytes.Equal(p, []uint8{191, 95, 0}) {
		t.Errorf("CMYK: %v", p)
	}
	// Sub-images keep their own origin.
	sub := noiseImage(8, 8).SubImage(image.Rect(2, 3, 5, 7))
	rgb := ToRGB(sub)
	if rgb.Rect != image.Rect(0, 0, 3, 4) {
		t.Fatalf("sub rect %v", rgb.Rect)
	}
	if got, want := colorRGB(rgb.At(1, 1)), colorRGB(sub.At(3, 4)); got != want {
		t.Errorf("sub pixel %v want %v", got, want)
	}
}

func TestGIFTransparentKeepsStoredColour(t *testing.T) {
	pal := image.NewPaletted(image.Rect(0, 0, 2, 1), color.Palette{color.RGBA{10, 20, 30, 255}, color.RGBA{200, 100, 50, 255}})
	pal.Pix = []uint8{0, 1}
	data := encodeWith(t, func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) })
	// Mark index 1 transparent in the graphic control extension.
	i := bytes.Index(data, []byte{0x21, 0xf9, 0x04})
	if i < 0 {
		// Insert one before the image descriptor.
		j := bytes.IndexByte(data[13+3*2:], 0x2c) + 13 + 3*2
		ext := []byte{0x21, 0xf9, 0x04, 0x01, 0, 0, 1, 0}
		data = append(data[:j:j], append(ext, data[j:]...)...)
	} else {
		data[i+3] |= 1
		data[i+6] = 1
	}
	img, _, err := DecodeBytes(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if p := ToRGB(img).Pix; !bytes.Equal(p, []uint8{10, 20, 30, 200, 100, 50}) {
		t.Errorf("got %v", p)
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pngHeader is a PNG signature + a valid IHDR claiming w x h RGB pixels,
// followed by an empty IEND (no pixel data at all).
func pngHeader(w, h uint32) []byte {
	out := []byte("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(data)))
		out = append(out, l[:]...)
		body := append([]byte(typ), data...)
		out = append(out, body...)
		binary.BigEndian.PutUint32(l[:], crc32.ChecksumIEEE(body))
		out = append(out, l[:]...)
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return out
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := encodeWith(t, func(b *bytes.Buffer) error { return png.Encode(b, noiseImage(64, 64)) })
	goodJPEG := encodeWith(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, noiseImage(64, 64), nil) })
	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"empty.png", nil, ErrEmpty, "0 bytes"},
		{"truncated.png", good[:len(good)/2], ErrTruncated, "truncated"},
		{"truncated.jpg", goodJPEG[:len(goodJPEG)/2], ErrTruncated, "truncated"},
		{"header-only.png", good[:20], ErrTruncated, "png header"},
		{"huge.png", pngHeader(20000, 20000), ErrTooLarge, "20000x20000"},
		{"wide.png", pngHeader(400000000, 1), ErrTooLarge, "400000000x1"},
		{"tiff.tif", []byte("II*\x00\x08\x00\x00\x00rest"), ErrUnsupported, "TIFF"},
		{"text.png", []byte("hello, this is not an image"), ErrUnsupported, "unrecognised"},
		{"svg.svg", []byte("<svg xmlns='http://www.w3.org/2000/svg'/>"), ErrUnsupported, "SVG"},
		{"garbage.jpg", append([]byte{0xff, 0xd8, 0xff}, bytes.Repeat([]byte{0x42}, 100)...), nil, ""},
	}
	for _, c := range cases {
		p := writeFile(t, dir, c.name, c.data)
		img, _, err := DecodeFile(p, Limits{})
		if err == nil || img != nil {
			t.Errorf("%s: decoded without error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", c.name, err)
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: error %q lacks %q", c.name, err, c.text)
		}
		// The same through Decode on a reader.
		if _, _, err := Decode(bytes.NewReader(c.data), Limits{}); err == nil {
			t.Errorf("%s: Decode accepted it", c.name)
		}
	}
	// Unreadable: missing file and a directory.
	for _, p := range []string{filepath.Join(dir, "missing.jpg"), dir} {
		if _, _, err := DecodeFile(p, Limits{}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", p, err)
		}
	}
	// Just under 20000x20000 passes the size check (then fails for lack of data).
	if _, _, err := DecodeBytes(pngHeader(19999, 20000), Limits{}); errors.Is(err, ErrTooLarge) || err == nil {
		t.Errorf("19999x20000: %v", err)
	}
	// A configured limit.
	if _, _, err := DecodeBytes(good, Limits{MaxPixels: 64*64 - 1}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxPixels: %v", err)
	}
	if _, _, err := DecodeBytes(good, Limits{MaxPixels: 64 * 64}); err != nil {
		t.Errorf("MaxPixels exactly: %v", err)
	}
	if _, _, err := DecodeBytes(good, Limits{MaxBytes: 10}); err != nil {
		t.Errorf("MaxBytes applies to readers and files only: %v", err)
	}
	if _, _, err := Decode(bytes.NewReader(good), Limits{MaxBytes: 10}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxBytes: %v", err)
	}
	// Huge JPEG and GIF headers are refused too.
	sof := []byte{0xff, 0xd8, 0xff, 0xc0, 0, 17, 8, 0xea, 0x60, 0xea, 0x60, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1}
	jfif := []byte{0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0}
	sos := []byte{0xff, 0xda, 0, 8, 1, 1, 0, 0, 0x3f, 0}
	for name, data := range map[string][]byte{
		"JFIF":         append(jfif, sof[2:]...),
		"SOF then SOS": append(append([]byte{}, sof...), sos...),
	} {
		if _, _, err := DecodeBytes(data, Limits{}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("60000x60000 JPEG header (%s): %v", name, err)
		}
	}
	gifHdr := []byte("GIF89a\xff\xff\xff\xff\x00\x00\x00\x3b")
	if _, _, err := DecodeBytes(gifHdr, Limits{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("65535x65535 GIF header: %v", err)
	}
}

func TestHugeHeaderRefusedWithoutAllocating(t *testing.T) {
	data := pngHeader(20000, 20000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if _, _, err := DecodeBytes(data, Limits{}); !errors.Is(err, ErrTooLarge) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	// Decoding would need 1.2 GB per call; the header check needs a few KB.
	if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
		t.Errorf("refusing a 20000x20000 header allocated %d bytes over 10 calls", d)
	}
}

func TestReadInfoFile(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "x.png", pngHeader(300, 200))
	info, err := ReadInfoFile(p)
	if err != nil || info.Format != "png" || info.Width != 300 || info.Height != 200 {
		t.Errorf("%+v %v", info, err)
	}
	if _, err := ReadInfoFile(writeFile(t, dir, "e.png", nil)); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
}

func TestReadInfoFileLargeHeader(t *testing.T) {
	// A JPEG whose frame header sits after 700 KB of APP2 segments (large
	// ICC profiles do this) and whose EXIF says orientation 6.
	j := jpegWithExif(t, quadrants(), tiffWithOrientation(6, binary.BigEndian))
	var pad []byte
	for i := 0; i < 12; i++ {
		seg := []byte{0xff, 0xe2, 0xff, 0xff}
		pad = append(pad, seg...)
		pad = append(pad, make([]byte, 0xffff-2)...)
	}
	// Insert after SOI and the APP1 segment.
	app1End := 2 + 2 + int(binary.BigEndian.Uint16(j[4:6]))
	data := append(append(append([]byte{}, j[:app1End]...), pad...), j[app1End:]...)
	p := writeFile(t, t.TempDir(), "big-header.jpg", data)
	info, err := ReadInfoFile(p)
	if err != nil || info.Format != "jpeg" || info.Width != 32 || info.Height != 64 || info.Orientation != 6 {
		t.Errorf("%+v %v", info, err)
	}
	img, info, err := DecodeFile(p, Limits{})
	if err != nil || img.Bounds().Dx() != 32 || !info.Oriented {
		t.Errorf("decode: %+v %v", info, err)
	}
}

func TestRGBDrawsLikeRGBA(t *testing.T) {
	src := ToRGB(noiseImage(17, 9))
	a := image.NewRGBA(image.Rect(0, 0, 17, 9))
	draw.Draw(a, a.Rect, src, image.Point{}, draw.Src)
	if string(a.Pix) != string(src.ToRGBA().Pix) {
		t.Error("draw.Draw from *RGB differs from ToRGBA")
	}
}

func TestYCbCrUpsamplingAllRatios(t *testing.T) {
	ratios := []image.YCbCrSubsampleRatio{
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420,
		image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
	}
	for _, r := range ratios {
		for _, sz := range [][2]int{{1, 1}, {2, 1}, {7, 5}, {8, 6}} {
			m := image.NewYCbCr(image.Rect(0, 0, sz[0], sz[1]), r)
			for i := range m.Y {
				m.Y[i] = uint8(17 * i)
			}
			for i := range m.Cb {
				m.Cb[i], m.Cr[i] = 90, 200
			}
			got := ToRGB(m)
			for y := 0; y < sz[1]; y++ {
				for x := 0; x < sz[0]; x++ {
					// Constant chroma: every ratio must give the plain
					// conversion of (Y, 90, 200).
					yy := int32(m.Y[m.YOffset(x, y)])
					want := [3]uint8{
						clip8(int(yy + (91881*72+32768)>>16)),
						clip8(int(yy + (-22554*-38+32768-46802*72)>>16)),
						clip8(int(yy + (116130*-38+32768)>>16)),
					}
					i := got.PixOffset(x, y)
					if [3]uint8(got.Pix[i:i+3]) != want {
						t.Fatalf("%v %v (%d,%d): %v want %v", r, sz, x, y, got.Pix[i:i+3], want)
					}
				}
			}
		}
	}
	// A chroma step is smoothed 3:1 across the boundary (4:2:2, one row).
	m := image.NewYCbCr(image.Rect(0, 0, 4, 1), image.YCbCrSubsampleRatio422)
	m.Cb[0], m.Cb[1] = 100, 200
	cb := make([]uint8, 4)
	upsampleChromaRow(m, m.Cb, 0, cb, make([]int32, 4))
	if want := []uint8{100, 125, 175, 200}; string(cb) != string(want) {
		t.Errorf("h2v1 step: %v want %v", cb, want)
	}
}

// FuzzDecodeBytes checks that no input makes Decode panic or return an
// image together with an error. The seeds (valid files of each format and
// corruptions of them) run with every `go test`.
func FuzzDecodeBytes(f *testing.F) {
	src := noiseImage(19, 11)
	var seeds [][]byte
	for _, enc := range []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return png.Encode(b, src) },
		func(b *bytes.Buffer) error { return jpeg.Encode(b, src, nil) },
		func(b *bytes.Buffer) error { return gif.Encode(b, src, nil) },
		func(b *bytes.Buffer) error { return bmp.Encode(b, src) },
	} {
		var buf bytes.Buffer
		if err := enc(&buf); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	seeds = append(seeds, solidWebP(5, 3, color.NRGBA{1, 2, 3, 255}, nil))
	for _, s := range seeds {
		f.Add(s)
		for i := 0; i < 24; i++ {
			c := append([]byte{}, s...)
			p := (i*7919 + 13) % len(c)
			c[p] ^= byte(1 + i*37)
			f.Add(c)
			f.Add(c[:len(c)*(i+1)/25])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, _, err := DecodeBytes(data, Limits{MaxPixels: 1 << 20})
		if (err == nil) == (img == nil) {
			t.Fatalf("img %v with err %v", img != nil, err)
		}
		if err == nil {
			ToRGB(img)
		}
	})
}
