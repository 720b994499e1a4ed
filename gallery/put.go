package gallery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"

	"github.com/imagescope/imagescope/imageio"
)

// Record is one image whose caption and embeddings were computed elsewhere
// (a distributed indexing worker) and are ready to be stored.
type Record struct {
	Item Item
	Pos  int // position in gallery order
	// Caption, CaptionModel and CaptionPrompt are empty when the gallery
	// is not captioned; otherwise they identify the caption set.
	Caption       string
	CaptionModel  string
	CaptionPrompt string
	Image         []float32 // image embedding (normalised on write)
	CaptionVec    []float32 // caption embedding (with a caption)
}

// Put commits one finished record in one transaction, without touching any
// other image (unlike Index, which syncs the whole listing). Writing the
// same record again is harmless, so a redelivered work item may be stored
// twice. The file's identity (hash, size, time, dimensions) is read from
// Item.Path so a later Index run sees the image as up to date.
func (db *DB) Put(ctx context.Context, model string, dim int, rec Record) error {
	name := rec.Item.Name
	if name == "" {
		return fmt.Errorf("put %s: record has no image name", rec.Item.Path)
	}
	if rec.Pos < 0 {
		return fmt.Errorf("put image %s: negative position %d", name, rec.Pos)
	}
	if err := db.BindModel(ctx, model, dim); err != nil {
		return err
	}
	if err := checkVec(rec.Image, dim); err != nil {
		return fmt.Errorf("put image %s: image %w", name, err)
	}
	capKey := ""
	if rec.Caption != "" {
		if rec.CaptionModel == "" {
			return fmt.Errorf("put image %s: a caption needs its captioner model", name)
		}
		if err := checkVec(rec.CaptionVec, dim); err != nil {
			return fmt.Errorf("put image %s: caption %w", name, err)
		}
		capKey = CaptionKey(rec.CaptionModel, rec.CaptionPrompt)
		if err := ensureCaptionSet(ctx, db.sql, capKey, rec.CaptionModel, rec.CaptionPrompt); err != nil {
			return err
		}
	}
	j := &job{item: rec.Item, pos: rec.Pos, usable: true, caption: rec.Caption, imgVec: rec.Image}
	if capKey != "" {
		j.capVec = rec.CaptionVec
	}
	fi, err := os.Stat(rec.Item.Path)
	if err != nil {
		return fmt.Errorf("put image %s: %w", name, err)
	}
	j.size, j.mtime = fi.Size(), fi.ModTime().UnixNano()
	if j.hash, err = hashFile(rec.Item.Path); err != nil {
		return fmt.Errorf("put image %s: %w", name, err)
	}
	info, err := imageio.ReadInfoFile(rec.Item.Path)
	if err != nil {
		return fmt.Errorf("put image %s: %w", name, err)
	}
	j.width, j.height = info.Width, info.Height
	var oldHash string
	err = db.sql.QueryRowContext(ctx, `SELECT id, hash FROM images WHERE name = ?`, name).Scan(&j.id, &oldHash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("put image %s: %w", name, err)
	default:
		j.changed = oldHash != "" && oldHash != j.hash
	}
	if err := db.commit(ctx, j, model, capKey, false); err != nil {
		return fmt.Errorf("put image %s: %w", name, err)
	}
	return nil
}
