package dataset

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// CIRRBlankCaption replaces a CIRR caption that is blank after trimming
// (test1 pairid 27098 has the caption " "), as the reference implementation does.
const CIRRBlankCaption = "the same image"

func loadCIRR(ctx context.Context, l *loader) error {
	splitPath := l.path("image_splits", "split.rc2."+l.split+".json")
	data, err := readFile(splitPath)
	if err != nil {
		return err
	}
	members, err := splitJSONObject(splitPath, data)
	if err != nil {
		return err
	}
	inSplit := make(map[string]bool, len(members))
	for _, m := range members {
		var rel string
		if Kind(m.val) != "string" || json.Unmarshal(m.val, &rel) != nil {
			return &FormatError{File: splitPath, Line: m.line, Record: fmt.Sprintf("image %q", m.key), Msg: "want a relative path string, got " + Kind(m.val)}
		}
		p, err := l.cirrImagePath(rel)
		if err != nil {
			return &FormatError{File: splitPath, Line: m.line, Record: fmt.Sprintf("image %q", m.key), Msg: err.Error()}
		}
		if m.key == "" {
			return &FormatError{File: splitPath, Line: m.line, Record: "image \"\"", Msg: "empty image name"}
		}
		inSplit[m.key] = true
		l.ds.Gallery = append(l.ds.Gallery, Image{Name: m.key, Path: p})
	}

	capPath := l.path("captions", "cap.rc2."+l.split+".json")
	labelled := l.split != "test1"
	seen := map[string]int{}
	if err := eachRecord(ctx, capPath, func(i int, r *record) error {
		pairid, _, err := r.integer("pairid", true)
		if err != nil {
			return err
		}
		id := strconv.FormatInt(pairid, 10)
		r.label = "pairid " + id
		if first, dup := seen[id]; dup {
			return r.errf("pairid", "duplicate pairid %s (first in record %d)", id, first)
		}
		seen[id] = i
		ref, _, err := r.str("reference", true)
		if err != nil {
			return err
		}
		if !inSplit[ref] {
			return r.errf("reference", "image %q is not in %s", ref, filepath.Base(splitPath))
		}
		caption, _, err := r.str("caption", true)
		if err != nil {
			return err
		}
		text := strings.TrimSpace(caption)
		if text == "" {
			text = CIRRBlankCaption
		}
		q := Query{ID: id, Instruction: text, Reference: ref}
		target, ok, err := r.str("target_hard", labelled)
		if err != nil {
			return err
		}
		if ok {
			if !inSplit[target] {
				return r.errf("target_hard", "image %q is not in %s", target, filepath.Base(splitPath))
			}
			q.Targets = []string{target}
		}
		if soft, ok, err := r.object("target_soft", false); err != nil {
			return err
		} else if ok {
			q.SoftTargets = make(map[string]float64, len(soft.fields))
			for name, v := range soft.fields {
				var f float64
				if Kind(v) != "number" || json.Unmarshal(v, &f) != nil {
					return soft.errf(name, "want a number, got %s", Kind(v))
				}
				q.SoftTargets[name] = f
			}
		}
		set, _, err := r.object("img_set", true)
		if err != nil {
			return err
		}
		ms, _, err := set.strList("members", true)
		if err != nil {
			return err
		}
		q.Subset = []string{}
		for _, m := range ms {
			if m != ref {
				q.Subset = append(q.Subset, m)
			}
		}
		l.ds.Queries = append(l.ds.Queries, q)
		return nil
	}); err != nil {
		return err
	}
	return nil
}

// cirrImagePath resolves a split-file path ("./dev/x.png") under the CIRR
// folder. Upstream keeps the images in img_raw/; that folder is used when
// the image folder is not directly under the dataset folder.
func (l *loader) cirrImagePath(rel string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(rel))
	if rel == "" || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("path %q is not relative to the dataset folder", rel)
	}
	p := filepath.Join(l.root, clean)
	if l.listImages {
		top := strings.SplitN(clean, string(filepath.Separator), 2)[0]
		if !isDir(filepath.Join(l.root, top)) && isDir(filepath.Join(l.root, "img_raw", top)) {
			p = filepath.Join(l.root, "img_raw", clean)
		}
	}
	return p, nil
}
