package dataset

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// VisDialRounds is the number of dialogue entries per VisDial query:
// the caption (round 0) and ten "question? answer" turns.
const VisDialRounds = 11

func loadVisDial(ctx context.Context, l *loader) error {
	spacePath := l.path("Search_Space_val_50k.json")
	items, lines, err := readJSONArray(spacePath)
	if err != nil {
		return err
	}
	inSpace := make(map[string]bool, len(items))
	for i, raw := range items {
		var rel string
		if Kind(raw) != "string" || json.Unmarshal(raw, &rel) != nil {
			return &FormatError{File: spacePath, Line: lines[i], Record: fmt.Sprintf("item %d", i), Msg: "want an image path string, got " + Kind(raw)}
		}
		p, name, err := visdialPath(l.root, rel)
		if err != nil {
			return &FormatError{File: spacePath, Line: lines[i], Record: fmt.Sprintf("item %d", i), Msg: err.Error()}
		}
		if inSpace[name] {
			return &FormatError{File: spacePath, Line: lines[i], Record: fmt.Sprintf("item %d", i), Msg: fmt.Sprintf("duplicate image %q", name)}
		}
		inSpace[name] = true
		l.ds.Gallery = append(l.ds.Gallery, Image{Name: name, Path: p})
	}

	qPath := l.path("VisDial_v1.0_queries_val.json")
	if err := eachRecord(ctx, qPath, func(i int, r *record) error {
		img, _, err := r.str("img", true)
		if err != nil {
			return err
		}
		_, name, err := visdialPath(l.root, img)
		if err != nil {
			return r.errf("img", "%v", err)
		}
		if !inSpace[name] {
			return r.errf("img", "image %q is not in %s", name, filepath.Base(spacePath))
		}
		dialog, _, err := r.strList("dialog", true)
		if err != nil {
			return err
		}
		if len(dialog) != VisDialRounds {
			return r.errf("dialog", "want %d entries (caption + 10 turns), got %d", VisDialRounds, len(dialog))
		}
		l.ds.Queries = append(l.ds.Queries, Query{ID: strconv.Itoa(i), Turns: dialog, Targets: []string{name}})
		return nil
	}); err != nil {
		return err
	}
	return nil
}

// visdialPath resolves a search-space entry ("unlabeled2017/000000000008.jpg");
// the image key is its base name.
func visdialPath(root, rel string) (string, string, error) {
	clean := path.Clean(strings.ReplaceAll(rel, "\\", "/"))
	if rel == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", "", fmt.Errorf("path %q is not relative to the dataset folder", rel)
	}
	return filepath.Join(root, filepath.FromSlash(clean)), path.Base(clean), nil
}
