package vindex

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unsafe"
)

// The binary form of an index, for a cache that loads at disk speed:
//
//	magic, uint64 header length, JSON header, strings (uint32 length +
//	bytes each: names, then paths and caption texts when present), then the
//	float32 and byte arrays in host (little-endian) order, then a CRC-32C
//	of everything before it.
const persistMagic = "imagescope-vindex/1\n"

type persistHeader struct {
	Dim, N      int
	HasCaption  bool
	Fused       bool
	FusedTau    float32
	HasPaths    bool
	HasCaptions bool
	Compact     *persistCompact `json:",omitempty"`
}

type persistCompact struct {
	Groups, Blocks int
	Pair           bool
	Tau            float32
	Kernel         string
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

func f32bytes(s []float32) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 4*len(s))
}

// WriteTo writes the index (vectors, names, paths, caption texts, fusion
// and the compact copy) for ReadIndex.
func (ix *Index) WriteTo(w io.Writer) (int64, error) {
	if !littleEndian() {
		return 0, errors.New("vindex: writing an index needs a little-endian host")
	}
	if err := ix.Validate(); err != nil {
		return 0, err
	}
	h := persistHeader{Dim: ix.Dim, N: ix.Len(), HasCaption: ix.HasCaption, Fused: ix.Fused, FusedTau: ix.FusedTau,
		HasPaths: ix.Paths != nil, HasCaptions: ix.Captions != nil}
	if c := ix.compact; c != nil {
		h.Compact = &persistCompact{Groups: c.groups, Blocks: c.blocks, Pair: c.pair, Tau: c.tau}
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: io.MultiWriter(w, crc)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	var n8 [8]byte
	bw.WriteString(persistMagic)
	binary.LittleEndian.PutUint64(n8[:], uint64(len(hj)))
	bw.Write(n8[:])
	bw.Write(hj)
	str := func(ss []string) {
		for _, s := range ss {
			binary.LittleEndian.PutUint32(n8[:4], uint32(len(s)))
			bw.Write(n8[:4])
			bw.WriteString(s)
		}
	}
	str(ix.Names)
	str(ix.Paths)
	str(ix.Captions)
	bw.Write(f32bytes(ix.Image))
	if ix.HasCaption {
		bw.Write(f32bytes(ix.Caption))
	}
	if c := ix.compact; c != nil {
		bw.Write(c.codes)
		for _, s := range [][]float32{c.scale, c.qnorm, c.enorm, c.snorm} {
			bw.Write(f32bytes(s))
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("vindex: write index: %w", err)
	}
	binary.LittleEndian.PutUint32(n8[:4], crc.Sum32())
	if _, err := w.Write(n8[:4]); err != nil {
		return cw.n, fmt.Errorf("vindex: write index: %w", err)
	}
	return cw.n + 4, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadIndex reads an index written by WriteTo, checking its checksum.
func ReadIndex(r io.Reader) (*Index, error) {
	if !littleEndian() {
		return nil, errors.New("vindex: reading an index needs a little-endian host")
	}
	crc := crc32.New(castagnoli)
	raw := bufio.NewReaderSize(r, 1<<20)
	br := &hashReader{r: raw, h: crc} // hashes exactly the bytes consumed
	fail := func(err error) (*Index, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("vindex: read index: %w", err)
	}
	magic := make([]byte, len(persistMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return fail(err)
	}
	if string(magic) != persistMagic {
		return fail(errors.New("not an index file (or another version)"))
	}
	var n8 [8]byte
	if _, err := io.ReadFull(br, n8[:]); err != nil {
		return fail(err)
	}
	hl := binary.LittleEndian.Uint64(n8[:])
	if hl > 1<<20 {
		return fail(fmt.Errorf("header of %d bytes", hl))
	}
	hj := make([]byte, hl)
	if _, err := io.ReadFull(br, hj); err != nil {
		return fail(err)
	}
	var h persistHeader
	if err := json.Unmarshal(hj, &h); err != nil {
		return fail(err)
	}
	if h.Dim <= 0 || h.N < 0 || h.N > 1<<31 || h.Dim > 1<<16 {
		return fail(fmt.Errorf("header says %d images of dimension %d", h.N, h.Dim))
	}
	strs := func(n int) ([]string, error) {
		out := make([]string, n)
		for i := range out {
			if _, err := io.ReadFull(br, n8[:4]); err != nil {
				return nil, err
			}
			l := binary.LittleEndian.Uint32(n8[:4])
			if l > 1<<20 {
				return nil, fmt.Errorf("string of %d bytes", l)
			}
			b := make([]byte, l)
			if _, err := io.ReadFull(br, b); err != nil {
				return nil, err
			}
			out[i] = string(b)
		}
		return out, nil
	}
	ix := &Index{Dim: h.Dim, HasCaption: h.HasCaption, Fused: h.Fused, FusedTau: h.FusedTau}
	var err error
	if ix.Names, err = strs(h.N); err != nil {
		return fail(err)
	}
	if h.HasPaths {
		if ix.Paths, err = strs(h.N); err != nil {
			return fail(err)
		}
	}
	if h.HasCaptions {
		if ix.Captions, err = strs(h.N); err != nil {
			return fail(err)
		}
	}
	floats := func(n int) ([]float32, error) {
		s := make([]float32, n)
		_, err := io.ReadFull(br, f32bytes(s))
		return s, err
	}
	if ix.Image, err = floats(h.N * h.Dim); err != nil {
		return fail(err)
	}
	if h.HasCaption {
		if ix.Caption, err = floats(h.N * h.Dim); err != nil {
			return fail(err)
		}
	}
	if pc := h.Compact; pc != nil {
		if pc.Groups != (h.Dim+15)/16*4 || pc.Blocks != (h.N+compactRows-1)/compactRows {
			return fail(errors.New("compact copy does not match the index's size"))
		}
		c := &compact{groups: pc.Groups, blocks: pc.Blocks, pair: pc.Pair, tau: pc.Tau, dots: pickDots(),
			codes: make([]uint8, pc.Blocks*pc.Groups*compactRows*4)}
		if _, err := io.ReadFull(br, c.codes); err != nil {
			return fail(err)
		}
		for _, dst := range []*[]float32{&c.scale, &c.qnorm, &c.enorm} {
			if *dst, err = floats(h.N); err != nil {
				return fail(err)
			}
		}
		if pc.Pair {
			if c.snorm, err = floats(h.N); err != nil {
				return fail(err)
			}
		}
		ix.compact = c
	}
	var tail [4]byte
	if _, err := io.ReadFull(raw, tail[:]); err != nil {
		return fail(err)
	}
	if binary.LittleEndian.Uint32(tail[:]) != crc.Sum32() {
		return fail(errors.New("checksum mismatch (the file is damaged)"))
	}
	return ix, nil
}

type hashReader struct {
	r io.Reader
	h io.Writer
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}
