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
//
// Planning comes first (plan.go): what the DB holds is read and the
// listing diffed against it; then each item is read, captioned, embedded
// and stored as far as it needs.
func (db *DB) Index(ctx context.Context, items []Item, opt IndexOptions) (*Summary, error) {
	start := time.Now()
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	model, dim := opt.Embedder.ModelID(), opt.Embedder.Dim()
	if err := db.BindModel(ctx, model, dim); err != nil {
		return nil, err
	}
	if err := checkNames(items); err != nil {
		return nil, err
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
	state, err := db.loadIndexState(ctx, model, capKey)
	if err != nil {
		return nil, err
	}
	listing := planListing(items, state.stored, state.failed)
	if err := db.applyListing(ctx, listing); err != nil {
		return nil, err
	}
	sum.Removed = len(listing.Removed)

	r := &indexRun{db: db, opt: opt, state: state, model: model, capKey: capKey, sum: sum}
	err = r.run(ctx, items)
	sum.Elapsed = time.Since(start)
	sort.Slice(sum.Failures, func(a, b int) bool { return sum.Failures[a].Name < sum.Failures[b].Name })
	return sum, err
}

// withDefaults checks the options and fills in the defaults.
func (opt IndexOptions) withDefaults() (IndexOptions, error) {
	if opt.Embedder == nil {
		return opt, errors.New("index: no embedder")
	}
	if opt.Captioner != nil && opt.CaptionModel == "" {
		return opt, errors.New("index: a captioner needs its model name (CaptionModel)")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
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
	return opt, nil
}

// checkNames refuses items without a name or with a name listed twice.
func checkNames(items []Item) error {
	seen := make(map[string]int, len(items))
	for i, it := range items {
		if it.Name == "" {
			return fmt.Errorf("index: item %d (%s) has no name", i, it.Path)
		}
		if j, dup := seen[it.Name]; dup {
			return fmt.Errorf("index: image name %q is listed twice (%s and %s)", it.Name, items[j].Path, it.Path)
		}
		seen[it.Name] = i
	}
	return nil
}

// indexRun is the doing half of one DB.Index call: items flow from a
// feeder through readers (identify, then needs), caption workers and one
// embedder to the committer, each stage a goroutine pool joined by
// channels. An item that needs nothing stops at the reader.
type indexRun struct {
	db            *DB
	opt           IndexOptions
	state         *indexState
	model, capKey string
	sum           *Summary

	ctx    context.Context
	cancel context.CancelCauseFunc

	readQ, imgQ, capQ, textQ, commitQ chan *job
	upToDate                          atomic.Int64
}

// run moves every item through the stages and fills r.sum.
func (r *indexRun) run(ctx context.Context, items []Item) error {
	if r.opt.Progress != nil {
		r.opt.Progress.SetTotal(int64(len(items)))
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	defer r.cancel(nil)
	B, C := r.opt.EmbedBatch, r.opt.CaptionWorkers
	r.readQ = make(chan *job)
	r.imgQ = make(chan *job, 4*B)
	r.capQ = make(chan *job, 2*C)
	r.textQ = make(chan *job, 4*B)
	r.commitQ = make(chan *job, 64)

	var readers, captioners sync.WaitGroup
	for range r.opt.ReadWorkers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			r.readLoop()
		}()
	}
	for range C {
		captioners.Add(1)
		go func() {
			defer captioners.Done()
			r.captionLoop()
		}()
	}
	// The embedder (CPU): one goroutine, caption texts before images so
	// captioned items complete early, batches of up to EmbedBatch.
	embedDone := make(chan struct{})
	go func() {
		defer close(embedDone)
		r.db.embedLoop(r.ctx, r.opt, r.imgQ, r.textQ, r.finish)
	}()
	go r.feed(items)
	// The closing chain: each stage's queue closes once all its senders
	// are done.
	go func() {
		readers.Wait()
		close(r.capQ)
		close(r.imgQ)
		captioners.Wait()
		close(r.textQ)
		<-embedDone
		close(r.commitQ)
	}()

	commitErr := r.commitLoop()
	sum := r.sum
	sum.UpToDate += int(r.upToDate.Load())
	if commitErr != nil {
		return commitErr
	}
	if err := context.Cause(r.ctx); err != nil {
		return fmt.Errorf("index interrupted after %d of %d images: %w", sum.Done+sum.UpToDate+sum.Failed, sum.Total, err)
	}
	return nil
}

// feed sends every item to the readers, in listing order.
func (r *indexRun) feed(items []Item) {
	defer close(r.readQ)
	for i, it := range items {
		j := &job{item: it, pos: i}
		select {
		case r.readQ <- j:
		case <-r.ctx.Done():
			return
		}
	}
}

// readLoop stats, hashes and sizes up each item, decides what it needs and
// sends it on; an item that needs nothing is counted and goes no further.
func (r *indexRun) readLoop() {
	for j := range r.readQ {
		if r.ctx.Err() != nil {
			continue
		}
		st, known := r.state.stored[j.item.Name]
		identify(j, st, known)
		r.state.needs(j)
		if !j.upToDate() {
			r.dispatch(j)
			continue
		}
		r.upToDate.Add(1)
		if r.opt.Progress != nil {
			r.opt.Progress.Add(1)
		}
	}
}

// dispatch sends a read job on to the stages it needs.
func (r *indexRun) dispatch(j *job) {
	n := int32(1) // the dispatcher's own hold, released below
	if j.needImg {
		n++
	}
	if j.needCap || j.needCapEmb {
		n++
	}
	j.pending.Store(n)
	if j.needImg {
		r.imgQ <- j
	}
	switch {
	case j.needCap:
		r.capQ <- j
	case j.needCapEmb:
		r.textQ <- j
	}
	r.finish(j)
}

// finish releases one stage's hold on j; the last one sends it to commit.
func (r *indexRun) finish(j *job) {
	if j.pending.Add(-1) == 0 {
		r.commitQ <- j
	}
}

// captionLoop (network) captions each job, then queues the text for
// embedding.
func (r *indexRun) captionLoop() {
	for j := range r.capQ {
		if r.ctx.Err() != nil {
			r.finish(j)
			continue
		}
		text, err := r.opt.Captioner.Caption(r.ctx, j.item.Path)
		if err == nil && text == "" {
			err = errors.New("empty caption")
		}
		if err != nil {
			if r.ctx.Err() == nil {
				j.fail("caption", err)
			}
			r.finish(j)
			continue
		}
		j.caption = text
		j.needCapEmb = true
		r.textQ <- j
	}
}

// commitLoop stores each finished item in its own transaction, on the
// calling goroutine, and counts it. A failed commit stops the run.
func (r *indexRun) commitLoop() error {
	sum, log := r.sum, r.opt.Logger
	var commitErr error
	for j := range r.commitQ {
		if commitErr != nil || r.ctx.Err() != nil {
			continue
		}
		if err := r.db.commit(r.ctx, j, r.model, r.capKey, r.opt.Float16); err != nil {
			commitErr = fmt.Errorf("index: commit image %s: %w", j.item.Name, err)
			r.cancel(commitErr)
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
		if r.opt.Progress != nil {
			r.opt.Progress.Add(1)
		}
	}
	return commitErr
}

// identify fills in j's file identity: size and modification time, and the
// content hash and pixel size, reused from the stored row st when the file
// looks untouched. A file that cannot be read or whose header does not
// decode is recorded as failed and stays unusable.
func identify(j *job, st storedImage, known bool) {
	if known {
		j.id = st.id
	}
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
		j.usable = true
		return
	}
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
	j.usable = true
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
	for imgQ != nil || textQ != nil {
		batch, isText := nextBatch(&imgQ, &textQ, opt.EmbedBatch)
		if len(batch) == 0 {
			continue // a queue closed
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
			takeVecs(batch, vecs, nil, err, dim, "embed-caption", func(j *job, v []float32) { j.capVec = v }, finish)
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
		takeVecs(batch, vecs, errs, err, dim, "embed", func(j *job, v []float32) { j.imgVec = v }, finish)
	}
}

// nextBatch takes up to most jobs from one queue: caption texts when one
// is already waiting (captioned items then complete early), else the first
// job of either queue and whatever of its kind is waiting behind it. A
// queue found closed is set to nil and the batch is empty.
func nextBatch(imgQ, textQ *<-chan *job, most int) (batch []*job, isText bool) {
	select {
	case j, ok := <-*textQ:
		if !ok {
			*textQ = nil
			return nil, false
		}
		batch, isText = append(batch, j), true
	default:
		select {
		case j, ok := <-*textQ:
			if !ok {
				*textQ = nil
				return nil, false
			}
			batch, isText = append(batch, j), true
		case j, ok := <-*imgQ:
			if !ok {
				*imgQ = nil
				return nil, false
			}
			batch = append(batch, j)
		}
	}
	q := *imgQ
	if isText {
		q = *textQ
	}
	for len(batch) < most {
		select {
		case j, ok := <-q:
			if !ok {
				return batch, isText
			}
			batch = append(batch, j)
		default:
			return batch, isText
		}
	}
	return batch, isText
}

// takeVecs hands each job of an embedded batch its vector (checked and
// normalised by checkVec) through set, or records the failure (of the
// whole call, err; of the item alone, errs[i]) under stage, then releases
// the job.
func takeVecs(batch []*job, vecs [][]float32, errs []error, err error, dim int, stage string, set func(j *job, v []float32), finish func(*job)) {
	for i, j := range batch {
		switch {
		case err != nil:
			j.fail(stage, err)
		case errs != nil && errs[i] != nil:
			j.fail(stage, errs[i])
		default:
			if verr := checkVec(vecs[i], dim); verr != nil {
				j.fail(stage, verr)
			} else {
				set(j, vecs[i])
			}
		}
		finish(j)
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
	return querySet[string](ctx, db, "read failures", `SELECT name FROM failures`)
}

func (db *DB) idSet(ctx context.Context, q string, args ...any) (map[int64]bool, error) {
	return querySet[int64](ctx, db, "read index state", q, args...)
}

// querySet returns the values of the one column q selects, as a set;
// errors start with what.
func querySet[K comparable](ctx context.Context, db *DB, what, q string, args ...any) (map[K]bool, error) {
	rows, err := db.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := map[K]bool{}
	for rows.Next() {
		var k K
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out[k] = true
	}
	return out, rows.Err()
}
