package dataset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Canonical dataset names.
const (
	CIRR            = "CIRR"
	CIRCO           = "CIRCO"
	FashionIQDress  = "FashionIQ-dress"
	FashionIQShirt  = "FashionIQ-shirt"
	FashionIQTopTee = "FashionIQ-toptee"
	Flickr30K       = "Flickr30K"
	MSCOCO          = "MSCOCO"
	VisDial         = "VisDial"
	Folder          = "folder"
)

// spec describes one benchmark: its folder under the data root, the splits
// it can load and the loader.
type spec struct {
	name   string
	dir    string // folder under the data root
	task   Task
	domain string
	splits []string // canonical split names, first is the default
	// marker returns the annotation file (relative to the dataset folder)
	// whose presence identifies the folder for a split.
	marker func(split string) string
	load   func(ctx context.Context, l *loader) error
	// category is the FashionIQ category.
	category string
}

func specs() []spec {
	fiq := func(name, cat string) spec {
		return spec{
			name: name, dir: "FashionIQ", task: Composed, domain: "fashion-" + cat, category: cat,
			splits: []string{"val", "test", "train"},
			marker: func(split string) string { return filepath.Join("captions", "cap."+cat+"."+split+".json") },
			load:   loadFashionIQ,
		}
	}
	return []spec{
		{
			name: CIRR, dir: "CIRR", task: Composed, domain: "cirr",
			splits: []string{"val", "test1", "train"},
			marker: func(split string) string { return filepath.Join("captions", "cap.rc2."+split+".json") },
			load:   loadCIRR,
		},
		{
			name: CIRCO, dir: "CIRCO", task: Composed, domain: "general",
			splits: []string{"val", "test"},
			marker: func(split string) string { return filepath.Join("captions", split+".json") },
			load:   loadCIRCO,
		},
		fiq(FashionIQDress, "dress"),
		fiq(FashionIQShirt, "shirt"),
		fiq(FashionIQTopTee, "toptee"),
		{
			name: Flickr30K, dir: "Flickr30K", task: TextToImage, domain: "general",
			splits: []string{"test"},
			marker: func(string) string { return "test_1k_flickr.csv" },
			load:   loadCaptionCSV("test_1k_flickr.csv", "images_flickr_1k_test"),
		},
		{
			name: MSCOCO, dir: "MSCOCO", task: TextToImage, domain: "general",
			splits: []string{"test"},
			marker: func(string) string { return "test_5k_mscoco_2014.csv" },
			load:   loadCaptionCSV("test_5k_mscoco_2014.csv", "images_mscoco_2014_5k_test"),
		},
		{
			name: VisDial, dir: "VisDial", task: Chat, domain: "chat",
			splits: []string{"val"},
			marker: func(string) string { return "VisDial_v1.0_queries_val.json" },
			load:   loadVisDial,
		},
	}
}

// Names lists the benchmark names Load accepts (canonical spelling).
func Names() []string {
	var out []string
	for _, s := range specs() {
		out = append(out, s.name)
	}
	return out
}

// ErrUnknownName marks (wrapped) a dataset or split name that does not
// exist: a mistake in the request, not in the data.
var ErrUnknownName = errors.New("unknown name")

type nameError string

func (e nameError) Error() string        { return string(e) }
func (e nameError) Is(target error) bool { return target == ErrUnknownName }

func lookup(name string) (spec, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.NewReplacer("_", "-", "/", "-").Replace(n)
	switch n {
	case "flickr", "flickr30k-1k", "flickr1k":
		n = "flickr30k"
	case "coco", "mscoco-5k", "coco5k":
		n = "mscoco"
	}
	for _, s := range specs() {
		if strings.ToLower(s.name) == n {
			return s, nil
		}
	}
	return spec{}, nameError(fmt.Sprintf("unknown dataset %q (want one of %s)", name, strings.Join(Names(), ", ")))
}

// Canonical returns the canonical spelling of a dataset name and split:
// names are case-insensitive; "valid" and "val" mean val; CIRR's "test" is
// "test1". An empty split selects val (test for Flickr30K and MSCOCO,
// which have no other).
func Canonical(name, split string) (string, string, error) {
	s, err := lookup(name)
	if err != nil {
		return "", "", err
	}
	sp, err := s.split(split)
	return s.name, sp, err
}

func (s spec) split(split string) (string, error) {
	sp := strings.ToLower(strings.TrimSpace(split))
	switch sp {
	case "":
		return s.splits[0], nil
	case "valid", "validation", "dev":
		sp = "val"
	case "test", "test1":
		if s.name == CIRR {
			sp = "test1"
		} else {
			sp = "test"
		}
	}
	for _, c := range s.splits {
		if c == sp {
			return c, nil
		}
	}
	return "", nameError(fmt.Sprintf("%s has no split %q (available: %s)", s.name, split, strings.Join(s.splits, ", ")))
}

// loader carries the state of one Load call.
type loader struct {
	spec  spec
	root  string // the dataset's folder
	split string
	// listImages is false for LoadAnnotations: no image folder is read.
	listImages bool
	ds         *Dataset
}

func (l *loader) path(rel ...string) string {
	return filepath.Join(append([]string{l.root}, rel...)...)
}

// Load reads one benchmark split. name is case-insensitive (CIRR, CIRCO,
// FashionIQ-dress|shirt|toptee, Flickr30K, MSCOCO, VisDial); split is
// valid|val|test (CIRR test is test1). dataRoot is the folder holding the
// dataset folders, or the dataset's own folder.
//
// Load reads the annotation and split files and, for CIRCO whose gallery is
// defined by its image folder, lists that folder. It does not require the
// image files to exist (scoring needs only the annotations); call
// CheckImages before reading pixels. Without the CIRCO image folder its
// gallery comes from COCO's image_info_unlabeled2017.json when present,
// and is otherwise left unlisted (GalleryUnlisted).
func Load(ctx context.Context, name, dataRoot, split string) (*Dataset, error) {
	return load(ctx, name, dataRoot, split, true)
}

// LoadAnnotations is Load without touching any image folder: the result
// depends on the annotation and split files only. CIRCO's gallery then
// comes from image_info_unlabeled2017.json when present, else it is left
// unlisted.
func LoadAnnotations(ctx context.Context, name, dataRoot, split string) (*Dataset, error) {
	return load(ctx, name, dataRoot, split, false)
}

func load(ctx context.Context, name, dataRoot, split string, listImages bool) (*Dataset, error) {
	s, err := lookup(name)
	if err != nil {
		return nil, err
	}
	sp, err := s.split(split)
	if err != nil {
		return nil, err
	}
	root, err := resolveRoot(s, sp, dataRoot)
	if err != nil {
		return nil, fmt.Errorf("load %s %s: %w", s.name, sp, err)
	}
	l := &loader{spec: s, root: root, split: sp, listImages: listImages,
		ds: &Dataset{Name: s.name, Split: sp, Task: s.task, Domain: s.domain, Root: root}}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.load(ctx, l); err != nil {
		return nil, fmt.Errorf("load %s %s: %w", s.name, sp, err)
	}
	if l.ds.Queries == nil {
		l.ds.Queries = []Query{}
	}
	if l.ds.Gallery == nil {
		l.ds.Gallery = []Image{}
	}
	return l.ds, nil
}

// resolveRoot finds the dataset folder: <dataRoot>/<dir> (any letter case)
// or dataRoot itself, whichever holds the split's annotation file.
func resolveRoot(s spec, split, dataRoot string) (string, error) {
	if dataRoot == "" {
		return "", errors.New("no data root given")
	}
	fi, err := os.Stat(dataRoot)
	if err != nil {
		return "", fmt.Errorf("data root %s: %w", dataRoot, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("data root %s: not a directory", dataRoot)
	}
	marker := s.marker(split)
	var cands []string
	cands = append(cands, filepath.Join(dataRoot, s.dir))
	if ents, err := os.ReadDir(dataRoot); err == nil {
		for _, e := range ents {
			if e.IsDir() && e.Name() != s.dir && strings.EqualFold(e.Name(), s.dir) {
				cands = append(cands, filepath.Join(dataRoot, e.Name()))
			}
		}
	}
	cands = append(cands, dataRoot)
	for _, c := range cands {
		for _, m := range markerAlternatives(s, marker) {
			if isFile(filepath.Join(c, m)) {
				return c, nil
			}
		}
	}
	return "", fmt.Errorf("%s not found in %s or in %s itself (data layout: docs/benchmarks.md)",
		marker, filepath.Join(dataRoot, s.dir), dataRoot)
}

// markerAlternatives lists where a marker file may sit (CIRCO's upstream
// layout keeps the annotations in annotations/ instead of captions/).
func markerAlternatives(s spec, marker string) []string {
	if s.name == CIRCO {
		return []string{marker, filepath.Join("annotations", filepath.Base(marker))}
	}
	return []string{marker}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// hiddenName reports names to skip in folder listings: dot files, which
// include macOS resource forks ("._x.jpg").
func hiddenName(name string) bool { return strings.HasPrefix(name, ".") }

// MissingImages returns the gallery images (and, for queries, reference
// images) whose files do not exist or are not regular files.
func (d *Dataset) MissingImages(ctx context.Context) ([]string, error) {
	var missing []string
	for i, im := range d.Gallery {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if !isFile(im.Path) {
			missing = append(missing, im.Name)
		}
	}
	return missing, nil
}

// CheckImages returns an error naming the missing image files, if any
// (at most 5 are named; the count is exact).
func (d *Dataset) CheckImages(ctx context.Context) error {
	missing, err := d.MissingImages(ctx)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	byName := d.ImagePaths()
	var ex []string
	for _, n := range missing[:min(5, len(missing))] {
		ex = append(ex, byName[n])
	}
	more := ""
	if len(missing) > len(ex) {
		more = fmt.Sprintf(", ... (%d more)", len(missing)-len(ex))
	}
	return fmt.Errorf("%s %s: %d of %d image files missing: %s%s", d.Name, d.Split, len(missing), len(d.Gallery), strings.Join(ex, ", "), more)
}

// ImagePaths maps gallery names to file paths.
func (d *Dataset) ImagePaths() map[string]string {
	m := make(map[string]string, len(d.Gallery))
	for _, im := range d.Gallery {
		m[im.Name] = im.Path
	}
	return m
}

// ImageIndex maps gallery names to their position in Gallery.
func (d *Dataset) ImageIndex() map[string]int {
	m := make(map[string]int, len(d.Gallery))
	for i, im := range d.Gallery {
		m[im.Name] = i
	}
	return m
}

// HasLabels reports whether any query has a target (test splits of CIRR
// and CIRCO hide them).
func (d *Dataset) HasLabels() bool {
	for _, q := range d.Queries {
		if len(q.Targets) > 0 {
			return true
		}
	}
	return false
}

// NameChecker returns a function reporting whether a name can be a gallery
// image of d: a member of the gallery or, when the gallery is unlisted, a
// name of the dataset's form (CIRCO: 12-digit COCO id + ".jpg").
func (d *Dataset) NameChecker() func(string) bool {
	if d.GalleryUnlisted {
		name := d.Name
		return func(s string) bool { return validFormName(name, s) }
	}
	set := make(map[string]struct{}, len(d.Gallery))
	for _, im := range d.Gallery {
		set[im.Name] = struct{}{}
	}
	return func(s string) bool { _, ok := set[s]; return ok }
}

func validFormName(ds, name string) bool {
	if ds != CIRCO {
		return name != ""
	}
	_, ok := COCOID(name)
	return ok
}
