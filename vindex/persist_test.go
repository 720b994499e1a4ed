package vindex

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// An index read back from WriteTo answers exactly as the original, and a
// damaged or truncated file is refused.
func TestWriteReadIndex(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	n, d := 700, 40
	base := newIndex(n, d, true)
	clustered(rng, base.Image, n, d, 10, 0.4)
	clustered(rng, base.Caption, n, d, 10, 0.4)
	base.Paths = make([]string, n)
	base.Captions = make([]string, n)
	for i := range base.Paths {
		base.Paths[i] = "/photos/" + base.Names[i]
		base.Captions[i] = "caption ü " + base.Names[i]
	}
	pair := shallow(base)
	pair.Paths, pair.Captions = base.Paths, base.Captions
	if err := pair.Compact(ctx, 0.15); err != nil {
		t.Fatal(err)
	}
	fused := shallow(base)
	fused.Image = slices.Clone(base.Image)
	if err := fused.Fuse(0.15); err != nil {
		t.Fatal(err)
	}
	if err := fused.Compact(ctx, 0.15); err != nil {
		t.Fatal(err)
	}
	plain := &Index{Names: base.Names, Dim: d, Image: base.Image}
	qs := randomQueries(rng, base, 6)
	for i := range qs {
		qs[i].Tau, qs[i].Restrict = 0.15, nil
	}
	for name, ix := range map[string]*Index{"unfused+compact": pair, "fused+compact": fused, "image-only": plain} {
		var buf bytes.Buffer
		if _, err := ix.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		got, err := ReadIndex(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got.Names, ix.Names) || !slices.Equal(got.Paths, ix.Paths) || !slices.Equal(got.Captions, ix.Captions) ||
			!slices.Equal(got.Image, ix.Image) || !slices.Equal(got.Caption, ix.Caption) || got.HasCaption != ix.HasCaption ||
			got.Fused != ix.Fused || got.FusedTau != ix.FusedTau || (got.compact == nil) != (ix.compact == nil) {
			t.Fatalf("%s: read back a different index", name)
		}
		if ix.compact != nil && (!slices.Equal(got.compact.codes, ix.compact.codes) || !slices.Equal(got.compact.snorm, ix.compact.snorm) ||
			!slices.Equal(got.compact.enorm, ix.compact.enorm) || got.compact.pair != ix.compact.pair) {
			t.Fatalf("%s: compact copy differs", name)
		}
		for qi := range qs {
			a, err1 := ix.Search(ctx, qs[qi:qi+1], 20)
			b, err2 := got.Search(ctx, qs[qi:qi+1], 20)
			if err1 != nil || err2 != nil || !slices.Equal(a[0], b[0]) {
				t.Fatalf("%s: query %d answered differently (%v, %v)", name, qi, err1, err2)
			}
		}
		data := buf.Bytes()
		for _, bad := range [][]byte{data[:len(data)-1], data[:len(data)/2], flip(data, len(data)/3), flip(data, len(data)-2)} {
			if _, err := ReadIndex(bytes.NewReader(bad)); err == nil {
				t.Fatalf("%s: a damaged file was accepted", name)
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0x10
	return c
}

// An index opened with its vectors on disk answers every kind of search
// exactly as the index in memory (compact single queries, batches, full
// rankings, restricted queries, another caption weight), reads its rows
// back, and reports a damaged row or a truncated file.
func TestOpenFileVectorsOnDisk(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	n, d := 1000, 48
	mem := newIndex(n, d, true)
	clustered(rng, mem.Image, n, d, 8, 0.5)
	clustered(rng, mem.Caption, n, d, 8, 0.5)
	mem.Captions = make([]string, n)
	for i := range mem.Captions {
		mem.Captions[i] = "caption " + mem.Names[i]
	}
	if err := mem.Compact(ctx, 0.15); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ix")
	prefix := []byte("a header of the caller's own\n")
	var buf bytes.Buffer
	buf.Write(prefix)
	if _, err := mem.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T) *Index {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := OpenFile(f, int64(len(prefix)), OpenOptions{VectorsOnDisk: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ix.Close() })
		return ix
	}
	disk := open(t)
	if err := disk.Prefetch(ctx); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := disk.Prefetch(cancelled); err == nil {
		t.Fatal("Prefetch ignored its context")
	}
	if !disk.VectorsOnDisk() || disk.Image != nil || disk.Caption != nil {
		t.Fatal("the vectors were read into memory")
	}
	qs := randomQueries(rng, mem, 12)
	single := slices.Clone(qs)
	for i := range single {
		single[i].Tau, single[i].Restrict = 0.15, nil
	}
	cases := []struct {
		name string
		qs   []Query
		k    int
	}{
		{"compact single query", single[:1], 20},
		{"compact single query k=1", single[1:2], 1},
		{"batch", single, 15},
		{"full ranking", single[:3], 0},
		{"restricted and other tau", qs, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := mem.Search(ctx, c.qs, c.k)
			if err != nil {
				t.Fatal(err)
			}
			got, err := disk.Search(ctx, c.qs, c.k)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("query %d: on disk %v, in memory %v", i, got[i][:min(3, len(got[i]))], want[i][:min(3, len(want[i]))])
				}
			}
		})
	}
	img, cap, err := disk.RowVectors(n - 1)
	if err != nil || !slices.Equal(img, mem.Vector(n-1)) || !slices.Equal(cap, mem.Caption[(n-1)*d:]) {
		t.Fatalf("RowVectors read back other vectors (%v)", err)
	}
	if disk.Vector(0) != nil {
		t.Fatal("Vector gave a view of vectors that are on disk")
	}
	if err := disk.Fuse(0.15); err == nil {
		t.Fatal("Fuse of vectors on disk succeeded")
	}

	// One flipped byte in the last row: reading that row fails.
	data := slices.Clone(buf.Bytes())
	data[len(data)-5] ^= 0x40
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := open(t)
	if _, _, err := damaged.RowVectors(n - 1); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a damaged row was read: %v", err)
	}
	if _, err := damaged.Search(ctx, single[:2], 0); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a full ranking over a damaged row succeeded: %v", err)
	}
	// A truncated file is refused when opened.
	if err := os.WriteFile(path, data[:len(data)-7], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := OpenFile(f, int64(len(prefix)), OpenOptions{VectorsOnDisk: true}); err == nil {
		t.Fatal("a truncated file was opened")
	}
}
