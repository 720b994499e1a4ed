package gallery

import (
	"context"
	"fmt"
	"sort"
)

// This file is the planning half of DB.Index: what the DB already holds,
// the listing diffed against it (images to drop, to move, failure records
// to forget), and, once a file has been looked at, what each item needs.
// The doing half (read -> caption -> embed -> store) is in index.go.

// indexState is what the DB holds for one index run, read once before it.
type indexState struct {
	stored map[string]storedImage // images by name
	// Ids holding an image embedding of the run's model, a caption of the
	// run's caption set, and that caption's embedding.
	hasImg, hasCap, hasCapEmb map[int64]bool
	failed                    map[string]bool // names with a failure record
	captions                  bool            // the run makes captions
}

// loadIndexState reads what the DB holds for model and caption set capKey
// ("" without a captioner).
func (db *DB) loadIndexState(ctx context.Context, model, capKey string) (*indexState, error) {
	st := &indexState{captions: capKey != ""}
	var err error
	if st.stored, err = db.storedImages(ctx); err != nil {
		return nil, err
	}
	if st.hasImg, err = db.idSet(ctx, `SELECT image_id FROM image_embeddings WHERE model = ?`, model); err != nil {
		return nil, err
	}
	if st.captions {
		if st.hasCap, err = db.idSet(ctx, `SELECT image_id FROM captions WHERE key = ?`, capKey); err != nil {
			return nil, err
		}
		if st.hasCapEmb, err = db.idSet(ctx, `SELECT image_id FROM caption_embeddings WHERE key = ? AND model = ?`, capKey, model); err != nil {
			return nil, err
		}
	}
	if st.failed, err = db.failedNames(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// listingPlan is the listing diffed against the stored images.
type listingPlan struct {
	Removed      map[string]int64 // stored images no longer listed: name -> id
	Moved        map[string]move  // listed images whose position changed, by name
	DropFailures []string         // failure records of names no longer listed, sorted
}

// move is a stored image's new listing position.
type move struct {
	id  int64
	pos int
}

// planListing diffs the listing against the stored images and failure
// records. Listed names that are new, changed or unchanged are told apart
// per item once the file has been read (see needs).
func planListing(items []Item, stored map[string]storedImage, failed map[string]bool) listingPlan {
	listed := make(map[string]int, len(items))
	for i, it := range items {
		listed[it.Name] = i
	}
	p := listingPlan{Removed: map[string]int64{}, Moved: map[string]move{}}
	for name, st := range stored {
		pos, ok := listed[name]
		switch {
		case !ok:
			p.Removed[name] = st.id
		case pos != st.pos:
			p.Moved[name] = move{id: st.id, pos: pos}
		}
	}
	for name := range failed {
		if _, ok := listed[name]; !ok {
			p.DropFailures = append(p.DropFailures, name)
		}
	}
	sort.Strings(p.DropFailures)
	return p
}

// applyListing drops the images (and failure records) no longer listed
// and stores the new listing order, in one transaction.
func (db *DB) applyListing(ctx context.Context, p listingPlan) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("update image list: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	for name, id := range p.Removed {
		if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id); err != nil {
			return fmt.Errorf("drop image %s: %w", name, err)
		}
	}
	for name, m := range p.Moved {
		if _, err := tx.ExecContext(ctx, `UPDATE images SET pos = ? WHERE id = ?`, m.pos, m.id); err != nil {
			return fmt.Errorf("update image %s: %w", name, err)
		}
	}
	for _, n := range p.DropFailures {
		if _, err := tx.ExecContext(ctx, `DELETE FROM failures WHERE name = ?`, n); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("update image list: %w", err)
	}
	return nil
}

// needs decides, from the file identity identify found, what j needs:
// whether its row (or failure record) must be rewritten, and which of the
// image embedding, caption and caption embedding must be made. A new or
// changed image needs everything; a known one what the DB lacks for it.
func (s *indexState) needs(j *job) {
	st, known := s.stored[j.item.Name]
	j.dirty = !known || s.failed[j.item.Name] || j.changed || st.path != j.item.Path || st.size != j.size ||
		st.mtime != j.mtime || st.hash != j.hash || st.w != j.width || st.h != j.height
	if !j.usable {
		return
	}
	fresh := !known || j.changed
	j.needImg = fresh || !s.hasImg[j.id]
	if s.captions {
		j.needCap = fresh || !s.hasCap[j.id]
		j.needCapEmb = !j.needCap && !s.hasCapEmb[j.id]
	}
}

// upToDate reports whether j needs nothing written or computed.
func (j *job) upToDate() bool {
	return j.usable && !j.dirty && !j.needImg && !j.needCap && !j.needCapEmb
}
