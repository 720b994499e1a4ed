package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/internal/progress"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/vindex"
)

// GallerySpec names a gallery as the command line does: a plain Folder, a
// benchmark Split, an image DB file, or a Weaviate collection. DB with
// Folder or Split is where their image DB lives instead of the default.
type GallerySpec struct {
	Folder   string
	Split    *dataset.Dataset
	DB       string
	Weaviate string
	// CaptionKey picks the caption set to load: "" chooses (the configured
	// captioner's set when the DB holds it, else the DB's most complete
	// one), gallery.NoCaptions loads none.
	CaptionKey string
	// Fuse loads an image DB as one matrix of image+caption vectors fused
	// at Tau (half the memory; searches with another tau are refused).
	Fuse bool
	// Compact prepares the index for fast single searches at Tau
	// (vindex.Index.Compact; results do not change).
	Compact bool
	Tau     float32
	// Cache keeps a loaded image DB in a search cache beside it and starts
	// from that while the DB is unchanged (gallery.LoadOptions.Cache).
	Cache bool
	// VectorsOnDisk (with Cache) leaves the vectors in the search cache
	// file and reads only those of the candidates a search re-scores
	// (gallery.LoadOptions.VectorsOnDisk).
	VectorsOnDisk bool
}

// Source is a resolved gallery: where its image DB is and, for a folder or
// a split, the images to index into it.
type Source struct {
	Spec GallerySpec
	// Path is the image DB file (empty for Weaviate).
	Path string
	// Name is the DB's name (file name without .db), or the collection.
	Name string
	// Title names the gallery for people: the folder's name, the split,
	// the DB's or the collection's name.
	Title string
	// Items are the images to index (folders and splits).
	Items []gallery.Item
	// Domain is the split's prompt set ("" for others).
	Domain string
	// Root is the folder the images were listed from (folders, splits).
	Root string
}

// SplitDBName is the image DB name of a benchmark split.
func SplitDBName(ds *dataset.Dataset) string { return ds.Name + "_" + ds.Split }

// FolderDB returns the image DB of a plain folder under home
// (gallery.FolderPath: db/folder_<name>_<hash>.db). A DB under the name
// serve gave folders before, folder-<name>-<hash>.db, is renamed to it
// (with its WAL files), so a gallery indexed then is not indexed again.
func FolderDB(home, dir string) (string, error) {
	path, err := gallery.FolderPath(home, dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	// folder_<safe name>_<hash>.db -> folder-<safe name>-<hash>.db
	base := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "folder_"), ".db")
	cut := strings.LastIndexByte(base, '_')
	if cut < 0 {
		return path, nil
	}
	old := filepath.Join(filepath.Dir(path), "folder-"+base[:cut]+"-"+base[cut+1:]+".db")
	if _, err := os.Stat(old); err != nil {
		return path, nil
	}
	// The WAL first: if the main file's rename never happens, the next
	// call finds the old main file and moves it to its WAL.
	for _, sfx := range []string{"-wal", "-shm", ""} {
		if err := os.Rename(old+sfx, path+sfx); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("rename image DB %s to %s: %w", old, path, err)
		}
	}
	return path, nil
}

// Resolve lists a folder or a split's images and finds their image DB. It
// loads no model, so a wrong folder fails before anything is downloaded.
func Resolve(ctx context.Context, home string, spec GallerySpec) (*Source, error) {
	src := &Source{Spec: spec}
	n := 0
	// A split may come with the Weaviate collection that holds its gallery
	// (eval --weaviate); OpenGallery checks that it does.
	for _, set := range []bool{spec.Folder != "", spec.Split != nil && spec.Weaviate == "", spec.Weaviate != ""} {
		if set {
			n++
		}
	}
	if n > 1 || (n == 0 && spec.DB == "") || (spec.Weaviate != "" && spec.DB != "") {
		return nil, errors.New("give one gallery: a folder, a benchmark split, an image DB or a Weaviate collection")
	}
	switch {
	case spec.Weaviate != "":
		src.Name, src.Title = spec.Weaviate, spec.Weaviate
		if spec.Split != nil {
			src.Items, src.Root, src.Domain = items(spec.Split), spec.Split.Root, spec.Split.Domain
		}
		return src, nil
	case spec.Folder != "":
		ds, err := dataset.LoadFolder(ctx, spec.Folder)
		if err != nil {
			return nil, err
		}
		src.Items, src.Root = items(ds), ds.Root
		if src.Path = spec.DB; src.Path == "" {
			if src.Path, err = FolderDB(home, spec.Folder); err != nil {
				return nil, err
			}
		}
		abs, _ := filepath.Abs(spec.Folder)
		src.Title = filepath.Base(abs)
	case spec.Split != nil:
		src.Items, src.Root = items(spec.Split), spec.Split.Root
		src.Domain = spec.Split.Domain
		if src.Path = spec.DB; src.Path == "" {
			src.Path = gallery.DefaultPath(home, SplitDBName(spec.Split))
		}
		src.Title = SplitDBName(spec.Split)
	default:
		src.Path = spec.DB
	}
	src.Name = dbName(src.Path)
	if src.Title == "" {
		src.Title = src.Name
	}
	return src, nil
}

func dbName(path string) string {
	return filepath.Base(path[:len(path)-len(filepath.Ext(path))])
}

func items(ds *dataset.Dataset) []gallery.Item {
	out := make([]gallery.Item, len(ds.Gallery))
	for i, im := range ds.Gallery {
		out[i] = gallery.Item{Name: im.Name, Path: im.Path}
	}
	return out
}

// Gallery is an opened gallery: its search index (vectors, or for Weaviate
// names and paths only), what was loaded, and where the images are.
type Gallery struct {
	Source *Source
	Index  *vindex.Index
	Info   gallery.LoadInfo
	Images adapt.FileImages
	// Where names the store for reports: the DB path, or weaviate:<collection>.
	Where    string
	weaviate *WeaviateGallery
	// stopReadAhead ends the background read of vectors on disk and
	// waits for it.
	stopReadAhead func()
}

// Close releases the gallery's Weaviate connection or the file its
// vectors are read from, if any.
func (g *Gallery) Close() {
	if g == nil {
		return
	}
	if g.weaviate != nil {
		g.weaviate.Close()
	}
	if g.stopReadAhead != nil {
		g.stopReadAhead()
	}
	if g.Index != nil {
		_ = g.Index.Close()
	}
}

// readAhead reads the vectors of an index that keeps them on disk once in
// the background, so that the OS page cache holds them when memory allows
// and searches do not wait for the disk (vindex.Index.Prefetch).
func (g *Gallery) readAhead(log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g.stopReadAhead = func() { cancel(); <-done }
	go func() {
		defer close(done)
		t0 := time.Now()
		if err := g.Index.Prefetch(ctx); err != nil {
			if ctx.Err() == nil {
				log.Warn("reading the gallery's vectors ahead", "db", g.Where, "err", err)
			}
			return
		}
		log.Info("gallery vectors read ahead into the page cache", "db", g.Where, "took", time.Since(t0).Round(time.Millisecond))
	}()
}

// OpenGallery makes src searchable: a folder's or split's images are
// indexed into its image DB first (incrementally; captioned when a
// captioner is configured, with domain's caption prompt), then the DB is
// loaded; an image DB given alone must exist; a Weaviate collection is
// opened and, for a split, checked to hold the split's gallery.
func (a *App) OpenGallery(ctx context.Context, src *Source, domain string) (*Gallery, error) {
	g := &Gallery{Source: src, Where: src.Path}
	if src.Spec.Weaviate != "" {
		w, err := a.OpenWeaviate(ctx, src.Spec.Weaviate)
		if err != nil {
			return nil, err
		}
		if src.Spec.Split != nil {
			if err := w.Covers(items(src.Spec.Split)); err != nil {
				w.Close()
				return nil, err
			}
		}
		g.weaviate, g.Index, g.Where = w, w.Index, "weaviate:"+src.Spec.Weaviate
		g.Info = gallery.LoadInfo{ClipModel: a.Model.ID(), Dim: a.Model.Dim(), Images: len(w.Index.Names), CaptionKey: w.Store.Meta().CaptionKey}
	} else {
		if src.Items == nil {
			if _, err := os.Stat(src.Path); err != nil {
				return nil, fmt.Errorf("image DB: %w", err)
			}
		}
		ix, info, err := a.indexAndLoad(ctx, src, domain)
		if err != nil {
			return nil, err
		}
		g.Index, g.Info = ix, info
	}
	if a.Config.CLIP.Threads > 0 {
		g.Index.Threads = a.Config.CLIP.Threads
	}
	if src.Spec.Compact && g.weaviate == nil { // a Weaviate gallery's vectors stay in Weaviate
		if err := g.Index.Compact(ctx, src.Spec.Tau); err != nil {
			g.Close()
			return nil, fmt.Errorf("prepare gallery %s for search: %w", g.Where, err)
		}
	}
	if g.Index.VectorsOnDisk() {
		g.readAhead(a.Log)
	}
	g.Images = adapt.ImagesOf(g.Index)
	if src.Spec.Split != nil { // the split's own file paths
		g.Images = adapt.FileImages{}
		for _, im := range src.Spec.Split.Gallery {
			g.Images[im.Name] = im.Path
		}
	}
	return g, nil
}

// indexAndLoad indexes src's items (if any) into its DB and loads the
// search index with the caption set the spec or the captioner selects.
func (a *App) indexAndLoad(ctx context.Context, src *Source, domain string) (*vindex.Index, gallery.LoadInfo, error) {
	if err := os.MkdirAll(filepath.Dir(src.Path), 0o755); err != nil {
		return nil, gallery.LoadInfo{}, fmt.Errorf("image DB: %w", err)
	}
	db, err := gallery.Open(ctx, src.Path)
	if err != nil {
		return nil, gallery.LoadInfo{}, err
	}
	defer db.Close()
	opt := gallery.IndexOptions{Embedder: adapt.CLIP{Model: a.Model}, Logger: a.Log}
	captionKey := src.Spec.CaptionKey
	if c, ok := a.Roles.Clients[modelrole.Captioner]; ok {
		instr, err := a.Prompts.CaptionInstruction(domain)
		if err != nil {
			return nil, gallery.LoadInfo{}, err
		}
		rcfg, _ := a.Config.Role(modelrole.Captioner)
		opt.Captioner = adapt.Captioner{Client: c, Instruction: instr}
		opt.CaptionModel = rcfg.CacheModelID()
		opt.CaptionPrompt = instr
		if captionKey == "" {
			captionKey = a.captionerKey(ctx, db, gallery.CaptionKey(opt.CaptionModel, instr), src.Items != nil)
		}
	}
	if len(src.Items) > 0 {
		var bar *progress.Bar
		if a.bars != nil {
			bar = progress.New(a.bars, "index "+src.Name, int64(len(src.Items)), progress.Options{Unit: "images", Logger: a.Log})
			opt.Progress = bar
		}
		sum, err := db.Index(ctx, src.Items, opt)
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			return nil, gallery.LoadInfo{}, fmt.Errorf("index gallery into %s: %w", src.Path, err)
		}
		a.Log.Info("image DB ready", "db", src.Path, "images", sum.Total, "new", sum.Done, "up_to_date", sum.UpToDate, "failed", sum.Failed)
	}
	if captionKey == "" {
		if sets, err := db.CaptionSets(ctx); err == nil && len(sets) > 0 && sets[0].Embedded > 0 {
			captionKey = sets[0].Key
			if opt.Captioner == nil {
				a.Log.Info("no captioner configured; using the DB's caption set", "caption_set", captionKey)
			}
		}
	}
	ix, info, err := db.LoadWith(ctx, gallery.LoadOptions{ClipModel: a.Model.ID(), CaptionKey: captionKey, Tau: src.Spec.Tau, Fuse: src.Spec.Fuse, Compact: src.Spec.Compact, Cache: src.Spec.Cache, VectorsOnDisk: src.Spec.VectorsOnDisk})
	if err != nil {
		return nil, info, fmt.Errorf("load image DB %s: %w", src.Path, err)
	}
	return ix, info, nil
}

// captionerKey is the configured captioner's caption set when it will be
// there to load (it is about to be made, or the DB holds it); else "" so
// that the DB's own set is used.
func (a *App) captionerKey(ctx context.Context, db *gallery.DB, key string, indexing bool) string {
	if indexing {
		return key
	}
	sets, err := db.CaptionSets(ctx)
	if err != nil {
		return key
	}
	for _, s := range sets {
		if s.Key == key {
			return key
		}
	}
	a.Log.Info("the image DB holds no captions from the configured captioner; using its own caption set", "db", db.Path())
	return ""
}
