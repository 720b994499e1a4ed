package gallery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeEmbedder derives vectors from content hashes. It decodes each image
// fully, so corrupt files fail like they would with CLIP.
type fakeEmbedder struct {
	id    string
	dim   int
	delay time.Duration
	calls atomic.Int64
}

func (f *fakeEmbedder) ModelID() string { return f.id }
func (f *fakeEmbedder) Dim() int        { return f.dim }

func hashVec(b []byte, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		h := sha256.Sum256(append([]byte{byte(i)}, b...))
		v[i] = float32(int(binary.LittleEndian.Uint16(h[:]))-32768) / 1000
	}
	return v
}

func (f *fakeEmbedder) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	f.calls.Add(int64(len(paths)))
	vecs := make([][]float32, len(paths))
	errs := make([]error, len(paths))
	for i, p := range paths {
		time.Sleep(f.delay)
		b, err := os.ReadFile(p)
		if err != nil {
			errs[i] = err
			continue
		}
		if _, _, err := image.Decode(bytes.NewReader(b)); err != nil {
			errs[i] = fmt.Errorf("decode %s: %w", p, err)
			continue
		}
		vecs[i] = hashVec(b, f.dim)
	}
	return vecs, errs, nil
}

func (f *fakeEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		time.Sleep(f.delay)
		out[i] = hashVec([]byte("text:"+t), f.dim)
	}
	return out, nil
}

type fakeCaptioner struct {
	delay time.Duration
	calls atomic.Int64
	fail  string // base name that fails
}

func (c *fakeCaptioner) Caption(ctx context.Context, path string) (string, error) {
	c.calls.Add(1)
	time.Sleep(c.delay)
	if c.fail != "" && filepath.Base(path) == c.fail {
		return "", errors.New("server said 500")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return "a photo numbered " + hex.EncodeToString(h[:4]), nil
}

func writePNG(t testing.TB, path string, seed uint64, w, h int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(256))
	}
	img.Set(0, 0, color.NRGBA{R: uint8(seed), A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeGallery writes n small PNGs (some in a subfolder), one garbage file
// and one truncated PNG.
func makeGallery(t testing.TB, dir string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		sub := ""
		if i%3 == 0 {
			sub = "sub"
		}
		writePNG(t, filepath.Join(dir, sub, fmt.Sprintf("img%03d.png", i)), uint64(i), 8+i%5, 6+i%4)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.png"), []byte("this is not an image at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	writePNG(t, filepath.Join(dir, "truncated.png"), 999, 20, 20)
	b, _ := os.ReadFile(filepath.Join(dir, "truncated.png"))
	if err := os.WriteFile(filepath.Join(dir, "truncated.png"), b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
}

func listItems(t testing.TB, dir string) []Item {
	t.Helper()
	var items []Item
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		items = append(items, Item{Name: filepath.ToSlash(rel), Path: p})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.Name, b.Name) })
	return items
}

func indexDir(t testing.TB, dbPath, dir string, emb *fakeEmbedder, capt *fakeCaptioner) *Summary {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opt := IndexOptions{Embedder: emb, EmbedBatch: 3, CaptionWorkers: 3}
	if capt != nil {
		opt.Captioner, opt.CaptionModel, opt.CaptionPrompt = capt, "fake-captioner", "Describe the image in one sentence."
	}
	sum, err := db.Index(ctx, listItems(t, dir), opt)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// dump renders a DB's whole content as text (for equality checks).
func dump(t testing.TB, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sb strings.Builder
	for _, q := range []string{
		`SELECT 'meta', key, value FROM meta WHERE key <> 'generation' ORDER BY key`, // generation counts history
		`SELECT 'image', name, pos, path, hash, size, mtime, width, height FROM images ORDER BY name`,
		`SELECT 'emb', i.name, e.model, e.dtype, hex(e.vec) FROM image_embeddings e JOIN images i ON i.id = e.image_id ORDER BY i.name, e.model`,
		`SELECT 'set', key, captioner, prompt_hash, prompt FROM caption_sets ORDER BY key`,
		`SELECT 'cap', i.name, c.key, c.text FROM captions c JOIN images i ON i.id = c.image_id ORDER BY i.name, c.key`,
		`SELECT 'capemb', i.name, e.key, e.model, e.dtype, hex(e.vec) FROM caption_embeddings e JOIN images i ON i.id = e.image_id ORDER BY i.name, e.key`,
		`SELECT 'fail', name, path, stage, reason FROM failures ORDER BY name`,
		`SELECT 'orphans', (SELECT COUNT(*) FROM image_embeddings WHERE image_id NOT IN (SELECT id FROM images)) + (SELECT COUNT(*) FROM captions WHERE image_id NOT IN (SELECT id FROM images)) + (SELECT COUNT(*) FROM caption_embeddings WHERE image_id NOT IN (SELECT id FROM images))`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&sb, vals...)
		}
		rows.Close()
	}
	return sb.String()
}

func TestIndexLoadAndFailures(t *testing.T) {
	dir := t.TempDir()
	makeGallery(t, filepath.Join(dir, "g"), 10)
	dbPath := filepath.Join(dir, "db", "g.db")
	emb := &fakeEmbedder{id: "fake/clip", dim: 8}
	capt := &fakeCaptioner{fail: "img004.png"}
	sum := indexDir(t, dbPath, filepath.Join(dir, "g"), emb, capt)
	if sum.Total != 12 || sum.Done != 9 || sum.Failed != 3 || sum.UpToDate != 0 {
		t.Fatalf("summary %+v", sum)
	}
	stages := map[string]string{}
	for _, f := range sum.Failures {
		stages[f.Name] = f.Stage
	}
	if stages["garbage.png"] != "decode" || stages["truncated.png"] != "embed" || stages["img004.png"] != "caption" {
		t.Fatalf("failures %v", sum.Failures)
	}
	ctx := context.Background()
	db, err := Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ix, info, err := db.LoadWithInfo(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// img004 keeps its image embedding (its caption failed); truncated has a
	// row but no embedding; garbage has no row.
	if ix.Len() != 10 || info.Skipped != 1 || info.MissingCaptions != 1 || !ix.HasCaption {
		t.Fatalf("loaded %d images, info %+v", ix.Len(), info)
	}
	if ix.Names[0] != "img001.png" || ix.Names[9] != "sub/img009.png" {
		t.Fatalf("order %v", ix.Names)
	}
	for i := 0; i < ix.Len(); i++ {
		var s float64
		for _, x := range ix.Vector(i) {
			s += float64(x) * float64(x)
		}
		if math.Abs(s-1) > 1e-5 {
			t.Fatalf("image %d not normalised: %v", i, s)
		}
	}
	if c, ok := ix.CaptionText("img001.png"); !ok || !strings.HasPrefix(c, "a photo numbered") {
		t.Fatalf("caption %q %v", c, ok)
	}
	if _, err := db.Load(ctx, "other/model", ""); !errors.Is(err, ErrModelMismatch) {
		t.Fatalf("other model: %v", err)
	}
	if err := db.BindModel(ctx, "fake/clip", 16); !errors.Is(err, ErrModelMismatch) || !strings.Contains(err.Error(), "dimension 8") {
		t.Fatalf("other dim: %v", err)
	}
	fs, _ := db.Failures(ctx)
	if len(fs) != 3 {
		t.Fatalf("recorded failures %v", fs)
	}
	noCap, err := db.Load(ctx, "", NoCaptions)
	if err != nil || noCap.HasCaption {
		t.Fatalf("no captions: %v %v", noCap.HasCaption, err)
	}
}

func TestIncrementalReindex(t *testing.T) {
	dir := t.TempDir()
	g := filepath.Join(dir, "g")
	makeGallery(t, g, 9)
	dbPath := filepath.Join(dir, "g.db")
	emb := &fakeEmbedder{id: "fake/clip", dim: 8}
	capt := &fakeCaptioner{}
	indexDir(t, dbPath, g, emb, capt)
	first := dump(t, dbPath)

	// Nothing changed: nothing recomputed (the truncated image is retried).
	emb.calls.Store(0)
	capt.calls.Store(0)
	sum := indexDir(t, dbPath, g, emb, capt)
	if sum.UpToDate != 9 || sum.Done != 0 || emb.calls.Load() != 1 || capt.calls.Load() != 0 {
		t.Fatalf("no-op re-index: %+v, %d embeds, %d captions", sum, emb.calls.Load(), capt.calls.Load())
	}
	if got := dump(t, dbPath); got != first {
		t.Fatalf("no-op re-index changed the DB:\n%s\nvs\n%s", got, first)
	}

	// Add one, change one, delete one, touch one (same content).
	writePNG(t, filepath.Join(g, "new.png"), 500, 9, 9)
	writePNG(t, filepath.Join(g, "img001.png"), 501, 9, 9)
	if err := os.Remove(filepath.Join(g, "img002.png")); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(g, "img004.png"), later, later); err != nil {
		t.Fatal(err)
	}
	emb.calls.Store(0)
	capt.calls.Store(0)
	sum = indexDir(t, dbPath, g, emb, capt)
	if sum.Done != 2 || sum.Removed != 1 || sum.UpToDate != 7 {
		t.Fatalf("incremental: %+v", sum)
	}
	if emb.calls.Load() != 3 || capt.calls.Load() != 2 { // new, changed (+ truncated image retried)
		t.Fatalf("incremental: %d embeds, %d captions", emb.calls.Load(), capt.calls.Load())
	}
	// The result equals a fresh index of the new folder state.
	fresh := filepath.Join(dir, "fresh.db")
	indexDir(t, fresh, g, &fakeEmbedder{id: "fake/clip", dim: 8}, &fakeCaptioner{})
	if a, b := dump(t, dbPath), dump(t, fresh); a != b {
		t.Fatalf("incremental DB differs from a fresh one:\n%s\nvs\n%s", a, b)
	}
	// Without a captioner, existing captions stay, nothing is recomputed.
	emb.calls.Store(0)
	sum = indexDir(t, dbPath, g, emb, nil)
	if sum.Captions || sum.Done != 0 || emb.calls.Load() != 1 {
		t.Fatalf("no captioner: %+v %d", sum, emb.calls.Load())
	}
}

// TestCrashChild is the indexing subprocess of TestCrashSafety.
func TestCrashChild(t *testing.T) {
	dbPath, dir := os.Getenv("GALLERY_CRASH_DB"), os.Getenv("GALLERY_CRASH_DIR")
	if dbPath == "" {
		t.Skip("subprocess of TestCrashSafety")
	}
	indexDir(t, dbPath, dir, &fakeEmbedder{id: "fake/clip", dim: 8, delay: 2 * time.Millisecond}, &fakeCaptioner{delay: 5 * time.Millisecond})
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns subprocesses")
	}
	dir := t.TempDir()
	g := filepath.Join(dir, "g")
	makeGallery(t, g, 60)
	want := filepath.Join(dir, "want.db")
	indexDir(t, want, g, &fakeEmbedder{id: "fake/clip", dim: 8}, &fakeCaptioner{})

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var dbPath string
	run := func(kill time.Duration) (killed bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "GALLERY_CRASH_DB="+dbPath, "GALLERY_CRASH_DIR="+g)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var timer <-chan time.Time
		if kill > 0 {
			timer = time.After(kill)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("child failed: %v\n%s", err, out.String())
			}
			return false
		case <-timer:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			err := <-done
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return true
				}
			}
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out.String())
			}
			return false
		}
	}
	// Kill moments are drawn within the time an uninterrupted child takes
	// here (a race-enabled or loaded machine is many times slower than the
	// usual ~0.2s), so that kills land mid-run and a run can still finish.
	dbPath = filepath.Join(dir, "timing.db")
	start := time.Now()
	run(0)
	full := max(time.Since(start), 50*time.Millisecond)
	// Episodes: a fresh DB, killed at random moments until a run gets to
	// the end; then it must equal the uninterrupted DB.
	kills := 0
	for ep := 0; kills < 10 && ep < 20; ep++ {
		dbPath = filepath.Join(dir, fmt.Sprintf("crash%d.db", ep))
		var progress []int
		for run(time.Duration(rng.Int64N(int64(full)))) {
			kills++
			progress = append(progress, countRows(t, dbPath))
		}
		if a, b := dump(t, dbPath), dump(t, want); a != b {
			t.Fatalf("episode %d: DB after %d kills differs from an uninterrupted run:\n%s\nvs\n%s", ep, len(progress), a, b)
		}
		t.Logf("episode %d: images committed after each kill: %v", ep, progress)
	}
	if kills < 10 {
		t.Fatalf("only %d runs were killed mid-way", kills)
	}
}

func countRows(t testing.TB, path string) int {
	if _, err := os.Stat(path); err != nil {
		return 0
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM image_embeddings`).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0
		}
		t.Fatal(err)
	}
	return n
}

// cancellingCaptioner cancels the run after a few captions.
type cancellingCaptioner struct {
	fakeCaptioner
	after  int64
	cancel context.CancelFunc
}

func (c *cancellingCaptioner) Caption(ctx context.Context, path string) (string, error) {
	if c.calls.Load() >= c.after {
		c.cancel()
	}
	return c.fakeCaptioner.Caption(ctx, path)
}

func TestIndexCancelKeepsFinishedWork(t *testing.T) {
	dir := t.TempDir()
	g := filepath.Join(dir, "g")
	makeGallery(t, g, 30)
	dbPath := filepath.Join(dir, "g.db")
	ctx, cancel := context.WithCancel(context.Background())
	db, err := Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	capt := &cancellingCaptioner{after: 10, cancel: cancel}
	capt.delay = time.Millisecond
	sum, err := db.Index(ctx, listItems(t, g), IndexOptions{Embedder: &fakeEmbedder{id: "fake/clip", dim: 8}, Captioner: capt, CaptionModel: "fake-captioner", CaptionPrompt: "Describe the image in one sentence.", CaptionWorkers: 2})
	db.Close()
	if !errors.Is(err, context.Canceled) || sum == nil || sum.Done >= 30 {
		t.Fatalf("cancelled run: %v %+v", err, sum)
	}
	// Finishing the job gives the same DB as one uninterrupted run.
	indexDir(t, dbPath, g, &fakeEmbedder{id: "fake/clip", dim: 8}, &fakeCaptioner{})
	want := filepath.Join(dir, "want.db")
	indexDir(t, want, g, &fakeEmbedder{id: "fake/clip", dim: 8}, &fakeCaptioner{})
	if a, b := dump(t, dbPath), dump(t, want); a != b {
		t.Fatalf("resumed DB differs:\n%s\nvs\n%s", a, b)
	}
}
