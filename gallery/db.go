// Package gallery is the image DB: for every gallery image its file
// identity (name, path, content hash, size, width, height), its caption per
// (captioner model, caption prompt) and its image and caption embeddings
// per CLIP model, kept in one SQLite file.
//
// SQLite (through the pure-Go modernc.org/sqlite driver, so the binary
// stays cgo-free and static) gives transactions and a write-ahead log:
// every finished image is committed in its own transaction, so a process
// killed at any moment leaves each image either fully written or absent,
// and the next run continues where it stopped.
//
// A DB is bound to one CLIP model (id and dimension), recorded when the
// first embedding is written; a different model is refused. Embeddings are
// stored L2-normalised as little-endian float32 (or float16) blobs.
package gallery

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/imagescope/imagescope/internal/half"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// schemaVersion is stored in meta; Open refuses newer versions.
const schemaVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
	id     INTEGER PRIMARY KEY,
	name   TEXT NOT NULL UNIQUE,
	pos    INTEGER NOT NULL DEFAULT 0,
	path   TEXT NOT NULL DEFAULT '',
	hash   TEXT NOT NULL DEFAULT '',
	size   INTEGER NOT NULL DEFAULT 0,
	mtime  INTEGER NOT NULL DEFAULT 0,
	width  INTEGER NOT NULL DEFAULT 0,
	height INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS image_embeddings (
	image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
	model    TEXT NOT NULL,
	dtype    TEXT NOT NULL,
	vec      BLOB NOT NULL,
	PRIMARY KEY (image_id, model)
);
CREATE TABLE IF NOT EXISTS caption_sets (
	key         TEXT PRIMARY KEY,
	captioner   TEXT NOT NULL,
	prompt_hash TEXT NOT NULL,
	prompt      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS captions (
	image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
	key      TEXT NOT NULL,
	text     TEXT NOT NULL,
	PRIMARY KEY (image_id, key)
);
CREATE TABLE IF NOT EXISTS caption_embeddings (
	image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
	key      TEXT NOT NULL,
	model    TEXT NOT NULL,
	dtype    TEXT NOT NULL,
	vec      BLOB NOT NULL,
	PRIMARY KEY (image_id, key, model)
);
CREATE TABLE IF NOT EXISTS failures (
	name   TEXT PRIMARY KEY,
	path   TEXT NOT NULL,
	stage  TEXT NOT NULL,
	reason TEXT NOT NULL
);
-- meta 'generation' counts every change to what a search loads, so a
-- cache of a loaded gallery knows when it is stale.
CREATE TRIGGER IF NOT EXISTS generation_images_insert AFTER INSERT ON images BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_images_update AFTER UPDATE ON images WHEN OLD.name IS NOT NEW.name OR OLD.pos IS NOT NEW.pos OR OLD.path IS NOT NEW.path BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_images_delete AFTER DELETE ON images BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_image_embeddings_insert AFTER INSERT ON image_embeddings BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_image_embeddings_update AFTER UPDATE ON image_embeddings WHEN OLD.image_id IS NOT NEW.image_id OR OLD.model IS NOT NEW.model OR OLD.dtype IS NOT NEW.dtype OR OLD.vec IS NOT NEW.vec BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_image_embeddings_delete AFTER DELETE ON image_embeddings BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_captions_insert AFTER INSERT ON captions BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_captions_update AFTER UPDATE ON captions WHEN OLD.image_id IS NOT NEW.image_id OR OLD.key IS NOT NEW.key OR OLD.text IS NOT NEW.text BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_captions_delete AFTER DELETE ON captions BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_caption_embeddings_insert AFTER INSERT ON caption_embeddings BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_caption_embeddings_update AFTER UPDATE ON caption_embeddings WHEN OLD.image_id IS NOT NEW.image_id OR OLD.key IS NOT NEW.key OR OLD.model IS NOT NEW.model OR OLD.dtype IS NOT NEW.dtype OR OLD.vec IS NOT NEW.vec BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
CREATE TRIGGER IF NOT EXISTS generation_caption_embeddings_delete AFTER DELETE ON caption_embeddings BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;
`

// DB is an open image DB.
type DB struct {
	sql  *sql.DB
	path string
}

// ErrModelMismatch is returned (wrapped) when a DB built with one CLIP
// model is used with another.
var ErrModelMismatch = errors.New("CLIP model mismatch")

// FolderPath returns the default image DB of a plain image folder,
// $home/db/folder_<base name>_<hash of the absolute path>.db, so that index,
// search and serve share one DB per folder.
func FolderPath(home, dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("image folder %s: %w", dir, err)
	}
	h := sha256.Sum256([]byte(abs))
	return DefaultPath(home, "folder_"+filepath.Base(abs)+"_"+hex.EncodeToString(h[:4])), nil
}

// DefaultPath returns $home/db/<name>.db with name made file-safe.
func DefaultPath(home, name string) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	return filepath.Join(home, "db", safe+".db")
}

// Open opens (creating if needed) the image DB at path.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("open image DB: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open image DB %s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open image DB %s: %w", path, err)
	}
	db := &DB{sql: sdb, path: path}
	if err := db.init(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open image DB %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) init(ctx context.Context) error {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var tables int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master`).Scan(&tables); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	if tables == 0 {
		// A new file: 8 KiB pages hold a 768-d float32 vector row without
		// overflow pages. The page size can only change outside WAL mode.
		for _, q := range []string{`PRAGMA journal_mode=DELETE`, `PRAGMA page_size=8192`, `VACUUM`, `PRAGMA journal_mode=WAL`} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("set up new DB (%s): %w", q, err)
			}
		}
	}
	if _, err := conn.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, ok, err := db.meta(ctx, "generation"); err != nil {
		return err
	} else if !ok {
		if err := db.setMeta(ctx, db.sql, "generation", "0"); err != nil {
			return err
		}
	}
	v, ok, err := db.meta(ctx, "schema_version")
	if err != nil {
		return err
	}
	if !ok {
		return db.setMeta(ctx, db.sql, "schema_version", strconv.Itoa(schemaVersion))
	}
	n, err := strconv.Atoi(v)
	if err != nil || n > schemaVersion {
		return fmt.Errorf("schema version %q is newer than this program understands (%d); upgrade imagescope", v, schemaVersion)
	}
	return nil
}

// Close closes the DB.
func (db *DB) Close() error { return db.sql.Close() }

// Path returns the DB file's path.
func (db *DB) Path() string { return db.path }

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (db *DB) meta(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := db.sql.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read meta %s: %w", key, err)
	}
	return v, true, nil
}

func (db *DB) setMeta(ctx context.Context, ex execer, key, value string) error {
	_, err := ex.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write meta %s: %w", key, err)
	}
	return nil
}

// Model returns the CLIP model id and dimension the DB was built with
// ("" and 0 for a DB without embeddings yet).
func (db *DB) Model(ctx context.Context) (id string, dim int, err error) {
	id, _, err = db.meta(ctx, "clip_model")
	if err != nil {
		return "", 0, err
	}
	d, _, err := db.meta(ctx, "clip_dim")
	if err != nil {
		return "", 0, err
	}
	if d != "" {
		dim, _ = strconv.Atoi(d)
	}
	return id, dim, nil
}

// BindModel records the DB's CLIP model, or checks it against the one
// already recorded and refuses a different id or dimension.
func (db *DB) BindModel(ctx context.Context, id string, dim int) error {
	if id == "" || dim <= 0 {
		return fmt.Errorf("image DB %s: CLIP model id %q and dimension %d must be set", db.path, id, dim)
	}
	have, haveDim, err := db.Model(ctx)
	if err != nil {
		return err
	}
	if have == "" {
		// The dimension first: a concurrent binder (a queue worker's
		// parallel writes) that sees the model must see its dimension too.
		if err := db.setMeta(ctx, db.sql, "clip_dim", strconv.Itoa(dim)); err != nil {
			return err
		}
		return db.setMeta(ctx, db.sql, "clip_model", id)
	}
	if have != id || haveDim != dim {
		return fmt.Errorf("%w: image DB %s was built with CLIP model %s (dimension %d), not %s (dimension %d); use that model, or another --db for this one",
			ErrModelMismatch, db.path, have, haveDim, id, dim)
	}
	return nil
}

// CaptionKey names a caption set: the captioner model and a hash of the
// caption instruction, so changing either starts a new set.
func CaptionKey(captioner, prompt string) string {
	return captioner + "#" + promptHash(prompt)
}

func promptHash(prompt string) string {
	h := sha256.Sum256([]byte(prompt))
	return hex.EncodeToString(h[:6])
}

// ensureCaptionSet records a caption set's parts (idempotent).
func ensureCaptionSet(ctx context.Context, ex execer, key, captioner, prompt string) error {
	_, err := ex.ExecContext(ctx, `INSERT INTO caption_sets(key, captioner, prompt_hash, prompt) VALUES(?, ?, ?, ?) ON CONFLICT(key) DO NOTHING`,
		key, captioner, promptHash(prompt), prompt)
	if err != nil {
		return fmt.Errorf("record caption set %s: %w", key, err)
	}
	return nil
}

// vector blobs

func encodeVec(v []float32, f16 bool) (dtype string, b []byte) {
	if f16 {
		b = make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], half.FromFloat32(x))
		}
		return "f16", b
	}
	b = make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return "f32", b
}

// decodeVec decodes a blob into dst (len = dimension).
func decodeVec(dtype string, b []byte, dst []float32) error {
	switch dtype {
	case "f32":
		if len(b) != 4*len(dst) {
			return fmt.Errorf("float32 vector of %d bytes, want %d", len(b), 4*len(dst))
		}
		if len(dst) > 0 && binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
			// Little-endian host: the blob is the memory image.
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), b)
			return nil
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "f16":
		if len(b) != 2*len(dst) {
			return fmt.Errorf("float16 vector of %d bytes, want %d", len(b), 2*len(dst))
		}
		for i := range dst {
			dst[i] = half.ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	default:
		return fmt.Errorf("unknown vector type %q", dtype)
	}
	return nil
}
