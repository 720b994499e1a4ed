package clip

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func cosine(a, b []float32) float64 {
	var d, na, nb float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return d / math.Sqrt(na*nb)
}

// hugePNG returns a valid PNG header claiming w x h pixels (no pixel data).
func hugePNG(t *testing.T, w, h uint32) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// IHDR chunk: length(4) "IHDR"(4) at offset 8; data at 16.
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestLoadAndEmbedEndToEnd(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		ix := loadIndex(t, r)
		ctx := context.Background()
		qdir := r.path("tiny-clip-quickgelu")
		for _, name := range []string{"tiny-clip-quickgelu", "tiny-clip-gelu"} {
			t.Run(name, func(t *testing.T) {
				m, err := Load(ctx, r.path(name), Options{Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				if m.Tokenizer() == nil {
					tok, err := LoadTokenizer(qdir)
					if err != nil {
						t.Fatal(err)
					}
					m.SetTokenizer(tok)
				}
				// Images from the source files through the HF preprocessing.
				var paths []string
				for _, f := range ix.ImageOrder {
					paths = append(paths, r.path(f))
				}
				dir := t.TempDir()
				bad := map[string]string{
					"zero.png":    "",
					"trunc.png":   "\x89PNG\r\n\x1a\n\x00\x00",
					"text.txt":    "not an image at all",
					"huge.png":    string(hugePNG(t, 20000, 20000)),
					"missing.jpg": "-",
				}
				badIdx := map[int]string{}
				for n, content := range bad {
					p := filepath.Join(dir, n)
					if content != "-" {
						if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					badIdx[len(paths)] = n
					paths = append(paths, p)
				}
				// Put a bad one first too, so errors do not shift results.
				paths = append([]string{filepath.Join(dir, "zero.png")}, paths...)
				res, err := m.EmbedImageFiles(ctx, paths)
				if err != nil {
					t.Fatal(err)
				}
				if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "zero.png") {
					t.Errorf("zero-byte file: err %v", res[0].Err)
				}
				res = res[1:]
				want := readBin(t, r, ix, name+"/image_embeds.bin")
				wantHF := readBin(t, r, ix, name+"/image_embeds_hf_preprocessing.bin")
				D := m.Dim()
				for i, f := range ix.ImageOrder {
					if res[i].Err != nil {
						t.Errorf("%s: %v", f, res[i].Err)
						continue
					}
					ref := want[i*D : (i+1)*D]
					for k, d := range ix.HFDiffers {
						if d == f {
							ref = wantHF[k*D : (k+1)*D]
						}
					}
					if strings.HasSuffix(f, ".jpg") {
						// Go's JPEG decoder differs from libjpeg's by a few levels.
						if c := cosine(res[i].Vector, ref); c < 0.995 {
							t.Errorf("%s: cosine %v < 0.995", f, c)
						}
						continue
					}
					checkClose(t, f, res[i].Vector, ref, 1e-5)
				}
				for i, n := range badIdx {
					if res[i].Err == nil || res[i].Vector != nil {
						t.Errorf("%s: want an error, got %v", n, res[i].Err)
						continue
					}
					if !strings.Contains(res[i].Err.Error(), n) {
						t.Errorf("%s: error does not name the file: %v", n, res[i].Err)
					}
				}

				// Decoded images through EmbedImages, with a nil item.
				f, err := os.Open(paths[1+2]) // square
				if err != nil {
					t.Fatal(err)
				}
				img, err := png.Decode(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				ri, err := m.EmbedImages(ctx, []image.Image{nil, img})
				if err != nil {
					t.Fatal(err)
				}
				if ri[0].Err == nil {
					t.Error("nil image: no error")
				}
				checkClose(t, "EmbedImages", ri[1].Vector, want[2*D:3*D], 1e-5)

				// Texts through the tokenizer.
				tf := loadTokens(t, r)
				var texts []string
				var idx []int
				for i, s := range tf.Strings {
					texts = append(texts, s.Text)
					idx = append(idx, i)
				}
				rt, err := m.EmbedTexts(ctx, texts)
				if err != nil {
					t.Fatal(err)
				}
				wantT := readBin(t, r, ix, name+"/text_embeds.bin")
				tD := m.Dim()
				for _, i := range idx {
					s := tf.Strings[i]
					if strings.TrimSpace(s.Text) == "" {
						if !errors.Is(rt[i].Err, ErrEmptyText) {
							t.Errorf("text %d %q: err %v, want ErrEmptyText", i, s.Text, rt[i].Err)
						}
						continue
					}
					if rt[i].Err != nil {
						t.Errorf("text %d: %v", i, rt[i].Err)
						continue
					}
					checkClose(t, "text "+s.Text, rt[i].Vector, wantT[i*tD:(i+1)*tD], 1e-5)
				}
			})
		}
	})
}

// TestConcurrentUse: one Model serves concurrent callers (run under -race).
func TestConcurrentUse(t *testing.T) {
	r := ownRef(t)
	m, err := Load(context.Background(), r.path("tiny-clip-quickgelu"), Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	px := [][]float32{cropPixels(t, r, "preprocess/square_224x224.open_clip.crop.png")}
	want, _ := m.EmbedPixels(context.Background(), px)
	wantT, _ := m.EmbedTexts(context.Background(), []string{"a photo of a cat"})
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			e, err := m.EmbedPixels(context.Background(), px)
			if err == nil && maxAbsDiff(e[0], want[0]) != 0 {
				err = errors.New("image embedding differs under concurrency")
			}
			if err == nil {
				r, err2 := m.EmbedTexts(context.Background(), []string{"a photo of a cat"})
				if err2 != nil || maxAbsDiff(r[0].Vector, wantT[0].Vector) != 0 {
					err = errors.New("text embedding differs under concurrency")
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	// A cancelled context stops the call.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.EmbedPixels(ctx, px); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
