package gallery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/internal/npy"
)

// File names of the reference implementation's image DB (the caption
// embedding file name is misspelt there, and kept so).
const (
	NPYImageEmbeddings   = "image_embedding.npy"
	NPYCaptionEmbeddings = "image_caption_emebdding.npy"
	NPYNames             = "image_name_list.npy"
	NPYCaptions          = "image_caption.json"
)

// ImportOptions configures ImportNPY.
type ImportOptions struct {
	// ClipModel is the CLIP model the embeddings were made with (the .npy
	// files do not say); required.
	ClipModel string
	// CaptionModel and CaptionPrompt name the imported caption set
	// (default "imported" and "").
	CaptionModel  string
	CaptionPrompt string
	// Float16 stores the embeddings as float16.
	Float16 bool
}

// ImportSummary reports an import.
type ImportSummary struct {
	Images     int
	Dim        int
	Captions   bool
	CaptionKey string
}

// ImportNPY imports a reference-implementation image DB folder:
// image_name_list.npy (N names), image_embedding.npy (N x d),
// image_caption_emebdding.npy (N x d) and image_caption.json (an object
// name -> caption, or a list in name order). The two caption files are
// optional together. Everything is read and checked before anything is
// written, and the write is one transaction.
func (db *DB) ImportNPY(ctx context.Context, dir string, opt ImportOptions) (*ImportSummary, error) {
	if opt.ClipModel == "" {
		return nil, errors.New("import: the CLIP model the embeddings were made with must be given")
	}
	if opt.CaptionModel == "" {
		opt.CaptionModel = "imported"
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	names, err := npy.ReadStringsFile(p(NPYNames))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	n := len(names)
	if n == 0 {
		return nil, fmt.Errorf("import: %s lists no images", p(NPYNames))
	}
	seen := make(map[string]int, n)
	for i, name := range names {
		if name == "" {
			return nil, fmt.Errorf("import: %s: name %d is empty", p(NPYNames), i)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("import: %s: name %q appears at %d and %d", p(NPYNames), name, j, i)
		}
		seen[name] = i
	}
	img, rows, dim, err := npy.ReadMatrixFile(p(NPYImageEmbeddings))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if rows != n {
		return nil, fmt.Errorf("import: %s has %d rows but %s lists %d names", p(NPYImageEmbeddings), rows, p(NPYNames), n)
	}
	if err := checkRows(img, dim, p(NPYImageEmbeddings), names); err != nil {
		return nil, err
	}
	haveCapEmb := exists(p(NPYCaptionEmbeddings))
	haveCaps := exists(p(NPYCaptions))
	if haveCapEmb != haveCaps {
		return nil, fmt.Errorf("import: %s and %s come together; only one is in %s", NPYCaptionEmbeddings, NPYCaptions, dir)
	}
	var capEmb []float32
	var caps []string
	if haveCapEmb {
		var crow, cdim int
		capEmb, crow, cdim, err = npy.ReadMatrixFile(p(NPYCaptionEmbeddings))
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		if crow != n || cdim != dim {
			return nil, fmt.Errorf("import: %s is %dx%d, want %dx%d (one row per name, same dimension as %s)",
				p(NPYCaptionEmbeddings), crow, cdim, n, dim, NPYImageEmbeddings)
		}
		if err := checkRows(capEmb, dim, p(NPYCaptionEmbeddings), names); err != nil {
			return nil, err
		}
		if caps, err = readCaptions(p(NPYCaptions), names); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	if err := db.BindModel(ctx, opt.ClipModel, dim); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}

	sum := &ImportSummary{Images: n, Dim: dim, Captions: haveCapEmb}
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	capKey := ""
	if haveCapEmb {
		capKey = CaptionKey(opt.CaptionModel, opt.CaptionPrompt)
		sum.CaptionKey = capKey
		if err := ensureCaptionSet(ctx, tx, capKey, opt.CaptionModel, opt.CaptionPrompt); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	for i, name := range names {
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO images(name, pos) VALUES(?, ?)
			ON CONFLICT(name) DO UPDATE SET pos = excluded.pos RETURNING id`, name, i).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("import image %s: %w", name, err)
		}
		dt, b := encodeVec(img[i*dim:(i+1)*dim], opt.Float16)
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO image_embeddings(image_id, model, dtype, vec) VALUES(?, ?, ?, ?)`, id, opt.ClipModel, dt, b); err != nil {
			return nil, fmt.Errorf("import image %s: %w", name, err)
		}
		if haveCapEmb {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO captions(image_id, key, text) VALUES(?, ?, ?)`, id, capKey, caps[i]); err != nil {
				return nil, fmt.Errorf("import image %s: %w", name, err)
			}
			dt, b := encodeVec(capEmb[i*dim:(i+1)*dim], opt.Float16)
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO caption_embeddings(image_id, key, model, dtype, vec) VALUES(?, ?, ?, ?, ?)`, id, capKey, opt.ClipModel, dt, b); err != nil {
				return nil, fmt.Errorf("import image %s: %w", name, err)
			}
		}
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return sum, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func checkRows(m []float32, dim int, file string, names []string) error {
	for i := range names {
		var s float64
		for _, x := range m[i*dim : (i+1)*dim] {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("import: %s: row %d (%s) holds a non-finite value", file, i, names[i])
			}
			s += float64(x) * float64(x)
		}
		if s == 0 {
			return fmt.Errorf("import: %s: row %d (%s) is all zeros", file, i, names[i])
		}
	}
	return nil
}

// readCaptions reads image_caption.json as an object keyed by name or a
// list in name order.
func readCaptions(path string, names []string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		if len(list) != len(names) {
			return nil, fmt.Errorf("%s lists %d captions for %d names", path, len(list), len(names))
		}
		return list, nil
	}
	var obj map[string]string
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("%s: want an object of name -> caption or a list of captions: %w", path, err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		c, ok := obj[n]
		if !ok {
			return nil, fmt.Errorf("%s has no caption for image %q", path, n)
		}
		out[i] = c
	}
	if len(obj) != len(names) {
		return nil, fmt.Errorf("%s holds %d captions for %d names (extra names not in %s)", path, len(obj), len(names), NPYNames)
	}
	return out, nil
}

// ExportNPY writes the DB (the images with an embedding for the DB's
// model, in gallery order, with the caption set captionKey; "" picks the
// most complete one) as the reference implementation's four files. Every
// exported image must have a caption and caption embedding. The files are
// written under temporary names and renamed only when all four are written.
func (db *DB) ExportNPY(ctx context.Context, dir, captionKey string) (*LoadInfo, error) {
	ix, info, err := db.LoadWithInfo(ctx, "", captionKey)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if !ix.HasCaption {
		return nil, fmt.Errorf("export: image DB %s has no caption embeddings; the reference layout needs %s and %s", db.path, NPYCaptionEmbeddings, NPYCaptions)
	}
	if info.MissingCaptions > 0 {
		return nil, fmt.Errorf("export: %d of %d images have no caption embedding in caption set %s; index them first", info.MissingCaptions, info.Images, info.CaptionKey)
	}
	n := ix.Len()
	files := []atomicfile.File{
		{Path: filepath.Join(dir, NPYNames), Fill: func(w io.Writer) error { return npy.WriteStrings(w, ix.Names) }},
		{Path: filepath.Join(dir, NPYImageEmbeddings), Fill: func(w io.Writer) error { return npy.WriteMatrix(w, ix.Image, n, ix.Dim) }},
		{Path: filepath.Join(dir, NPYCaptionEmbeddings), Fill: func(w io.Writer) error { return npy.WriteMatrix(w, ix.Caption, n, ix.Dim) }},
		{Path: filepath.Join(dir, NPYCaptions), Fill: func(w io.Writer) error {
			// An object keyed by name, in name-list order.
			if _, err := io.WriteString(w, "{"); err != nil {
				return err
			}
			for i, name := range ix.Names {
				k, _ := json.Marshal(name)
				v, _ := json.Marshal(ix.Captions[i])
				sep := ", "
				if i == 0 {
					sep = ""
				}
				if _, err := fmt.Fprintf(w, "%s%s: %s", sep, k, v); err != nil {
					return err
				}
			}
			_, err := io.WriteString(w, "}")
			return err
		}},
	}
	if err := atomicfile.WriteAll(files); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return &info, nil
}
