package gallery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/l2"
)

// Item is one gallery image to index.
type Item struct {
	Name string // gallery name (unique)
	Path string // image file
}

// Embedder computes CLIP embeddings for the indexer. Vectors need not be
// normalised (the DB stores them L2-normalised).
type Embedder interface {
	// ModelID identifies the model (recorded in the DB).
	ModelID() string
	// Dim is the embedding dimension.
	Dim() int
	// EmbedImageFiles embeds image files; errs[i] reports a failure of
	// item i alone, err a failure of the whole call.
	EmbedImageFiles(ctx context.Context, paths []string) (vecs [][]float32, errs []error, err error)
	// EmbedTexts embeds caption texts.
	EmbedTexts(ctx context.Context, texts []string) ([][]float32, error)
}

// Captioner writes one caption for an image file.
type Captioner interface {
	Caption(ctx context.Context, path string) (string, error)
}

// Progress receives indexing progress (internal/progress.Bar fits).
type Progress interface {
	SetTotal(total int64)
	Add(n int64)
}

// IndexOptions configures an index run.
type IndexOptions struct {
	Embedder Embedder // required
	// Captioner is optional; without it no captions (nor caption
	// embeddings) are made and search treats tau as 0.
	Captioner Captioner
	// CaptionModel and CaptionPrompt identify the caption set
	// (see CaptionKey); CaptionModel is required with a Captioner.
	CaptionModel  string
	CaptionPrompt string
	// CaptionWorkers bounds concurrent captioner calls (default 4).
	CaptionWorkers int
	// EmbedBatch is the most images or texts per embedder call (default 8).
	EmbedBatch int
	// ReadWorkers bounds concurrent file hashing (default 2).
	ReadWorkers int
	// Float16 stores new embeddings as float16 (half the space).
	Float16 bool
	// Progress, when set, is told the total and each finished item.
	Progress Progress
	// Logger receives per-item failures and the summary (nil: discard).
	Logger *slog.Logger
}

// Summary is the outcome of an index run.
type Summary struct {
	Total    int // items listed
	Done     int // items (re)processed and committed in full
	UpToDate int // items that needed nothing
	Failed   int // items with at least one failed stage
	Removed  int // DB images no longer listed, dropped
	// Captions tells whether captions were made (false: no captioner).
	Captions   bool
	CaptionKey string
	Failures   []Failure
	Elapsed    time.Duration
}

// job is one item moving through the pipeline.
type job struct {
	item             Item
	id               int64 // existing images.id, 0 if new
	pos              int
	changed          bool // content differs from the stored row: drop derived data
	usable           bool // read and header-decoded: the image gets a row
	dirty            bool // the stored row or failure record must be rewritten
	hash             string
	size, mtime      int64
	width, height    int
	needImg, needCap bool // compute image embedding / caption
	needCapEmb       bool // compute caption embedding
	caption          string
	imgVec, capVec   []float32
	fails            []Failure
	pending          atomic.Int32
}

func (j *job) fail(stage string, err error) {
	j.fails = append(j.fails, Failure{Name: j.item.Name, Path: j.item.Path, Stage: stage, Reason: err.Error()})
}

type storedImage struct {
	id          int64
	pos         int
	path, hash  string
	size, mtime int64
	w, h        int
}

// Index brings the DB in line with items: new or changed files are
// captioned and embedded, unchanged complete ones are skipped, images no
// longer listed are dropped. Each finished item is committed on its own, so
// an interrupted run loses at most the items in flight. Per-item failures
// are recorded (see Failures) and do not stop the run.
func (db *DB) Index(ctx context.Context, items []Item, opt IndexOptions) (*Summary, error) {
	start := time.Now()
	if opt.Embedder == nil {
		return nil, errors.New("index: no embedder")
	}
	if opt.Captioner != nil && opt.CaptionModel == "" {
		return nil, errors.New("index: a captioner needs its model name (CaptionModel)")
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opt.CaptionWorkers <= 0 {
		opt.CaptionWorkers = 4
	}
	if opt.EmbedBatch <= 0 {
		opt.EmbedBatch = 8
	}
	if opt.ReadWorkers <= 0 {
		opt.ReadWorkers = 2
	}
	model, dim := opt.Embedder.ModelID(), opt.Embedder.Dim()
	if err := db.BindModel(ctx, model, dim); err != nil {
		return nil, err
	}
	seen := make(map[string]int, len(items))
	for i, it := range items {
		if it.Name == "" {
			return nil, fmt.Errorf("index: item %d (%s) has no name", i, it.Path)
		}
		if j, dup := seen[it.Name]; dup {
			return nil, fmt.Errorf("index: image name %q is listed twice (%s and %s)", it.Name, items[j].Path, it.Path)
		}
		seen[it.Name] = i
	}
	sum := &Summary{Total: len(items), Captions: opt.Captioner != nil}
	capKey := ""
	if opt.Captioner != nil {
		capKey = CaptionKey(opt.CaptionModel, opt.CaptionPrompt)
		sum.CaptionKey = capKey
		if err := ensureCaptionSet(ctx, db.sql, capKey, opt.CaptionModel, opt.CaptionPrompt); err != nil {
			return nil, err
		}
	}

	stored, err := db.storedImages(ctx)
	if err != nil {
		return nil, err
	}
	if sum.Removed, err = db.syncListing(ctx, items, stored); err != nil {
		return nil, err
	}
	hasImg, err := db.idSet(ctx, `SELECT image_id FROM image_embeddings WHERE model = ?`, model)
	if err != nil {
		return nil, err
	}
	var hasCap, hasCapEmb map[int64]bool
	if capKey != "" {
		if hasCap, err = db.idSet(ctx, `SELECT image_id FROM captions WHERE key = ?`, capKey); err != nil {
			return nil, err
		}
		if hasCapEmb, err = db.idSet(ctx, `SELECT image_id FROM caption_embeddings WHERE key = ? AND model = ?`, capKey, model); err != nil {
			return nil, err
		}
	}
	failed, err := db.failedNames(ctx)
	if err != nil {
		return nil, err
	}
	if opt.Progress != nil {
		opt.Progress.SetTotal(int64(len(items)))
	}
	var upToDate atomic.Int64

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		readQ   = make(chan *job)
		imgQ    = make(chan *job, 4*opt.EmbedBatch)
		capQ    = make(chan *job, 2*opt.CaptionWorkers)
		textQ   = make(chan *job, 4*opt.EmbedBatch)
		commitQ = make(chan *job, 64)
	)
	finish := func(j *job) {
		if j.pending.Add(-1) == 0 {
			commitQ <- j
		}
	}
	// dispatch sends a read job on to the stages it needs.
	dispatch := func(j *job) {
		n := int32(1) // the dispatcher's own hold, released below
		if j.needImg {
			n++
		}
		if j.needCap || j.needCapEmb {
			n++
		}
		j.pending.Store(n)
		if j.needImg {
			imgQ <- j
		}
		switch {
		case j.needCap:
			capQ <- j
		case j.needCapEmb:
			textQ <- j
		}
		finish(j)
	}

	// Readers: stat, hash and size up each item, decide what it needs.
	var readers sync.WaitGroup
	for range opt.ReadWorkers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for j := range readQ {
				if ctx.Err() != nil {
					continue
				}
				db.readItem(j, stored, hasImg, hasCap, hasCapEmb, failed, capKey != "")
				if !j.usable || j.dirty || j.needImg || j.needCap || j.needCapEmb {
					dispatch(j)
				} else {
					upToDate.Add(1)
					if opt.Progress != nil {
						opt.Progress.Add(1)
					}
				}
			}
		}()
	}
	// Caption workers (network): caption, then queue the text for embedding.
	var captioners sync.WaitGroup
	for range opt.CaptionWorkers {
		captioners.Add(1)
		go func() {
			defer captioners.Done()
			for j := range capQ {
				if ctx.Err() != nil {
					finish(j)
					continue
				}
				text, err := opt.Captioner.Caption(ctx, j.item.Path)
				if err == nil && text == "" {
					err = errors.New("empty caption")
				}
				if err != nil {
					if ctx.Err() == nil {
						j.fail("caption", err)
					}
					finish(j)
					continue
				}
				j.caption = text
				j.needCapEmb = true
				textQ <- j
			}
		}()
	}
	// The embedder (CPU): one goroutine, caption texts before images so
	// captioned items complete early, batches of up to EmbedBatch.
	embedDone := make(chan struct{})
	go func() {
		defer close(embedDone)
		db.embedLoop(ctx, opt, imgQ, textQ, finish)
	}()
	// Feeder, then the closing chain.
	go func() {
		defer close(readQ)
		for i, it := range items {
			j := &job{item: it, pos: i}
			select {
			case readQ <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		readers.Wait()
		close(capQ)
		close(imgQ)
		captioners.Wait()
		close(textQ)
		<-embedDone
		close(commitQ)
	}()

	// Committer: this goroutine, one transaction per finished item.
	var commitErr error
	for j := range commitQ {
		if commitErr != nil || ctx.Err() != nil {
			continue
		}
		if err := db.commit(ctx, j, model, capKey, opt.Float16); err != nil {
			commitErr = fmt.Errorf("index: commit image %s: %w", j.item.Name, err)
			cancel(commitErr)
			continue
		}
		switch {
		case len(j.fails) > 0:
			sum.Failed++
			sum.Failures = append(sum.Failures, j.fails...)
			for _, f := range j.fails {
				log.Warn("index: image failed", "name", f.Name, "path", f.Path, "stage", f.Stage, "reason", f.Reason)
			}
		case j.needImg || j.needCap || j.needCapEmb || j.changed:
			sum.Done++
		default:
			sum.UpToDate++
		}
		if opt.Progress != nil {
			opt.Progress.Add(1)
		}
	}
	sum.UpToDate += int(upToDate.Load())
	sum.Elapsed = time.Since(start)
	sort.Slice(sum.Failures, func(a, b int) bool { return sum.Failures[a].Name < sum.Failures[b].Name })
	if commitErr != nil {
		return sum, commitErr
	}
	if err := context.Cause(ctx); err != nil {
		return sum, fmt.Errorf("index interrupted after %d of %d images: %w", sum.Done+sum.UpToDate+sum.Failed, sum.Total, err)
	}
	return sum, nil
}

// readItem fills in the file identity and decides what j needs.
func (db *DB) readItem(j *job, stored map[string]storedImage, hasImg, hasCap, hasCapEmb map[int64]bool, failed map[string]bool, captions bool) {
	st, known := stored[j.item.Name]
	if known {
		j.id = st.id
	}
	defer func() {
		j.dirty = !known || failed[j.item.Name] || j.changed || st.path != j.item.Path || st.size != j.size ||
			st.mtime != j.mtime || st.hash != j.hash || st.w != j.width || st.h != j.height
	}()
	fi, err := os.Stat(j.item.Path)
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		j.fail("read", err)
		return
	}
	j.size, j.mtime = fi.Size(), fi.ModTime().UnixNano()
	if known && st.hash != "" && st.size == j.size && st.mtime == j.mtime && st.path == j.item.Path {
		j.hash, j.width, j.height = st.hash, st.w, st.h
	} else {
		h, err := hashFile(j.item.Path)
		if err != nil {
			j.fail("read", err)
			return
		}
		j.hash = h
		// A stored row without a hash came from an import: adopt it.
		j.changed = known && st.hash != "" && st.hash != h
		if !known || j.changed || st.w == 0 {
			info, err := imageio.ReadInfoFile(j.item.Path)
			if err != nil {
				j.fail("decode", err)
				return
			}
			j.width, j.height = info.Width, info.Height
		} else {
			j.width, j.height = st.w, st.h
		}
	}
	j.usable = true
	fresh := !known || j.changed
	j.needImg = fresh || !hasImg[j.id]
	if captions {
		j.needCap = fresh || !hasCap[j.id]
		j.needCapEmb = !j.needCap && !hasCapEmb[j.id]
	}
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// embedLoop serves image and text embedding requests in batches.
func (db *DB) embedLoop(ctx context.Context, opt IndexOptions, imgQ, textQ <-chan *job, finish func(*job)) {
	dim := opt.Embedder.Dim()
	B := opt.EmbedBatch
	for imgQ != nil || textQ != nil {
		var batch []*job
		isText := false
		// Prefer texts that are already waiting.
		select {
		case j, ok := <-textQ:
			if !ok {
				textQ = nil
				continue
			}
			batch, isText = append(batch, j), true
		default:
			select {
			case j, ok := <-textQ:
				if !ok {
					textQ = nil
					continue
				}
				batch, isText = append(batch, j), true
			case j, ok := <-imgQ:
				if !ok {
					imgQ = nil
					continue
				}
				batch = append(batch, j)
			}
		}
		q := imgQ
		if isText {
			q = textQ
		}
	fill:
		for len(batch) < B {
			select {
			case j, ok := <-q:
				if !ok {
					break fill
				}
				batch = append(batch, j)
			default:
				break fill
			}
		}
		if ctx.Err() != nil {
			for _, j := range batch {
				finish(j)
			}
			continue
		}
		if isText {
			texts := make([]string, len(batch))
			for i, j := range batch {
				texts[i] = j.caption
			}
			vecs, err := opt.Embedder.EmbedTexts(ctx, texts)
			if err == nil && len(vecs) != len(batch) {
				err = fmt.Errorf("embedder returned %d vectors for %d texts", len(vecs), len(batch))
			}
			for i, j := range batch {
				switch {
				case err != nil:
					j.fail("embed-caption", err)
				default:
					if verr := checkVec(vecs[i], dim); verr != nil {
						j.fail("embed-caption", verr)
					} else {
						j.capVec = vecs[i]
					}
				}
				finish(j)
			}
			continue
		}
		paths := make([]string, len(batch))
		for i, j := range batch {
			paths[i] = j.item.Path
		}
		vecs, errs, err := opt.Embedder.EmbedImageFiles(ctx, paths)
		if err == nil && (len(vecs) != len(batch) || (errs != nil && len(errs) != len(batch))) {
			err = fmt.Errorf("embedder returned %d vectors for %d images", len(vecs), len(batch))
		}
		for i, j := range batch {
			switch {
			case err != nil:
				j.fail("embed", err)
			case errs != nil && errs[i] != nil:
				j.fail("embed", errs[i])
			default:
				if verr := checkVec(vecs[i], dim); verr != nil {
					j.fail("embed", verr)
				} else {
					j.imgVec = vecs[i]
				}
			}
			finish(j)
		}
	}
}

func checkVec(v []float32, dim int) error {
	if len(v) != dim {
		return fmt.Errorf("embedding has dimension %d, want %d", len(v), dim)
	}
	w := make([]float32, dim)
	copy(w, v)
	if !l2.Normalize(w) {
		return errors.New("embedding is zero or not finite")
	}
	copy(v, w)
	for _, x := range v {
		if math.IsNaN(float64(x)) {
			return errors.New("embedding is not finite")
		}
	}
	return nil
}

// commit writes one finished item in one transaction.
func (db *DB) commit(ctx context.Context, j *job, model, capKey string, f16 bool) error {
	readFailed := !j.usable
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if readFailed {
		// Nothing usable: a stale entry for this name must go too.
		if j.id != 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, j.id); err != nil {
				return err
			}
		}
	} else {
		if j.changed && j.id != 0 {
			for _, q := range []string{
				`DELETE FROM image_embeddings WHERE image_id = ?`,
				`DELETE FROM captions WHERE image_id = ?`,
				`DELETE FROM caption_embeddings WHERE image_id = ?`,
			} {
				if _, err := tx.ExecContext(ctx, q, j.id); err != nil {
					return err
				}
			}
		}
		var id int64
		err := tx.QueryRowContext(ctx, `
			INSERT INTO images(name, pos, path, hash, size, mtime, width, height) VALUES(?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET pos = excluded.pos, path = excluded.path, hash = excluded.hash,
				size = excluded.size, mtime = excluded.mtime, width = excluded.width, height = excluded.height
			RETURNING id`,
			j.item.Name, j.pos, j.item.Path, j.hash, j.size, j.mtime, j.width, j.height).Scan(&id)
		if err != nil {
			return err
		}
		if j.imgVec != nil {
			dt, b := encodeVec(j.imgVec, f16)
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO image_embeddings(image_id, model, dtype, vec) VALUES(?, ?, ?, ?)`, id, model, dt, b); err != nil {
				return err
			}
		}
		if j.caption != "" {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO captions(image_id, key, text) VALUES(?, ?, ?)`, id, capKey, j.caption); err != nil {
				return err
			}
		}
		if j.capVec != nil {
			dt, b := encodeVec(j.capVec, f16)
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO caption_embeddings(image_id, key, model, dtype, vec) VALUES(?, ?, ?, ?, ?)`, id, capKey, model, dt, b); err != nil {
				return err
			}
		}
	}
	if len(j.fails) == 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM failures WHERE name = ?`, j.item.Name); err != nil {
			return err
		}
	} else {
		f := j.fails[0]
		stage, reason := f.Stage, f.Reason
		for _, g := range j.fails[1:] {
			stage += "," + g.Stage
			reason += "; " + g.Reason
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO failures(name, path, stage, reason) VALUES(?, ?, ?, ?)`,
			j.item.Name, j.item.Path, stage, reason); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (db *DB) storedImages(ctx context.Context) (map[string]storedImage, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT id, name, pos, path, hash, size, mtime, width, height FROM images`)
	if err != nil {
		return nil, fmt.Errorf("read image list: %w", err)
	}
	defer rows.Close()
	out := map[string]storedImage{}
	for rows.Next() {
		var s storedImage
		var name string
		if err := rows.Scan(&s.id, &name, &s.pos, &s.path, &s.hash, &s.size, &s.mtime, &s.w, &s.h); err != nil {
			return nil, fmt.Errorf("read image list: %w", err)
		}
		out[name] = s
	}
	return out, rows.Err()
}

func (db *DB) failedNames(ctx context.Context) (map[string]bool, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT name FROM failures`)
	if err != nil {
		return nil, fmt.Errorf("read failures: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("read failures: %w", err)
		}
		out[n] = true
	}
	return out, rows.Err()
}

func (db *DB) idSet(ctx context.Context, q string, args ...any) (map[int64]bool, error) {
	rows, err := db.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read index state: %w", err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read index state: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// syncListing drops images (and failures) no longer listed and stores the
// listing order, in one transaction.
func (db *DB) syncListing(ctx context.Context, items []Item, stored map[string]storedImage) (int, error) {
	listed := make(map[string]int, len(items))
	for i, it := range items {
		listed[it.Name] = i
	}
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("update image list: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	removed := 0
	for name, st := range stored {
		pos, ok := listed[name]
		switch {
		case !ok:
			if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, st.id); err != nil {
				return 0, fmt.Errorf("drop image %s: %w", name, err)
			}
			delete(stored, name)
			removed++
		case pos != st.pos:
			if _, err := tx.ExecContext(ctx, `UPDATE images SET pos = ? WHERE id = ?`, pos, st.id); err != nil {
				return 0, fmt.Errorf("update image %s: %w", name, err)
			}
			st.pos = pos
			stored[name] = st
		}
	}
	frows, err := tx.QueryContext(ctx, `SELECT name FROM failures`)
	if err != nil {
		return 0, fmt.Errorf("read failures: %w", err)
	}
	var gone []string
	for frows.Next() {
		var n string
		if err := frows.Scan(&n); err != nil {
			frows.Close()
			return 0, err
		}
		if _, ok := listed[n]; !ok {
			gone = append(gone, n)
		}
	}
	frows.Close()
	for _, n := range gone {
		if _, err := tx.ExecContext(ctx, `DELETE FROM failures WHERE name = ?`, n); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("update image list: %w", err)
	}
	return removed, nil
}
