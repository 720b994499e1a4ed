package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/imagescope/imagescope/gallery"
)

// NamedDB is the image DB called name (with or without .db) under home:
// home/db/<name>.db.
func NamedDB(home, name string) string {
	return gallery.DefaultPath(home, strings.TrimSuffix(name, ".db"))
}

// ListDBs returns the folder of home's image DBs and their names (without
// .db), sorted. A missing folder holds none.
func ListDBs(home string) (dir string, names []string, err error) {
	dir = filepath.Join(home, "db")
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return dir, nil, err
	}
	for _, en := range ents {
		if strings.HasSuffix(en.Name(), ".db") {
			names = append(names, strings.TrimSuffix(en.Name(), ".db"))
		}
	}
	sort.Strings(names)
	return dir, names, nil
}

// OpenExistingDB opens the image DB at path, which must exist (gallery.Open
// would create it).
func OpenExistingDB(ctx context.Context, path string) (*gallery.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("image DB: %w", err)
	}
	return gallery.Open(ctx, path)
}
