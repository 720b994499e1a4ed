package dataset

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// FashionIQText joins a FashionIQ record's two captions the way the
// reference implementation does: each stripped of leading and trailing
// '.', '?' and ' ' characters, joined by " and ". No other change (no
// lower-casing; an empty first caption leaves a leading space).
func FashionIQText(c0, c1 string) string {
	return strings.Trim(c0, ".? ") + " and " + strings.Trim(c1, ".? ")
}

func loadFashionIQ(ctx context.Context, l *loader) error {
	cat := l.spec.category
	splitPath := l.path("image_splits", "split."+cat+"."+l.split+".json")
	items, lines, err := readJSONArray(splitPath)
	if err != nil {
		return err
	}
	inSplit := make(map[string]bool, len(items))
	for i, raw := range items {
		var name string
		if Kind(raw) != "string" || json.Unmarshal(raw, &name) != nil || name == "" {
			return &FormatError{File: splitPath, Line: lines[i], Record: fmt.Sprintf("item %d", i), Msg: "want an image name (non-empty string), got " + Kind(raw)}
		}
		if inSplit[name] {
			return &FormatError{File: splitPath, Line: lines[i], Record: fmt.Sprintf("item %d", i), Msg: fmt.Sprintf("duplicate image name %q", name)}
		}
		inSplit[name] = true
		l.ds.Gallery = append(l.ds.Gallery, Image{Name: name, Path: l.fashionImagePath(name)})
	}

	capPath := l.path("captions", "cap."+cat+"."+l.split+".json")
	labelled := l.split != "test"
	if err := eachRecord(ctx, capPath, func(i int, r *record) error {
		ref, _, err := r.str("candidate", true)
		if err != nil {
			return err
		}
		if !inSplit[ref] {
			return r.errf("candidate", "image %q is not in %s", ref, filepath.Base(splitPath))
		}
		caps, _, err := r.strList("captions", true)
		if err != nil {
			return err
		}
		if len(caps) != 2 {
			return r.errf("captions", "want 2 captions, got %d", len(caps))
		}
		q := Query{ID: strconv.Itoa(i), Instruction: FashionIQText(caps[0], caps[1]), Reference: ref}
		target, ok, err := r.str("target", labelled)
		if err != nil {
			return err
		}
		if ok {
			if !inSplit[target] {
				return r.errf("target", "image %q is not in %s", target, filepath.Base(splitPath))
			}
			q.Targets = []string{target}
		}
		l.ds.Queries = append(l.ds.Queries, q)
		return nil
	}); err != nil {
		return err
	}
	return nil
}

// fashionImagePath is images/<name>.png (the HuggingFace mirror the
// reference implementation reads); when only the upstream .jpg exists on
// disk, that file is used.
func (l *loader) fashionImagePath(name string) string {
	p := l.path("images", name+".png")
	if l.listImages && !isFile(p) {
		if j := l.path("images", name+".jpg"); isFile(j) {
			return j
		}
	}
	return p
}
