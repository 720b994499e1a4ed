package gallery

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/internal/npy"
)

func writeRefDB(t testing.TB, dir string, names []string, dim int, captions any) (img, capv []float32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	n := len(names)
	img = make([]float32, n*dim)
	capv = make([]float32, n*dim)
	for _, m := range [][]float32{img, capv} {
		for i := 0; i < n; i++ {
			row := m[i*dim : (i+1)*dim]
			for j := range row {
				row[j] = float32(rng.NormFloat64())
			}
			l2.Normalize(row)
		}
	}
	mustWrite := func(name string, f func(*os.File) error) {
		fh, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f(fh); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	mustWrite(NPYNames, func(f *os.File) error { return npy.WriteStrings(f, names) })
	mustWrite(NPYImageEmbeddings, func(f *os.File) error { return npy.WriteMatrix(f, img, n, dim) })
	mustWrite(NPYCaptionEmbeddings, func(f *os.File) error { return npy.WriteMatrix16(f, capv, n, dim) })
	b, _ := json.Marshal(captions)
	if err := os.WriteFile(filepath.Join(dir, NPYCaptions), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return img, capv
}

func TestNPYRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	names := []string{"dev-1-0-img0", "dev-2-1-img1", "ünï", "000000001001.jpg"}
	caps := map[string]string{}
	for _, n := range names {
		caps[n] = "a caption of " + n + ` with "quotes"`
	}
	img, capv := writeRefDB(t, src, names, 16, caps)
	db, err := Open(ctx, filepath.Join(t.TempDir(), "imp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sum, err := db.ImportNPY(ctx, src, ImportOptions{ClipModel: "openai/clip-vit-base-patch32"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Images != 4 || sum.Dim != 16 || !sum.Captions {
		t.Fatalf("summary %+v", sum)
	}
	ix, err := db.Load(ctx, "openai/clip-vit-base-patch32", "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ix.Names, names) || !ix.HasCaption {
		t.Fatalf("names %v", ix.Names)
	}
	out := t.TempDir()
	if _, err := db.ExportNPY(ctx, out, ""); err != nil {
		t.Fatal(err)
	}
	gotNames, err := npy.ReadStringsFile(filepath.Join(out, NPYNames))
	if err != nil || !slices.Equal(gotNames, names) {
		t.Fatalf("exported names %v %v", gotNames, err)
	}
	for _, f := range []struct {
		file string
		want []float32
		tol  float64
	}{{NPYImageEmbeddings, img, 1e-6}, {NPYCaptionEmbeddings, capv, 2e-3}} {
		got, r, c, err := npy.ReadMatrixFile(filepath.Join(out, f.file))
		if err != nil || r != 4 || c != 16 {
			t.Fatalf("%s: %dx%d %v", f.file, r, c, err)
		}
		for i := range got {
			if math.Abs(float64(got[i]-f.want[i])) > f.tol {
				t.Fatalf("%s value %d: %v vs %v", f.file, i, got[i], f.want[i])
			}
		}
	}
	var gotCaps map[string]string
	b, _ := os.ReadFile(filepath.Join(out, NPYCaptions))
	if err := json.Unmarshal(b, &gotCaps); err != nil || len(gotCaps) != 4 || gotCaps["ünï"] != caps["ünï"] {
		t.Fatalf("captions %v %v", gotCaps, err)
	}
	// The object keeps name-list order.
	if strings.Index(string(b), "dev-2-1") > strings.Index(string(b), "000000001001") {
		t.Fatalf("caption order: %s", b)
	}
	// A list of captions is accepted too, and a different CLIP model refused.
	src2 := t.TempDir()
	writeRefDB(t, src2, names, 16, []string{"a", "b", "c", "d"})
	if _, err := db.ImportNPY(ctx, src2, ImportOptions{ClipModel: "other/model"}); err == nil || !strings.Contains(err.Error(), "CLIP model") {
		t.Fatalf("other model: %v", err)
	}
}

func TestNPYImportRefusals(t *testing.T) {
	ctx := context.Background()
	names := []string{"a", "b", "c"}
	caps := map[string]string{"a": "x", "b": "y", "c": "z"}
	for _, tc := range []struct {
		name   string
		break_ func(dir string)
		want   string
	}{
		{"int dtype", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, NPYImageEmbeddings))
			os.WriteFile(filepath.Join(dir, NPYImageEmbeddings), []byte(strings.Replace(string(b), "<f4", "<i4", 1)), 0o644)
		}, "not a float"},
		{"count mismatch", func(dir string) {
			f, _ := os.Create(filepath.Join(dir, NPYNames))
			npy.WriteStrings(f, []string{"a", "b"})
			f.Close()
		}, "has 3 rows but"},
		{"caption dim", func(dir string) {
			f, _ := os.Create(filepath.Join(dir, NPYCaptionEmbeddings))
			npy.WriteMatrix(f, make([]float32, 3*5), 3, 5)
			f.Close()
		}, "want 3x8"},
		{"names not strings", func(dir string) {
			f, _ := os.Create(filepath.Join(dir, NPYNames))
			npy.WriteMatrix(f, make([]float32, 3), 3, 1)
			f.Close()
		}, "unicode string array"},
		{"missing caption", func(dir string) {
			os.WriteFile(filepath.Join(dir, NPYCaptions), []byte(`{"a":"x","b":"y"}`), 0o644)
		}, `no caption for image "c"`},
		{"duplicate name", func(dir string) {
			f, _ := os.Create(filepath.Join(dir, NPYNames))
			npy.WriteStrings(f, []string{"a", "b", "a"})
			f.Close()
		}, "appears at 0 and 2"},
		{"caption json without embeddings", func(dir string) {
			os.Remove(filepath.Join(dir, NPYCaptionEmbeddings))
		}, "come together"},
		{"nan", func(dir string) {
			f, _ := os.Create(filepath.Join(dir, NPYImageEmbeddings))
			m := make([]float32, 24)
			for i := range m {
				m[i] = 1
			}
			m[9] = float32(math.NaN())
			npy.WriteMatrix(f, m, 3, 8)
			f.Close()
		}, "row 1 (b) holds a non-finite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeRefDB(t, dir, names, 8, caps)
			tc.break_(dir)
			dbPath := filepath.Join(t.TempDir(), "x.db")
			db, err := Open(ctx, dbPath)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_, err = db.ImportNPY(ctx, dir, ImportOptions{ClipModel: "m"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			st, err := db.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Images != 0 || st.ClipModel != "" {
				t.Fatalf("refused import wrote something: %+v", st)
			}
		})
	}
}
