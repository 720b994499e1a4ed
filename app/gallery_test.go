package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
)

func TestFolderDBOneName(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(t.TempDir(), "My Photos")
	os.MkdirAll(dir, 0o755)
	p, err := FolderDB(home, dir)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(p)
	if !strings.HasPrefix(base, "folder_My_Photos_") || !strings.HasSuffix(base, ".db") || len(base) != len("folder_My_Photos_")+8+3 {
		t.Errorf("folder DB name %s", base)
	}
	// A relative spelling of the same folder names the same DB.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, dir)
	if err == nil {
		if q, _ := FolderDB(home, rel); q != p {
			t.Errorf("relative path gives %s, absolute %s", q, p)
		}
	}
	other, _ := FolderDB(home, filepath.Join(t.TempDir(), "My Photos"))
	if other == p {
		t.Error("two folders with one base name share a DB")
	}
}

// A gallery indexed under the older folder-<name>-<hash>.db name is found
// and renamed, with its WAL, and its content is kept (nothing re-indexed).
func TestFolderDBRenamesOldName(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	dir := filepath.Join(t.TempDir(), "pics")
	os.MkdirAll(dir, 0o755)
	p, _ := FolderDB(home, dir)
	tag := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "folder_pics_"), ".db")
	old := gallery.DefaultPath(home, "folder-pics-"+tag)
	os.MkdirAll(filepath.Dir(old), 0o755)
	db, err := gallery.Open(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.BindModel(ctx, "some-clip", 4); err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.WriteFile(old+"-wal", []byte{}, 0o644) // as a crash would leave it
	got, err := FolderDB(home, dir)
	if err != nil || got != p {
		t.Fatalf("FolderDB = %s, %v; want %s", got, err, p)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old DB still there: %v", err)
	}
	if _, err := os.Stat(p + "-wal"); err != nil {
		t.Errorf("WAL not moved with the DB: %v", err)
	}
	db, err = gallery.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if m, d, err := db.Model(ctx); err != nil || m != "some-clip" || d != 4 {
		t.Errorf("renamed DB holds model %q dim %d (%v)", m, d, err)
	}
	// Once renamed, later calls keep the name.
	if again, _ := FolderDB(home, dir); again != p {
		t.Errorf("second call: %s", again)
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	split := &dataset.Dataset{Name: "CIRR", Split: "val", Domain: "cirr", Root: "/data/CIRR",
		Gallery: []dataset.Image{{Name: "a", Path: "/data/CIRR/a.png"}}}
	for _, tc := range []struct {
		name     string
		spec     GallerySpec
		wantPath string
		wantErr  bool
	}{
		{"split default", GallerySpec{Split: split}, gallery.DefaultPath(home, "CIRR_val"), false},
		{"split with db", GallerySpec{Split: split, DB: "/x/y.db"}, "/x/y.db", false},
		{"db alone", GallerySpec{DB: "/x/z.db"}, "/x/z.db", false},
		{"weaviate", GallerySpec{Weaviate: "Gal"}, "", false},
		{"nothing", GallerySpec{}, "", true},
		{"split in weaviate", GallerySpec{Split: split, Weaviate: "Gal"}, "", false},
		{"two", GallerySpec{Folder: "/photos", Weaviate: "Gal"}, "", true},
		{"db and weaviate", GallerySpec{DB: "/x.db", Weaviate: "Gal"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Resolve(ctx, home, tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if err == nil && src.Path != tc.wantPath {
				t.Errorf("path %s, want %s", src.Path, tc.wantPath)
			}
		})
	}
	src, _ := Resolve(ctx, home, GallerySpec{Split: split})
	if len(src.Items) != 1 || src.Domain != "cirr" || src.Name != "CIRR_val" {
		t.Errorf("split source %+v", src)
	}
}
