package clip

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/hfhub"
	"github.com/imagescope/imagescope/internal/testutil"
)

// copyFiles copies the named files of src into a new temporary directory.
func copyFiles(t *testing.T, src string, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestPyTorchCheckpointsMatchSafetensors: the .bin twins written by
// torch.save (scripts/gen-testdata) give the same embeddings as the
// safetensors files of the same weights, and the reference numbers.
func TestPyTorchCheckpointsMatchSafetensors(t *testing.T) {
	r := ownRef(t)
	ix := loadIndex(t, r)
	ctx := context.Background()
	px := [][]float32{cropPixels(t, r, ix.Images[0].CropOC), cropPixels(t, r, ix.Images[2].CropOC)}
	ids := [][]int32{{49406, 320, 1125, 539, 320, 2368, 49407}}
	for _, c := range []struct {
		model, layout string
		bin           []string // the .bin checkpoint and the files it needs, nothing else
	}{
		{"tiny-clip-quickgelu", LayoutOpenCLIP, []string{"open_clip_config.json", "open_clip_pytorch_model.bin"}},
		{"tiny-clip-gelu", LayoutHF, []string{"config.json", "preprocessor_config.json", "pytorch_model.bin"}},
	} {
		t.Run(c.model, func(t *testing.T) {
			src := r.path(c.model)
			st, err := loadLocal(src, Options{Threads: 1, Layout: c.layout})
			if err != nil {
				t.Fatal(err)
			}
			dir := copyFiles(t, src, c.bin...)
			bin, err := loadLocal(dir, Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if bin.Layout() != c.layout {
				t.Errorf("layout %s, want %s", bin.Layout(), c.layout)
			}
			a, _ := st.EmbedPixels(ctx, px)
			b, err := bin.EmbedPixels(ctx, px)
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "image embeds .bin vs safetensors", flat(b), flat(a), 0)
			checkClose(t, "image embeds .bin vs reference", b[0], readBin(t, r, ix, c.model+"/image_embeds.bin")[:bin.Dim()], 1e-5)
			ta, _ := st.EmbedTokenIDs(ctx, ids)
			tb, err := bin.EmbedTokenIDs(ctx, ids)
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "text embeds .bin vs safetensors", tb[0], ta[0], 0)
			if bin.LogitScale() != st.LogitScale() {
				t.Errorf("logit scale %v vs %v", bin.LogitScale(), st.LogitScale())
			}
		})
	}
}

// TestHubPrefersSafetensorsThenBin: a repo with both downloads only the
// safetensors file; a repo with only a .bin loads from it.
func TestHubPrefersSafetensorsThenBin(t *testing.T) {
	src := testutil.CLIP(t, "tiny-clip-gelu")
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"both", []string{"config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"}, "model.safetensors"},
		{"bin only", []string{"config.json", "preprocessor_config.json", "pytorch_model.bin"}, "pytorch_model.bin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, got := fakeHub(t, copyFiles(t, src, c.files...))
			m, err := Load(ctx, "org/tiny-clip", Options{Threads: 1,
				Hub: hfhub.NewClient(hfhub.Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Getenv: func(string) string { return "" }})})
			if err != nil {
				t.Fatal(err)
			}
			if m.Dim() == 0 {
				t.Fatal("no model")
			}
			var weights []string
			for _, n := range got() {
				if strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".bin") {
					weights = append(weights, n)
				}
			}
			if !slices.Equal(weights, []string{c.want}) {
				t.Errorf("downloaded weights %v, want only %s", weights, c.want)
			}
		})
	}
}

// zipWith writes a torch.save-like archive holding data.pkl = pkl.
func zipWith(t *testing.T, pkl []byte, extra map[string][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, b []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	add("archive/data.pkl", pkl)
	add("archive/byteorder", []byte("little"))
	for n, b := range extra {
		add("archive/"+n, b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pytorch_model.bin")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPyTorchRefusesOtherGlobals: a pickle naming anything but the tensor
// machinery is refused before anything is built, and nothing runs.
func TestPyTorchRefusesOtherGlobals(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	cases := map[string]string{
		// os.system("touch MARKER"), protocol 2 GLOBAL + REDUCE.
		"os.system": "\x80\x02cos\nsystem\nq\x00X" + le32(len("touch "+marker)) + "touch " + marker + "\x85R.",
		// builtins.eval through STACK_GLOBAL (protocol 4).
		"builtins.eval": "\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x041+1\x85R.",
		// An allowed-looking module with another name.
		"torch._utils._rebuild_tensor_from_python": "\x80\x02ctorch._utils\n_rebuild_tensor_from_python\n).",
		// A state dict whose value is built by subprocess.
		"subprocess.Popen": "\x80\x02}(X\x01\x00\x00\x00acsubprocess\nPopen\n)Ru.",
		// A storage class called as a function.
		"torch.FloatStorage": "\x80\x02ctorch\nFloatStorage\n)R.",
	}
	for what, pkl := range cases {
		t.Run(what, func(t *testing.T) {
			_, err := openPyTorch(zipWith(t, []byte(pkl), nil))
			if !errors.Is(err, ErrUnsafePickle) || !strings.Contains(err.Error(), what) {
				t.Errorf("err %v, want ErrUnsafePickle naming %s", err, what)
			}
		})
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("pickled code ran")
	}
	// Through the model loader too, with a clear message.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), mustRead(t, testutil.CLIP(t, "tiny-clip-gelu", "config.json")), 0o644)
	os.Rename(zipWith(t, []byte(cases["os.system"]), nil), filepath.Join(dir, "pytorch_model.bin"))
	if _, err := Load(context.Background(), dir, Options{}); !errors.Is(err, ErrUnsafePickle) || !strings.Contains(err.Error(), "pytorch_model.bin") {
		t.Errorf("Load: %v", err)
	}
}

func TestPyTorchMalformed(t *testing.T) {
	cases := map[string]struct {
		file []byte
		want string
	}{
		"legacy format": {[]byte("\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."), "not a zip archive"},
		"truncated":     {nil, "truncated pickle"},
		"not a dict":    {[]byte("\x80\x02K\x07."), "not a state dict"},
		"missing storage": {[]byte("\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89NtRs."),
			"storage 0 missing"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.bin")
			if name == "legacy format" {
				os.WriteFile(p, c.file, 0o644)
			} else {
				p = zipWith(t, c.file, nil)
			}
			if _, err := openPyTorch(p); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

func le32(n int) string {
	return string([]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)})
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
