package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/queue"
)

func TestQueueJob(t *testing.T) {
	home := t.TempDir()
	ds := &dataset.Dataset{Name: "CIRR", Split: "val", Domain: "cirr",
		Gallery: []dataset.Image{{Name: "a", Path: "imgs/a.png"}, {Name: "b", Path: "imgs/b.png"}}}
	noEnv := func(string) string { return "" }
	cfg := config.Default(noEnv)
	cfg.Home = home
	cfg.CLIP.Model = "m"
	captioned := config.Default(noEnv)
	captioned.Home, captioned.CLIP.Model = home, "m"
	if err := captioned.Set("roles.captioner.endpoints", "http://127.0.0.1:1/v1"); err != nil {
		t.Fatal(err)
	}
	if err := captioned.Set("roles.captioner.model", "cap"); err != nil {
		t.Fatal(err)
	}
	if err := captioned.Finish(noEnv); err != nil {
		t.Fatal(err)
	}
	split, err := Resolve(t.Context(), home, GallerySpec{Split: ds})
	if err != nil {
		t.Fatal(err)
	}
	given, err := Resolve(t.Context(), home, GallerySpec{Split: ds, DB: filepath.Join(home, "x.db")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cfg      *config.Config
		spec     QueueSpec
		store    string
		captions bool
		params   map[string]string
	}{
		{"default DB", cfg, QueueSpec{Source: split}, "db:" + filepath.Join(home, "db", "CIRR_val.db"), false, nil},
		{"given DB", cfg, QueueSpec{Source: given, Weaviate: "http://127.0.0.1:8080"}, "db:" + filepath.Join(home, "x.db"), false, nil},
		{"weaviate", cfg, QueueSpec{Source: split, Weaviate: "http://127.0.0.1:8080", Collection: "Photos"}, "weaviate:Photos", false,
			map[string]string{paramWeaviateURL: "http://127.0.0.1:8080", paramCollection: "Photos"}},
		{"captions", captioned, QueueSpec{Source: split}, "db:" + filepath.Join(home, "db", "CIRR_val.db"), true, nil},
		{"no captions", captioned, QueueSpec{Source: split, NoCaptions: true}, "db:" + filepath.Join(home, "db", "CIRR_val.db"), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, items, err := QueueJob(tc.cfg, noEnv, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if job.Store != tc.store || job.Gallery != "CIRR/val" || job.CLIPModel != "m" {
				t.Errorf("job = %+v", job)
			}
			if got := job.Params[paramCaptionModel] != "" && job.CaptionKey != ""; got != tc.captions {
				t.Errorf("captions %v, want %v (params %v)", got, tc.captions, job.Params)
			}
			for k, v := range tc.params {
				if job.Params[k] != v {
					t.Errorf("param %s = %q, want %q", k, job.Params[k], v)
				}
			}
			if err := queue.ValidJobID(job.ID); err != nil || !strings.HasPrefix(job.ID, "cirr-val-") {
				t.Errorf("job id %q: %v", job.ID, err)
			}
			again, _, _ := QueueJob(tc.cfg, noEnv, tc.spec)
			if again.ID != job.ID {
				t.Errorf("job id not stable: %s then %s", job.ID, again.ID)
			}
			if len(items) != 2 || items[1].Name != "b" || items[1].Ord != 1 || !filepath.IsAbs(items[1].Path) {
				t.Errorf("items = %+v", items)
			}
		})
	}

	// A folder's job writes to the folder's image DB, named as 'index'
	// names it.
	dir := t.TempDir()
	if _, _, err := QueueJob(cfg, noEnv, QueueSpec{Source: &Source{Spec: GallerySpec{Folder: dir}}}); err == nil || !strings.Contains(err.Error(), "has no images") {
		t.Errorf("empty gallery: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.png"), []byte("not decoded here"), 0o644); err != nil {
		t.Fatal(err)
	}
	folder, err := Resolve(t.Context(), home, GallerySpec{Folder: dir})
	if err != nil {
		t.Fatal(err)
	}
	job, items, err := QueueJob(cfg, noEnv, QueueSpec{Source: folder})
	want, _ := gallery.FolderPath(home, dir)
	if err != nil || job.Store != "db:"+want || !strings.HasPrefix(job.ID, "folder-") || job.Gallery != "folder:"+dir || len(items) != 1 {
		t.Errorf("folder job %+v, items %v: %v; want store db:%s", job, items, err, want)
	}
}

func TestWorkerOptions(t *testing.T) {
	cfg := config.Default(nil)
	if got := WorkerOptions(cfg, queue.WorkerOptions{}); got.Concurrency != 2 || got.AckWait != 0 || got.MaxAttempts != 0 {
		t.Errorf("defaults: %+v", got)
	}
	cfg.Queue.Concurrency, cfg.Queue.AckWait, cfg.Queue.MaxAttempts = 5, time.Minute, 7
	if got := WorkerOptions(cfg, queue.WorkerOptions{}); got.Concurrency != 5 || got.AckWait != time.Minute || got.MaxAttempts != 7 {
		t.Errorf("from config: %+v", got)
	}
	if got := WorkerOptions(cfg, queue.WorkerOptions{Concurrency: 1, AckWait: time.Second, MaxAttempts: 2}); got.Concurrency != 1 || got.AckWait != time.Second || got.MaxAttempts != 2 {
		t.Errorf("flags win: %+v", got)
	}
}

func TestScoreArgErrors(t *testing.T) {
	for _, files := range [][]string{
		{"dress=a", "skirt=b", "toptee=c"},
		{"dress=a", "dress=b", "toptee=c"},
		{"a.json", "b.json"},
	} {
		_, err := Score(t.Context(), ScoreSpec{Dataset: "FashionIQ", Data: t.TempDir(), Split: "val", Files: files})
		var ae *ArgError
		if !errors.As(err, &ae) {
			t.Errorf("%v: %v is not an ArgError", files, err)
		}
	}
	var ae *ArgError
	if _, err := Score(t.Context(), ScoreSpec{Dataset: "NoSuchSet", Data: t.TempDir(), Files: []string{"r.json"}}); !errors.As(err, &ae) {
		t.Errorf("unknown dataset: %v", err)
	}
}

func TestListDBs(t *testing.T) {
	home := t.TempDir()
	if dir, names, err := ListDBs(home); err != nil || names != nil || dir != filepath.Join(home, "db") {
		t.Fatalf("no folder: %s %v %v", dir, names, err)
	}
	if db, err := OpenExistingDB(t.Context(), NamedDB(home, "a")); err == nil {
		db.Close()
		t.Fatal("OpenExistingDB opened a missing DB")
	}
	for _, n := range []string{"b.db", "a"} {
		db, err := gallery.Open(t.Context(), NamedDB(home, n))
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	if _, names, err := ListDBs(home); err != nil || strings.Join(names, ",") != "a,b" {
		t.Fatalf("ListDBs = %v, %v; want a, b", names, err)
	}
	db, err := OpenExistingDB(t.Context(), NamedDB(home, "a"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}
