package vindex

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
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
