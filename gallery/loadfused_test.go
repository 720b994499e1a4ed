package gallery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imagescope/imagescope/vindex"
)

// Loading with several readers gives the same index as one reader, and a
// fused load gives the same rows as loading unfused and fusing, including
// images without a caption (the caption term is then 0).
func TestLoadWithReadersAndFuse(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	n, dim := 5000, 8
	names := make([]string, n)
	caps := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("img%05d.jpg", i)
		caps[names[i]] = "caption " + names[i]
	}
	writeRefDB(t, src, names, dim, caps)
	db, err := Open(ctx, filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ImportNPY(ctx, src, ImportOptions{ClipModel: "test/clip"}); err != nil {
		t.Fatal(err)
	}
	// Some images without a caption vector.
	if _, err := db.sql.ExecContext(ctx, `DELETE FROM caption_embeddings WHERE image_id % 7 = 3`); err != nil {
		t.Fatal(err)
	}
	one, info1, err := db.LoadWith(ctx, LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	three, info3, err := db.LoadWith(ctx, LoadOptions{Threads: 3})
	if err != nil {
		t.Fatal(err)
	}
	if info1 != info3 || !slices.Equal(one.Names, three.Names) || !slices.Equal(one.Image, three.Image) || !slices.Equal(one.Caption, three.Caption) {
		t.Fatalf("one reader and three readers load different indexes: %+v vs %+v", info1, info3)
	}
	if info1.MissingCaptions == 0 || info1.Images != n {
		t.Fatalf("info %+v", info1)
	}
	const tau = 0.15
	fused, infoF, err := db.LoadWith(ctx, LoadOptions{Threads: 2, Fuse: true, Tau: tau, Compact: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := one.Fuse(tau); err != nil {
		t.Fatal(err)
	}
	if infoF != info1 || !fused.Fused || fused.FusedTau != tau || fused.HasCaption || !slices.Equal(fused.Image, one.Image) {
		t.Fatalf("fused load differs from load + Fuse (info %+v)", infoF)
	}
	if fused.CompactBytes() == 0 {
		t.Fatal("no compact copy built")
	}
	if c, ok := fused.CaptionText(names[0]); !ok || c != caps[names[0]] {
		t.Fatalf("caption text %q %v", c, ok)
	}
	q := []vindex.Query{{Descriptions: [][]float32{one.Image[5*dim : 6*dim]}, Tau: tau}}
	a, err := fused.Search(ctx, q, 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := one.Search(ctx, q, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0], b[0]) {
		t.Fatalf("compact fused search %v, exact %v", a[0], b[0])
	}
	if _, _, err := db.LoadWith(ctx, LoadOptions{Fuse: true, Tau: 2}); err == nil {
		t.Fatal("tau 2 accepted")
	}
}

// BenchmarkLoad reads a 50k-image DB (768-d image and caption vectors,
// float32) the way search and serve do: unfused, and fused with the
// compact copy.
func BenchmarkLoad(b *testing.B) {
	n, dim := 50_000, 768
	if testing.Short() {
		n = 10_000
	}
	src := b.TempDir()
	names := make([]string, n)
	caps := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("img%06d.jpg", i)
		caps[names[i]] = "a caption"
	}
	writeRefDB(b, src, names, dim, caps)
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ImportNPY(ctx, src, ImportOptions{ClipModel: "bench/clip"}); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opt  LoadOptions
	}{{"unfused", LoadOptions{}}, {"fused+compact", LoadOptions{Fuse: true, Tau: 0.15, Compact: true}}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := db.LoadWith(ctx, c.opt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// The search cache is used only while the DB and the options are
// unchanged, gives the same index as a DB load, and a damaged cache is
// replaced rather than trusted.
func TestLoadCache(t *testing.T) {
	ctx := context.Background()
	n, dim := 300, 8
	db, dbPath, names := captionedDB(t, n, dim)
	opt := LoadOptions{Tau: 0.15, Fuse: true, Compact: true, Cache: true}
	load := func(o LoadOptions) (*vindex.Index, LoadInfo) {
		t.Helper()
		ix, info, err := db.LoadWith(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return ix, info
	}
	first, info := load(opt)
	if info.FromCache {
		t.Fatal("first load came from a cache")
	}
	second, info2 := load(opt)
	if !info2.FromCache || info2.Images != info.Images || info2.CaptionKey != info.CaptionKey {
		t.Fatalf("second load: %+v (note %q)", info2, info2.CacheNote)
	}
	if !slices.Equal(first.Names, second.Names) || !slices.Equal(first.Image, second.Image) || !slices.Equal(first.Captions, second.Captions) ||
		second.FusedTau != 0.15 || second.CompactBytes() != first.CompactBytes() {
		t.Fatal("cached index differs from the loaded one")
	}
	q := []vindex.Query{{Descriptions: [][]float32{first.Image[:dim]}, Tau: 0.15}}
	a, _ := first.Search(ctx, q, 10)
	b, _ := second.Search(ctx, q, 10)
	if !slices.Equal(a[0], b[0]) {
		t.Fatal("cached index answers differently")
	}
	// Other options: not from this cache.
	if _, info := load(LoadOptions{Tau: 0.3, Fuse: true, Cache: true}); info.FromCache {
		t.Fatal("a load with another tau used the cache")
	}
	load(opt) // rewrite it for opt
	// A changed DB: not from the cache, and the change is seen.
	if _, err := db.sql.ExecContext(ctx, `UPDATE captions SET text = 'changed' WHERE image_id = (SELECT id FROM images WHERE name = ?)`, names[0]); err != nil {
		t.Fatal(err)
	}
	third, info3 := load(opt)
	if info3.FromCache {
		t.Fatal("a changed DB was served from the cache")
	}
	if c, _ := third.CaptionText(names[0]); c != "changed" {
		t.Fatalf("caption after the change: %q", c)
	}
	// A damaged cache is not trusted.
	raw, err := os.ReadFile(dbPath + CacheSuffix)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(dbPath+CacheSuffix, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, info := load(opt); info.FromCache || info.CacheNote == "" {
		t.Fatalf("damaged cache: %+v", info)
	}
	if _, info := load(opt); !info.FromCache {
		t.Fatalf("cache not rewritten after damage: %+v", info)
	}
}

// With VectorsOnDisk the loaded index keeps its vectors in the search
// cache, on the first load (from the DB) and on later ones (from the
// cache), and answers exactly as the index loaded into memory.
func TestLoadVectorsOnDisk(t *testing.T) {
	ctx := context.Background()
	n, dim := 500, 16
	db, _, _ := captionedDB(t, n, dim)
	if _, _, err := db.LoadWith(ctx, LoadOptions{Tau: 0.15, VectorsOnDisk: true}); err == nil {
		t.Fatal("VectorsOnDisk without Cache was accepted")
	}
	mem, _, err := db.LoadWith(ctx, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	qs := make([]vindex.Query, 6)
	for i := range qs {
		qs[i] = vindex.Query{Descriptions: [][]float32{mem.Image[i*37*dim : (i*37+1)*dim]}, Tau: 0.15}
	}
	want, err := mem.Search(ctx, qs, 25)
	if err != nil {
		t.Fatal(err)
	}
	opt := LoadOptions{Tau: 0.15, Compact: true, Cache: true, VectorsOnDisk: true}
	for load := 1; load <= 2; load++ {
		ix, info, err := db.LoadWith(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		if info.FromCache != (load == 2) || !ix.VectorsOnDisk() || ix.Image != nil || info.Images != n {
			t.Fatalf("load %d: from cache %v, on disk %v, info %+v", load, info.FromCache, ix.VectorsOnDisk(), info)
		}
		for i := range qs {
			got, err := ix.Search(ctx, qs[i:i+1], 25) // the compact scan
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[0], want[i]) {
				t.Fatalf("load %d query %d: on disk %v, in memory %v", load, i, got[0][:3], want[i][:3])
			}
		}
		all, err := ix.Search(ctx, qs, 25) // one batch through every row
		if err != nil {
			t.Fatal(err)
		}
		for i := range qs {
			if !slices.Equal(all[i], want[i]) {
				t.Fatalf("load %d batch query %d differs", load, i)
			}
		}
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// captionedDB imports n captioned images with random vectors of dimension
// dim into a new image DB, closed when the test ends.
func captionedDB(t *testing.T, n, dim int) (db *DB, path string, names []string) {
	t.Helper()
	src := t.TempDir()
	names = make([]string, n)
	caps := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("img%04d.jpg", i)
		caps[names[i]] = "caption " + names[i]
	}
	writeRefDB(t, src, names, dim, caps)
	path = filepath.Join(t.TempDir(), "c.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ImportNPY(context.Background(), src, ImportOptions{ClipModel: "test/clip"}); err != nil {
		t.Fatal(err)
	}
	return db, path, names
}
