package gallery

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/vindex"
)

// NoCaptions as a caption key loads no captions (tau is then treated as 0).
const NoCaptions = "none"

// LoadInfo describes what Load put into an index.
type LoadInfo struct {
	ClipModel  string `json:"clip_model"`
	Dim        int    `json:"dim"`
	Images     int    `json:"images"`      // images with an image embedding (the gallery)
	Skipped    int    `json:"skipped"`     // images in the DB without an image embedding (failed or not yet indexed)
	CaptionKey string `json:"caption_key"` // caption set used ("" when none)
	// MissingCaptions counts gallery images without a caption embedding in
	// the chosen set (their caption term is 0).
	MissingCaptions int `json:"missing_captions"`
	// FromCache reports that the index came from the search cache;
	// CacheNote says why the cache was not used or not written, if so.
	FromCache bool   `json:"from_cache,omitempty"`
	CacheNote string `json:"cache_note,omitempty"`
}

// CaptionSet is one set of captions held in the DB.
type CaptionSet struct {
	Key        string `json:"key"`
	Captioner  string `json:"captioner"`
	PromptHash string `json:"prompt_hash"`
	Captions   int    `json:"captions"` // images with a caption
	Embedded   int    `json:"embedded"` // images with a caption embedding for the DB's model
}

// CaptionSets lists the DB's caption sets, most complete first.
func (db *DB) CaptionSets(ctx context.Context) ([]CaptionSet, error) {
	model, _, err := db.Model(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.sql.QueryContext(ctx, `
		SELECT s.key, s.captioner, s.prompt_hash,
			(SELECT COUNT(*) FROM captions c WHERE c.key = s.key),
			(SELECT COUNT(*) FROM caption_embeddings e WHERE e.key = s.key AND e.model = ?)
		FROM caption_sets s`, model)
	if err != nil {
		return nil, fmt.Errorf("list caption sets: %w", err)
	}
	defer rows.Close()
	var out []CaptionSet
	for rows.Next() {
		var s CaptionSet
		if err := rows.Scan(&s.Key, &s.Captioner, &s.PromptHash, &s.Captions, &s.Embedded); err != nil {
			return nil, fmt.Errorf("list caption sets: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list caption sets: %w", err)
	}
	// Most embedded first; ties by key for determinism.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].Embedded > out[j-1].Embedded || (out[j].Embedded == out[j-1].Embedded && out[j].Key < out[j-1].Key)); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// Load reads everything search needs into memory: the gallery images that
// have an image embedding for clipModel, in gallery order, with their
// caption embeddings and captions from the caption set captionKey.
//
// clipModel "" means the DB's own model; a different model is refused.
// captionKey "" picks the caption set with the most caption embeddings
// (none if the DB has no captions); NoCaptions loads none.
func (db *DB) Load(ctx context.Context, clipModel, captionKey string) (*vindex.Index, error) {
	ix, _, err := db.LoadWithInfo(ctx, clipModel, captionKey)
	return ix, err
}

// LoadWithInfo is Load that also reports what was loaded.
func (db *DB) LoadWithInfo(ctx context.Context, clipModel, captionKey string) (*vindex.Index, LoadInfo, error) {
	return db.LoadWith(ctx, LoadOptions{ClipModel: clipModel, CaptionKey: captionKey})
}

// LoadOptions selects what LoadWith reads and how it lays it out.
type LoadOptions struct {
	// ClipModel and CaptionKey are Load's arguments.
	ClipModel, CaptionKey string
	// Tau is the caption weight the searches will use (the method's 0.15);
	// Fuse and Compact need it.
	Tau float32
	// Fuse folds each caption vector into its image vector while reading
	// (vindex.Index.Fuse): the index then holds one matrix instead of two
	// (half the memory) and answers only queries with caption weight Tau.
	Fuse bool
	// Compact also builds the 8-bit copy of the fused rows that makes
	// single queries with caption weight Tau fast on large galleries
	// (vindex.Index.Compact; results do not change, other queries take
	// the exact path). It adds a quarter of the image vectors' memory.
	Compact bool
	// Threads bounds the concurrent readers (0: GOMAXPROCS).
	Threads int
	// Cache keeps a copy of the loaded index in a file beside the DB (the
	// DB's path + CacheSuffix) and loads from it at disk speed while the DB
	// is unchanged (every change to images, captions or embeddings bumps a
	// counter in the DB) and the options match; otherwise it loads from the
	// DB and rewrites the file. A damaged file is ignored and rewritten.
	Cache bool
	// VectorsOnDisk (with Cache) leaves the vectors in the search cache
	// file: the index holds the names, caption texts and the compact copy,
	// and reads the vectors of the few candidates a single query re-scores
	// (vindex.OpenOptions). Memory drops to about a third of the image
	// vectors' size with Compact; results do not change. The first load
	// reads the DB into memory, writes the cache and reopens it. Close the
	// index when done.
	VectorsOnDisk bool
}

// CacheSuffix is appended to a DB's path to name its search cache.
const CacheSuffix = ".search-cache"

// LoadWith reads a gallery like Load, with options.
func (db *DB) LoadWith(ctx context.Context, opt LoadOptions) (*vindex.Index, LoadInfo, error) {
	var info LoadInfo
	clipModel, captionKey := opt.ClipModel, opt.CaptionKey
	threads := opt.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if math.IsNaN(float64(opt.Tau)) || opt.Tau < 0 || opt.Tau > 1 {
		return nil, info, fmt.Errorf("load image DB %s: tau %v is outside [0, 1]", db.path, opt.Tau)
	}
	if opt.VectorsOnDisk && !opt.Cache {
		return nil, info, fmt.Errorf("load image DB %s: vectors can stay on disk only in the search cache (set Cache)", db.path)
	}
	model, dim, err := db.Model(ctx)
	if err != nil {
		return nil, info, err
	}
	if model == "" {
		return nil, info, fmt.Errorf("image DB %s holds no embeddings yet; run 'imagescope index' first", db.path)
	}
	if clipModel != "" && clipModel != model {
		return nil, info, fmt.Errorf("%w: image DB %s was built with CLIP model %s (dimension %d), not %s", ErrModelMismatch, db.path, model, dim, clipModel)
	}
	info.ClipModel, info.Dim = model, dim
	switch captionKey {
	case NoCaptions:
		captionKey = ""
	case "":
		sets, err := db.CaptionSets(ctx)
		if err != nil {
			return nil, info, err
		}
		if len(sets) > 0 && sets[0].Embedded > 0 {
			captionKey = sets[0].Key
		}
	default:
		var n int
		if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM caption_sets WHERE key = ?`, captionKey).Scan(&n); err != nil {
			return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
		}
		if n == 0 {
			return nil, info, fmt.Errorf("image DB %s has no caption set %q", db.path, captionKey)
		}
	}
	info.CaptionKey = captionKey

	var ck cacheKey
	if opt.Cache {
		gen, ok, err := db.meta(ctx, "generation")
		if err != nil {
			return nil, info, err
		}
		ck = cacheKey{Format: 2, Generation: gen, Model: model, Dim: dim, CaptionKey: captionKey, Tau: opt.Tau, Fuse: opt.Fuse, Compact: opt.Compact}
		if ok {
			ix, cinfo, note := db.readCache(ck, opt.VectorsOnDisk)
			if ix != nil {
				return ix, cinfo, nil
			}
			info.CacheNote = note
		}
	}

	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM images`).Scan(&total); err != nil {
		return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
	}
	// Reading is done table by table in storage order (no ORDER BY over
	// rows holding vectors, which would make SQLite sort the blobs): first
	// which images have an embedding, then the gallery order, then each
	// vector table decoded straight into place, by several readers that
	// each take one range of the table's rows.
	has, err := db.idSet(ctx, `SELECT image_id FROM image_embeddings WHERE model = ?`, model)
	if err != nil {
		return nil, info, err
	}
	ix := &vindex.Index{Dim: dim, HasCaption: captionKey != "", Names: make([]string, 0, len(has)), Paths: make([]string, 0, len(has))}
	at := make(map[int64]int, len(has))
	rows, err := db.sql.QueryContext(ctx, `SELECT id, name, path FROM images ORDER BY pos, name`)
	if err != nil {
		return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
	}
	for rows.Next() {
		var id int64
		var name, path string
		if err := rows.Scan(&id, &name, &path); err != nil {
			rows.Close()
			return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
		}
		if !has[id] {
			continue
		}
		at[id] = len(ix.Names)
		ix.Names = append(ix.Names, name)
		ix.Paths = append(ix.Paths, path)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
	}
	has = nil
	n := len(ix.Names)
	ix.Image = make([]float32, n*dim)
	err = db.readVectors(ctx, threads, "image_embeddings", dim, at, ix.Names, "image embedding",
		func(i int, v []float32) { copy(ix.Image[i*dim:(i+1)*dim], v) },
		`model = ?`, model)
	if err != nil {
		return nil, info, err
	}
	if ix.HasCaption {
		got := make([]bool, n)
		var put func(i int, v []float32)
		if opt.Fuse {
			put = func(i int, v []float32) { vindex.FuseRows(ix.Image[i*dim:(i+1)*dim], v, opt.Tau) }
		} else {
			ix.Caption = make([]float32, n*dim)
			put = func(i int, v []float32) { copy(ix.Caption[i*dim:(i+1)*dim], v) }
		}
		err := db.readVectors(ctx, threads, "caption_embeddings", dim, at, ix.Names, "caption embedding",
			func(i int, v []float32) { put(i, v); got[i] = true },
			`key = ? AND model = ?`, captionKey, model)
		if err != nil {
			return nil, info, err
		}
		for _, g := range got {
			if !g {
				info.MissingCaptions++
			}
		}
		switch {
		case info.MissingCaptions == n:
			// No caption vector at all: nothing was fused, tau is moot.
			ix.HasCaption, ix.Caption = false, nil
			info.CaptionKey, info.MissingCaptions = "", 0
		case opt.Fuse:
			zero := make([]float32, dim)
			for i, g := range got {
				if !g { // no caption: the caption term is 0
					vindex.FuseRows(ix.Image[i*dim:(i+1)*dim], zero, opt.Tau)
				}
			}
			ix.HasCaption, ix.Fused, ix.FusedTau = false, true, opt.Tau
		}
	}
	if captionKey != "" && (ix.HasCaption || ix.Fused) {
		ix.Captions = make([]string, n)
		rows, err := db.sql.QueryContext(ctx, `SELECT image_id, text FROM captions WHERE key = ?`, captionKey)
		if err != nil {
			return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
		}
		for rows.Next() {
			var id int64
			var text string
			if err := rows.Scan(&id, &text); err != nil {
				rows.Close()
				return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
			}
			if i, ok := at[id]; ok {
				ix.Captions[i] = text
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
		}
	}
	info.Images = n
	info.Skipped = total - n
	at = nil
	if opt.Compact {
		ix.Threads = threads
		if err := ix.Compact(ctx, opt.Tau); err != nil {
			return nil, info, fmt.Errorf("load image DB %s: %w", db.path, err)
		}
		ix.Threads = 0
	}
	// Decoding left garbage about the size of the vectors; hand it back to
	// the OS now rather than keeping the process at twice its live size.
	debug.FreeOSMemory()
	if opt.Cache && ck.Generation != "" {
		if err := db.writeCache(ck, info, ix); err != nil {
			info.CacheNote = err.Error()
		} else if opt.VectorsOnDisk {
			lean, cinfo, note := db.readCache(ck, true)
			if lean == nil {
				info.CacheNote = note // keep the index in memory
				return ix, info, nil
			}
			cinfo.FromCache = false
			ix = nil
			debug.FreeOSMemory()
			return lean, cinfo, nil
		}
	}
	return ix, info, nil
}

// cacheKey identifies what a search cache holds.
type cacheKey struct {
	Format     int
	Generation string
	Model      string
	Dim        int
	CaptionKey string
	Tau        float32
	Fuse       bool
	Compact    bool
}

type cacheHeader struct {
	Key  cacheKey
	Info LoadInfo
}

// readCache returns the cached index when the cache file matches key, or a
// note on why it was not used. With onDisk the index keeps the file open
// and reads vectors from it.
func (db *DB) readCache(key cacheKey, onDisk bool) (_ *vindex.Index, _ LoadInfo, note string) {
	path := db.path + CacheSuffix
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, LoadInfo{}, "no search cache yet"
	}
	if err != nil {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: %v", path, err)
	}
	defer func() {
		if !onDisk || note != "" {
			f.Close()
		}
	}()
	var n [8]byte
	if _, err := io.ReadFull(f, n[:]); err != nil {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: %v", path, err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if hl > 1<<20 {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: not a cache file", path)
	}
	hj := make([]byte, hl)
	if _, err := io.ReadFull(f, hj); err != nil {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: %v", path, err)
	}
	var h cacheHeader
	if err := json.Unmarshal(hj, &h); err != nil {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: %v", path, err)
	}
	if h.Key != key {
		return nil, LoadInfo{}, "search cache is stale (the DB or the options changed)"
	}
	ix, err := vindex.OpenFile(f, int64(len(n))+int64(hl), vindex.OpenOptions{VectorsOnDisk: onDisk})
	if err != nil {
		return nil, LoadInfo{}, fmt.Sprintf("search cache %s: %v", path, err)
	}
	h.Info.FromCache, h.Info.CacheNote = true, ""
	return ix, h.Info, ""
}

// writeCache replaces the DB's search cache with ix.
func (db *DB) writeCache(key cacheKey, info LoadInfo, ix *vindex.Index) error {
	info.CacheNote = ""
	hj, err := json.Marshal(cacheHeader{Key: key, Info: info})
	if err != nil {
		return err
	}
	err = atomicfile.WriteFunc(db.path+CacheSuffix, func(w io.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(hj)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(hj); err != nil {
			return err
		}
		_, err := ix.WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("write search cache: %w", err)
	}
	return nil
}

// readVectors decodes the (image_id, dtype, vec) rows of table that match
// where into put(position, L2-normalised vector). The table's rows are
// split into threads ranges of rowid, each read on its own connection;
// put is called concurrently, never twice for one position.
func (db *DB) readVectors(ctx context.Context, threads int, table string, dim int, at map[int64]int, names []string, what string, put func(i int, v []float32), where string, args ...any) error {
	var lo, hi sql.NullInt64
	if err := db.sql.QueryRowContext(ctx, `SELECT MIN(rowid), MAX(rowid) FROM `+table).Scan(&lo, &hi); err != nil {
		return fmt.Errorf("load image DB %s: %w", db.path, err)
	}
	if !lo.Valid {
		return nil
	}
	span := hi.Int64 - lo.Int64 + 1
	parts := int64(max(1, threads))
	if span < 4096 {
		parts = 1
	}
	g, gctx := errgroup.WithContext(ctx)
	for p := int64(0); p < parts; p++ {
		a := lo.Int64 + span*p/parts
		b := lo.Int64 + span*(p+1)/parts // exclusive
		g.Go(func() error {
			conn, err := db.sql.Conn(gctx)
			if err != nil {
				return fmt.Errorf("load image DB %s: %w", db.path, err)
			}
			defer conn.Close()
			q := `SELECT image_id, dtype, vec FROM ` + table + ` WHERE ` + where + ` AND rowid >= ? AND rowid < ?`
			rows, err := conn.QueryContext(gctx, q, append(slices.Clip(args), a, b)...)
			if err != nil {
				return fmt.Errorf("load image DB %s: %w", db.path, err)
			}
			defer rows.Close()
			var (
				id  int64
				dt  string
				vec sql.RawBytes
			)
			buf := make([]float32, dim)
			count := 0
			for rows.Next() {
				if err := rows.Scan(&id, &dt, &vec); err != nil {
					return fmt.Errorf("load image DB %s: %w", db.path, err)
				}
				i, ok := at[id]
				if !ok {
					continue
				}
				if err := decodeVec(dt, vec, buf); err != nil {
					return fmt.Errorf("load image DB %s: image %s: %s: %w", db.path, names[i], what, err)
				}
				l2.Normalize(buf)
				put(i, buf)
				if count++; count%4096 == 0 {
					if err := gctx.Err(); err != nil {
						return err
					}
				}
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("load image DB %s: %w", db.path, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Stats summarises a DB for 'imagescope db info'.
type Stats struct {
	Path            string       `json:"path"`
	ClipModel       string       `json:"clip_model"`
	Dim             int          `json:"dim"`
	Images          int          `json:"images"`
	ImageEmbeddings int          `json:"image_embeddings"`
	CaptionSets     []CaptionSet `json:"caption_sets"`
	Failures        []Failure    `json:"failures"`
}

// Failure is an image the last index run could not (fully) process.
type Failure struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Stage  string `json:"stage"` // read, decode, embed, caption, embed-caption
	Reason string `json:"reason"`
}

func (f Failure) String() string {
	return fmt.Sprintf("%s (%s): %s: %s", f.Name, f.Path, f.Stage, f.Reason)
}

// Stats reports what the DB holds.
func (db *DB) Stats(ctx context.Context) (*Stats, error) {
	s := &Stats{Path: db.path}
	var err error
	if s.ClipModel, s.Dim, err = db.Model(ctx); err != nil {
		return nil, err
	}
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM images`).Scan(&s.Images); err != nil {
		return nil, fmt.Errorf("count images: %w", err)
	}
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM image_embeddings WHERE model = ?`, s.ClipModel).Scan(&s.ImageEmbeddings); err != nil {
		return nil, fmt.Errorf("count embeddings: %w", err)
	}
	if s.CaptionSets, err = db.CaptionSets(ctx); err != nil {
		return nil, err
	}
	if s.Failures, err = db.Failures(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Failures lists the recorded failures, by name.
func (db *DB) Failures(ctx context.Context) ([]Failure, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT name, path, stage, reason FROM failures ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list failures: %w", err)
	}
	defer rows.Close()
	var out []Failure
	for rows.Next() {
		var f Failure
		if err := rows.Scan(&f.Name, &f.Path, &f.Stage, &f.Reason); err != nil {
			return nil, fmt.Errorf("list failures: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Caption returns an image's caption in a caption set.
func (db *DB) Caption(ctx context.Context, name, captionKey string) (string, bool, error) {
	var text string
	err := db.sql.QueryRowContext(ctx, `SELECT c.text FROM captions c JOIN images i ON i.id = c.image_id WHERE i.name = ? AND c.key = ?`, name, captionKey).Scan(&text)
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return "", false, nil
		}
		return "", false, fmt.Errorf("read caption of %s: %w", name, err)
	}
	return text, true, nil
}
