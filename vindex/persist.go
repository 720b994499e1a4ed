package vindex

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"unsafe"

	"github.com/imagescope/imagescope/internal/parallel"
)

// The binary form of an index, for a cache that loads at disk speed:
//
//	meta:    magic, uint64 header length, JSON header, strings (uint32
//	         length + bytes each: names, then paths and caption texts when
//	         present), the compact copy's arrays, one CRC-32C per gallery
//	         row (of that row's vector bytes), then a CRC-32C of the meta
//	         section itself;
//	padding: zero bytes up to a multiple of 64 from the start;
//	vectors: per gallery row, its image vector followed by its caption
//	         vector (when the index has separate captions), float32 in
//	         little-endian order.
//
// Rows are stored together so that one read fetches what the exact score
// of a row needs, and each row carries its own checksum so that an index
// whose vectors stay on disk (OpenFile with VectorsOnDisk) checks what it
// reads without reading the whole file first.
const persistMagic = "imagescope-vindex/2\n"

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
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

func f32bytes(s []float32) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 4*len(s))
}

func u32bytes(s []uint32) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 4*len(s))
}

// rowCRC is the checksum of one stored row: its image vector, then its
// caption vector (nil without one).
func rowCRC(img, cap []float32) uint32 {
	c := crc32.Update(0, castagnoli, f32bytes(img))
	return crc32.Update(c, castagnoli, f32bytes(cap))
}

// WriteTo writes the index (vectors, names, paths, caption texts, fusion
// and the compact copy) for ReadIndex and OpenFile. An index whose vectors
// stay on disk cannot be written.
func (ix *Index) WriteTo(w io.Writer) (int64, error) {
	if !littleEndian() {
		return 0, errors.New("vindex: writing an index needs a little-endian host")
	}
	if err := ix.Validate(); err != nil {
		return 0, err
	}
	if ix.disk != nil {
		return 0, errors.New("vindex: write index: its vectors are on disk (in " + ix.disk.name + ")")
	}
	n, d := ix.Len(), ix.Dim
	h := persistHeader{Dim: d, N: n, HasCaption: ix.HasCaption, Fused: ix.Fused, FusedTau: ix.FusedTau,
		HasPaths: ix.Paths != nil, HasCaptions: ix.Captions != nil}
	if c := ix.compact; c != nil {
		h.Compact = &persistCompact{Groups: c.groups, Blocks: c.blocks, Pair: c.pair, Tau: c.tau}
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	crcs := make([]uint32, n)
	parallel.For(ix.threads(), n, func(_, r int) {
		crcs[r] = rowCRC(ix.Image[r*d:(r+1)*d], ix.captionRow(r))
	})
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	mw := io.MultiWriter(bw, crc) // the meta section, checksummed
	var n8 [8]byte
	io.WriteString(mw, persistMagic)
	binary.LittleEndian.PutUint64(n8[:], uint64(len(hj)))
	mw.Write(n8[:])
	mw.Write(hj)
	str := func(ss []string) {
		for _, s := range ss {
			binary.LittleEndian.PutUint32(n8[:4], uint32(len(s)))
			mw.Write(n8[:4])
			io.WriteString(mw, s)
		}
	}
	str(ix.Names)
	str(ix.Paths)
	str(ix.Captions)
	if c := ix.compact; c != nil {
		mw.Write(c.codes)
		for _, s := range [][]float32{c.scale, c.qnorm, c.enorm, c.snorm} {
			mw.Write(f32bytes(s))
		}
	}
	mw.Write(u32bytes(crcs))
	binary.LittleEndian.PutUint32(n8[:4], crc.Sum32())
	bw.Write(n8[:4])
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("vindex: write index: %w", err)
	}
	bw.Write(make([]byte, padTo64(cw.n)))
	for r := 0; r < n; r++ {
		bw.Write(f32bytes(ix.Image[r*d : (r+1)*d]))
		bw.Write(f32bytes(ix.captionRow(r)))
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("vindex: write index: %w", err)
	}
	return cw.n, nil
}

// captionRow is row r's caption vector, or nil without separate captions.
func (ix *Index) captionRow(r int) []float32 {
	if !ix.HasCaption {
		return nil
	}
	return ix.Caption[r*ix.Dim : (r+1)*ix.Dim]
}

func padTo64(n int64) int64 { return (64 - n%64) % 64 }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadIndex reads an index written by WriteTo into memory, checking its
// checksums.
func ReadIndex(r io.Reader) (*Index, error) {
	raw := bufio.NewReaderSize(r, 1<<20)
	cr := &countReader{r: raw}
	ix, crcs, err := readMeta(cr)
	if err != nil {
		return nil, fmt.Errorf("vindex: read index: %w", err)
	}
	if _, err := io.CopyN(io.Discard, cr, padTo64(cr.n)); err != nil {
		return nil, fmt.Errorf("vindex: read index: %w", eof(err))
	}
	n, d := ix.Len(), ix.Dim
	ix.Image = make([]float32, n*d)
	if ix.HasCaption {
		ix.Caption = make([]float32, n*d)
	}
	for row := 0; row < n; row++ {
		img, cap := ix.Image[row*d:(row+1)*d], ix.captionRow(row)
		if _, err := io.ReadFull(cr, f32bytes(img)); err != nil {
			return nil, fmt.Errorf("vindex: read index: %w", eof(err))
		}
		if _, err := io.ReadFull(cr, f32bytes(cap)); err != nil {
			return nil, fmt.Errorf("vindex: read index: %w", eof(err))
		}
		if rowCRC(img, cap) != crcs[row] {
			return nil, fmt.Errorf("vindex: read index: checksum mismatch at row %d (the file is damaged)", row)
		}
	}
	if _, err := cr.Read(make([]byte, 1)); err != io.EOF {
		return nil, errors.New("vindex: read index: data after the last row (the file is damaged)")
	}
	return ix, nil
}

// OpenOptions tune OpenFile.
type OpenOptions struct {
	// VectorsOnDisk leaves the image and caption vectors in the file: the
	// index holds the names, texts and the compact copy, and reads a row's
	// vectors (checking the row's checksum) when it needs its exact score.
	// Single queries the compact copy serves read only their candidates'
	// rows; other searches (batches, full rankings, other caption weights)
	// stay exact but stream every row from the file. Close the index to
	// release the file.
	VectorsOnDisk bool
}

// OpenFile reads the index written by WriteTo at offset off of f. Without
// VectorsOnDisk it is ReadIndex on that part of the file, and f may be
// closed afterwards; with it the index keeps f (see OpenOptions) and
// checks the meta section's checksum and the file's size at once, each
// row's checksum when the row is read.
func OpenFile(f *os.File, off int64, opt OpenOptions) (*Index, error) {
	if !opt.VectorsOnDisk {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, fmt.Errorf("vindex: read index %s: %w", f.Name(), err)
		}
		return ReadIndex(f)
	}
	cr := &countReader{r: bufio.NewReaderSize(io.NewSectionReader(f, off, 1<<62), 1<<20)}
	ix, crcs, err := readMeta(cr)
	if err != nil {
		return nil, fmt.Errorf("vindex: read index %s: %w", f.Name(), err)
	}
	vecOff := off + cr.n + padTo64(cr.n)
	rowFloats := ix.Dim
	if ix.HasCaption {
		rowFloats *= 2
	}
	want := vecOff + int64(ix.Len())*int64(rowFloats)*4
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vindex: read index %s: %w", f.Name(), err)
	}
	if st.Size() != want {
		return nil, fmt.Errorf("vindex: read index %s: %d bytes, want %d (the file is damaged)", f.Name(), st.Size(), want)
	}
	ix.disk = &diskRows{f: f, name: f.Name(), off: vecOff, d: ix.Dim, rowFloats: rowFloats, crcs: crcs}
	return ix, nil
}

// Close releases the file of an index whose vectors stay on disk; for an
// index in memory it does nothing.
func (ix *Index) Close() error {
	if ix.disk == nil {
		return nil
	}
	return ix.disk.f.Close()
}

// readMeta reads and checks the meta section, returning the index without
// its vectors and the per-row checksums.
func readMeta(cr *countReader) (*Index, []uint32, error) {
	if !littleEndian() {
		return nil, nil, errors.New("reading an index needs a little-endian host")
	}
	crc := crc32.New(castagnoli)
	br := &hashReader{r: cr, h: crc} // hashes exactly the bytes consumed
	magic := make([]byte, len(persistMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return nil, nil, eof(err)
	}
	if string(magic) != persistMagic {
		return nil, nil, errors.New("not an index file (or another version)")
	}
	var n8 [8]byte
	if _, err := io.ReadFull(br, n8[:]); err != nil {
		return nil, nil, eof(err)
	}
	hl := binary.LittleEndian.Uint64(n8[:])
	if hl > 1<<20 {
		return nil, nil, fmt.Errorf("header of %d bytes", hl)
	}
	hj := make([]byte, hl)
	if _, err := io.ReadFull(br, hj); err != nil {
		return nil, nil, eof(err)
	}
	var h persistHeader
	if err := json.Unmarshal(hj, &h); err != nil {
		return nil, nil, err
	}
	if h.Dim <= 0 || h.N < 0 || h.N > 1<<31 || h.Dim > 1<<16 {
		return nil, nil, fmt.Errorf("header says %d images of dimension %d", h.N, h.Dim)
	}
	strs := func(n int) ([]string, error) {
		out := make([]string, n)
		for i := range out {
			if _, err := io.ReadFull(br, n8[:4]); err != nil {
				return nil, eof(err)
			}
			l := binary.LittleEndian.Uint32(n8[:4])
			if l > 1<<20 {
				return nil, fmt.Errorf("string of %d bytes", l)
			}
			b := make([]byte, l)
			if _, err := io.ReadFull(br, b); err != nil {
				return nil, eof(err)
			}
			out[i] = string(b)
		}
		return out, nil
	}
	ix := &Index{Dim: h.Dim, HasCaption: h.HasCaption, Fused: h.Fused, FusedTau: h.FusedTau}
	var err error
	if ix.Names, err = strs(h.N); err != nil {
		return nil, nil, err
	}
	if h.HasPaths {
		if ix.Paths, err = strs(h.N); err != nil {
			return nil, nil, err
		}
	}
	if h.HasCaptions {
		if ix.Captions, err = strs(h.N); err != nil {
			return nil, nil, err
		}
	}
	floats := func(n int) ([]float32, error) {
		s := make([]float32, n)
		_, err := io.ReadFull(br, f32bytes(s))
		return s, eof(err)
	}
	if pc := h.Compact; pc != nil {
		if pc.Groups != (h.Dim+15)/16*4 || pc.Blocks != (h.N+compactRows-1)/compactRows {
			return nil, nil, errors.New("compact copy does not match the index's size")
		}
		c := &compact{groups: pc.Groups, blocks: pc.Blocks, pair: pc.Pair, tau: pc.Tau, dots: pickDots(),
			codes: make([]uint8, pc.Blocks*pc.Groups*compactRows*4)}
		if _, err := io.ReadFull(br, c.codes); err != nil {
			return nil, nil, eof(err)
		}
		for _, dst := range []*[]float32{&c.scale, &c.qnorm, &c.enorm} {
			if *dst, err = floats(h.N); err != nil {
				return nil, nil, err
			}
		}
		if pc.Pair {
			if c.snorm, err = floats(h.N); err != nil {
				return nil, nil, err
			}
		}
		ix.compact = c
	}
	crcs := make([]uint32, h.N)
	if _, err := io.ReadFull(br, u32bytes(crcs)); err != nil {
		return nil, nil, eof(err)
	}
	var tail [4]byte
	if _, err := io.ReadFull(cr, tail[:]); err != nil {
		return nil, nil, eof(err)
	}
	if binary.LittleEndian.Uint32(tail[:]) != crc.Sum32() {
		return nil, nil, errors.New("checksum mismatch (the file is damaged)")
	}
	return ix, crcs, nil
}

func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
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

// diskRows reads the vectors of an index opened with VectorsOnDisk.
type diskRows struct {
	f         *os.File
	name      string
	off       int64 // where row 0 starts
	d         int
	rowFloats int // d, or 2d with a caption vector per row
	crcs      []uint32
}

// read fills dst with rows [r0, r1) as stored (image vector, then caption
// vector, per row), checking each row's checksum.
func (s *diskRows) read(r0, r1 int, dst []float32, c *Counters) error {
	if c != nil {
		c.RowsRead.Add(int64(r1 - r0))
	}
	buf := f32bytes(dst[:(r1-r0)*s.rowFloats])
	if _, err := s.f.ReadAt(buf, s.off+int64(r0)*int64(s.rowFloats)*4); err != nil {
		return fmt.Errorf("vindex: read rows %d..%d of %s: %w", r0, r1-1, s.name, eof(err))
	}
	for r := r0; r < r1; r++ {
		row := dst[(r-r0)*s.rowFloats : (r-r0+1)*s.rowFloats]
		if c := crc32.Update(0, castagnoli, f32bytes(row)); c != s.crcs[r] {
			return fmt.Errorf("vindex: row %d of %s fails its checksum (the file is damaged; delete it to rebuild)", r, s.name)
		}
	}
	return nil
}

// Prefetch reads the vectors of an index opened with VectorsOnDisk once,
// front to back, so that the OS page cache holds them (when memory allows)
// and later candidate reads do not wait for the disk. It holds no memory
// beyond a small buffer and does nothing for an index in memory.
func (ix *Index) Prefetch(ctx context.Context) error {
	s := ix.disk
	if s == nil {
		return nil
	}
	buf := make([]byte, 4<<20)
	end := s.off + int64(ix.Len())*int64(s.rowFloats)*4
	for at := s.off; at < end; at += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), end-at)
		if _, err := s.f.ReadAt(buf[:n], at); err != nil {
			return fmt.Errorf("vindex: read ahead %s: %w", s.name, eof(err))
		}
	}
	return nil
}
