package llm

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	// Pure-Go SQLite driver, the project's embedded database.
	_ "modernc.org/sqlite"
)

// Cache is the persistent answer cache: an SQLite file in WAL mode. Every
// entry is written by one INSERT statement (its own transaction), so
// concurrent writers (goroutines or processes) and a process killed
// mid-write never leave a partial entry. Each value is stored with its
// sha256, checked on read. A nil *Cache is a disabled cache.
type Cache struct {
	db   *sql.DB
	path string
}

const cacheSchema = `
CREATE TABLE IF NOT EXISTS answers (
	key     TEXT PRIMARY KEY,
	role    TEXT NOT NULL,
	model   TEXT NOT NULL,
	kind    TEXT NOT NULL,
	value   BLOB NOT NULL,
	sum     TEXT NOT NULL,
	created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_role_model ON answers(role, model);
`

// OpenCache opens (creating if needed) the cache at path.
func OpenCache(path string) (*Cache, error) {
	if path == "" {
		return nil, errors.New("open answer cache: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open answer cache: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(30000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	dsn := "file:" + filepath.ToSlash(path) + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open answer cache %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, cacheSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open answer cache %s: %w", path, err)
	}
	return &Cache{db: db, path: path}, nil
}

// Path is the cache file.
func (c *Cache) Path() string {
	if c == nil {
		return ""
	}
	return c.path
}

// Close closes the database.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	return c.db.Close()
}

func valueSum(v []byte) string {
	h := sha256.Sum256(v)
	return hex.EncodeToString(h[:])
}

// get returns the value for key; a read error or a checksum mismatch is a
// miss.
func (c *Cache) get(ctx context.Context, key string) ([]byte, bool) {
	v, ok, err := c.Get(ctx, key)
	return v, ok && err == nil
}

// Get returns the stored value for key.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if c == nil {
		return nil, false, nil
	}
	var v []byte
	var sum string
	err := c.db.QueryRowContext(ctx, `SELECT value, sum FROM answers WHERE key = ?`, key).Scan(&v, &sum)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("answer cache read: %w", err)
	}
	if valueSum(v) != sum {
		return nil, false, fmt.Errorf("answer cache entry %s fails its checksum", key)
	}
	return v, true, nil
}

func (c *Cache) put(ctx context.Context, key, role, model, kind string, v []byte) error {
	return c.Put(ctx, key, role, model, kind, v)
}

// Put stores value under key in one statement.
func (c *Cache) Put(ctx context.Context, key, role, model, kind string, value []byte) error {
	if c == nil {
		return nil
	}
	_, err := c.db.ExecContext(ctx,
		`INSERT OR REPLACE INTO answers(key, role, model, kind, value, sum, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		key, role, model, kind, value, valueSum(value), time.Now().Unix())
	if err != nil {
		return fmt.Errorf("answer cache write: %w", err)
	}
	return nil
}

// Clear deletes every entry, or with role != "" only that role's, and
// returns how many were deleted.
func (c *Cache) Clear(ctx context.Context, role string) (int64, error) {
	if c == nil {
		return 0, nil
	}
	var res sql.Result
	var err error
	if role == "" {
		res, err = c.db.ExecContext(ctx, `DELETE FROM answers`)
	} else {
		res, err = c.db.ExecContext(ctx, `DELETE FROM answers WHERE role = ?`, role)
	}
	if err != nil {
		return 0, fmt.Errorf("clear answer cache: %w", err)
	}
	n, _ := res.RowsAffected()
	// Give the space back; a failure here loses nothing.
	_, _ = c.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	_, _ = c.db.ExecContext(ctx, `VACUUM`)
	return n, nil
}

// CacheGroup counts the entries of one role and model.
type CacheGroup struct {
	Role    string    `json:"role"`
	Model   string    `json:"model"`
	Kind    string    `json:"kind"`
	Entries int64     `json:"entries"`
	Bytes   int64     `json:"bytes"`
	Oldest  time.Time `json:"oldest"`
	Newest  time.Time `json:"newest"`
}

// CacheStats describes the cache's content.
type CacheStats struct {
	Path      string       `json:"path"`
	Entries   int64        `json:"entries"`
	Bytes     int64        `json:"bytes"`
	FileBytes int64        `json:"file_bytes"`
	Groups    []CacheGroup `json:"groups"`
}

// Stats summarises the entries per role and model.
func (c *Cache) Stats(ctx context.Context) (CacheStats, error) {
	if c == nil {
		return CacheStats{}, nil
	}
	st := CacheStats{Path: c.path}
	rows, err := c.db.QueryContext(ctx, `SELECT role, model, kind, COUNT(*), COALESCE(SUM(LENGTH(value)),0), MIN(created), MAX(created)
		FROM answers GROUP BY role, model, kind ORDER BY role, model, kind`)
	if err != nil {
		return st, fmt.Errorf("answer cache stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g CacheGroup
		var lo, hi int64
		if err := rows.Scan(&g.Role, &g.Model, &g.Kind, &g.Entries, &g.Bytes, &lo, &hi); err != nil {
			return st, fmt.Errorf("answer cache stats: %w", err)
		}
		g.Oldest, g.Newest = time.Unix(lo, 0).UTC(), time.Unix(hi, 0).UTC()
		st.Entries += g.Entries
		st.Bytes += g.Bytes
		st.Groups = append(st.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("answer cache stats: %w", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if fi, err := os.Stat(c.path + suffix); err == nil {
			st.FileBytes += fi.Size()
		}
	}
	return st, nil
}

// Check runs SQLite's integrity check and verifies every entry's checksum;
// it returns the number of entries checked.
func (c *Cache) Check(ctx context.Context) (int64, error) {
	if c == nil {
		return 0, nil
	}
	var res string
	if err := c.db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return 0, fmt.Errorf("answer cache integrity check: %w", err)
	}
	if res != "ok" {
		return 0, fmt.Errorf("answer cache integrity check: %s", res)
	}
	rows, err := c.db.QueryContext(ctx, `SELECT key, value, sum FROM answers`)
	if err != nil {
		return 0, fmt.Errorf("answer cache check: %w", err)
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var k, sum string
		var v []byte
		if err := rows.Scan(&k, &v, &sum); err != nil {
			return n, fmt.Errorf("answer cache check: %w", err)
		}
		if valueSum(v) != sum {
			return n, fmt.Errorf("answer cache entry %s fails its checksum", k)
		}
		n++
	}
	return n, rows.Err()
}
