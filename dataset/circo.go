package dataset

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// COCOName is the file name of a COCO-2017 image id: the id zero-padded to
// 12 digits plus ".jpg" (9761 -> "000000009761.jpg").
func COCOName(id int64) string { return fmt.Sprintf("%012d.jpg", id) }

// COCOID parses a COCO file name of the form COCOName produces.
func COCOID(name string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, ".jpg")
	if !ok || len(digits) != 12 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil
}

func loadCIRCO(ctx context.Context, l *loader) error {
	annPath := l.path("captions", l.split+".json")
	if !isFile(annPath) && isFile(l.path("annotations", l.split+".json")) {
		annPath = l.path("annotations", l.split+".json")
	}
	labelled := l.split == "val"
	seen := map[string]int{}
	if err := eachRecord(ctx, annPath, func(i int, r *record) error {
		n, _, err := r.integer("id", true)
		if err != nil {
			return err
		}
		id := strconv.FormatInt(n, 10)
		r.label = "id " + id
		if first, dup := seen[id]; dup {
			return r.errf("id", "duplicate id %s (first in record %d)", id, first)
		}
		seen[id] = i
		ref, _, err := r.integer("reference_img_id", true)
		if err != nil {
			return err
		}
		text, _, err := r.str("relative_caption", true)
		if err != nil {
			return err
		}
		if _, _, err := r.str("shared_concept", false); err != nil {
			return err
		}
		q := Query{ID: id, Instruction: text, Reference: COCOName(ref)}
		target, hasTarget, err := r.integer("target_img_id", labelled)
		if err != nil {
			return err
		}
		gts, hasGT, err := r.intList("gt_img_ids", labelled)
		if err != nil {
			return err
		}
		switch {
		case hasTarget && !hasGT:
			return r.missing("gt_img_ids")
		case hasGT && !hasTarget:
			return r.missing("target_img_id")
		case hasTarget:
			if !slices.Contains(gts, target) {
				return r.errf("gt_img_ids", "does not contain target_img_id %d", target)
			}
			q.Targets = []string{COCOName(target)}
			for _, g := range gts {
				name := COCOName(g)
				if !slices.Contains(q.Targets, name) {
					q.Targets = append(q.Targets, name)
				}
			}
		}
		if aspects, _, err := r.strList("semantic_aspects", false); err != nil {
			return err
		} else {
			q.SemanticAspects = aspects
		}
		l.ds.Queries = append(l.ds.Queries, q)
		return nil
	}); err != nil {
		return err
	}
	dir := l.path("unlabeled2017")
	if !isDir(dir) && isDir(l.path("COCO2017_unlabeled", "unlabeled2017")) {
		dir = l.path("COCO2017_unlabeled", "unlabeled2017")
	}
	if l.listImages {
		ents, err := os.ReadDir(dir)
		if err == nil {
			l.ds.GalleryDir = dir
			for _, e := range ents {
				name := e.Name()
				if hiddenName(name) || e.IsDir() || !strings.EqualFold(filepath.Ext(name), ".jpg") {
					continue
				}
				l.ds.Gallery = append(l.ds.Gallery, Image{Name: name, Path: filepath.Join(dir, name)})
			}
			return nil
		}
		if !os.IsNotExist(err) {
			return fmt.Errorf("list CIRCO images: %w", err)
		}
	}
	// Without the image folder, COCO's image list (upstream layout) still
	// names the gallery.
	for _, rel := range [][]string{{"COCO2017_unlabeled", "annotations", cocoImageInfo}, {"annotations", cocoImageInfo}, {cocoImageInfo}} {
		p := l.path(rel...)
		if !isFile(p) {
			continue
		}
		names, err := readCOCOImageInfo(p)
		if err != nil {
			return err
		}
		for _, n := range names {
			l.ds.Gallery = append(l.ds.Gallery, Image{Name: n, Path: filepath.Join(dir, n)})
		}
		return nil
	}
	l.ds.GalleryUnlisted = true
	return nil
}

// cocoImageInfo is COCO 2017's list of the unlabeled images.
const cocoImageInfo = "image_info_unlabeled2017.json"

// readCOCOImageInfo returns images[].file_name of a COCO image-info file,
// sorted (the order of the folder listing).
func readCOCOImageInfo(path string) ([]string, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var info struct {
		Images []struct {
			FileName string `json:"file_name"`
		} `json:"images"`
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, JSONError(path, data, err)
	}
	names := make([]string, 0, len(info.Images))
	seen := make(map[string]bool, len(info.Images))
	for i, im := range info.Images {
		if _, ok := COCOID(im.FileName); !ok {
			return nil, &FormatError{File: path, Record: fmt.Sprintf("images[%d]", i), Field: "file_name", Msg: fmt.Sprintf("%q is not a COCO file name (12 digits + .jpg)", im.FileName)}
		}
		if !seen[im.FileName] {
			seen[im.FileName] = true
			names = append(names, im.FileName)
		}
	}
	slices.Sort(names)
	return names, nil
}
