package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/queue"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// WorkerSpec is how 'imagescope worker' processes queued items.
type WorkerSpec struct {
	// Queue are the consumer's settings; zero fields take the
	// configuration's queue section (concurrency default 2).
	Queue queue.WorkerOptions
	// CLIPModel, when set, is the only CLIP model this worker loads: a
	// job naming another one is refused.
	CLIPModel string
	Log       *slog.Logger
	// Getenv reads the environment (Weaviate URL and API key).
	Getenv func(string) string
	// ClipProgress reports hub downloads of a CLIP checkpoint.
	ClipProgress func(file string, done, total int64)
}

// WorkerOptions fills opt's zero fields from the configuration's queue
// section.
func WorkerOptions(cfg *config.Config, opt queue.WorkerOptions) queue.WorkerOptions {
	opt.Concurrency = firstPositive(opt.Concurrency, cfg.Queue.Concurrency, 2)
	opt.AckWait = time.Duration(firstPositive(int(opt.AckWait), int(cfg.Queue.AckWait)))
	opt.MaxAttempts = firstPositive(opt.MaxAttempts, cfg.Queue.MaxAttempts)
	return opt
}

// Work processes the queue's items (every job's, or spec.Queue.Jobs')
// until the context ends or, with ExitWhenIdle, nothing is left: each item
// is embedded with CLIP, captioned when its job asks for captions, and
// written to the job's store before it is acknowledged.
func Work(ctx context.Context, cfg *config.Config, q *queue.Queue, spec WorkerSpec) (queue.WorkerStats, error) {
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	opt := WorkerOptions(cfg, spec.Queue)
	p := NewIndexProcessor(cfg, spec)
	defer p.Close()
	var mu sync.Mutex
	var done int
	onDone := opt.OnDone
	opt.OnDone = func(job string, it queue.Item) {
		mu.Lock()
		done++
		n := done
		mu.Unlock()
		if n%100 == 0 {
			spec.Log.Info("worker progress", "done", n, "job", job)
		}
		if onDone != nil {
			onDone(job, it)
		}
	}
	spec.Log.Info("worker started", "queue", q.URL(), "jobs", strings.Join(opt.Jobs, ","), "concurrency", opt.Concurrency)
	return q.Work(ctx, p, opt)
}

func firstPositive(vs ...int) int {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

// IndexProcessor is the worker's queue.Processor: it embeds, captions and
// writes one item. Models, the captioner and the stores are opened on a
// job's first item and kept until Close.
type IndexProcessor struct {
	cfg  *config.Config
	spec WorkerSpec

	mu        sync.Mutex
	models    map[string]*clip.Model
	sinks     map[string]itemSink
	roles     *Roles
	rolesErr  error
	rolesOnce sync.Once
}

// NewIndexProcessor returns a processor for cfg; spec.Queue is not used.
func NewIndexProcessor(cfg *config.Config, spec WorkerSpec) *IndexProcessor {
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	if spec.Getenv == nil {
		spec.Getenv = func(string) string { return "" }
	}
	return &IndexProcessor{cfg: cfg, spec: spec, models: map[string]*clip.Model{}, sinks: map[string]itemSink{}}
}

// itemSink writes one finished item durably.
type itemSink interface {
	write(ctx context.Context, it queue.Item, caption string, img, capv []float32) error
	close()
}

// Close flushes and closes the stores and the answer cache.
func (p *IndexProcessor) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.sinks {
		s.close()
	}
	if p.roles != nil {
		p.roles.Close()
	}
}

func (p *IndexProcessor) model(ctx context.Context, job *queue.Job) (*clip.Model, error) {
	ref := job.CLIPModel
	if p.spec.CLIPModel != "" {
		if ref != "" && ref != p.spec.CLIPModel {
			return nil, queue.Fatal(fmt.Errorf("job %s expects CLIP model %q, this worker was started with --clip %q", job.ID, ref, p.spec.CLIPModel))
		}
		ref = p.spec.CLIPModel
	}
	if ref == "" {
		ref = p.cfg.CLIP.Model
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.models[ref]; ok {
		return m, nil
	}
	m, err := clip.Load(ctx, ref, clip.Options{Threads: p.cfg.CLIP.Threads, Logger: p.spec.Log, Progress: p.spec.ClipProgress})
	if err != nil {
		return nil, queue.Fatal(fmt.Errorf("load CLIP model %s for job %s: %w", ref, job.ID, err))
	}
	p.models[ref] = m
	return m, nil
}

func (p *IndexProcessor) captioner(ctx context.Context, job *queue.Job) (gallery.Captioner, error) {
	want := job.Params[paramCaptionModel]
	if want == "" {
		return nil, nil
	}
	p.rolesOnce.Do(func() { p.roles, p.rolesErr = OpenRoles(ctx, p.cfg, p.spec.Log, false) })
	if p.rolesErr != nil {
		return nil, queue.Fatal(p.rolesErr)
	}
	c, ok := p.roles.Clients[modelrole.Captioner]
	if !ok {
		return nil, queue.Fatal(fmt.Errorf("job %s needs captions from %q, but this worker has no captioner configured", job.ID, want))
	}
	rc, _ := p.cfg.Role(modelrole.Captioner)
	if got := rc.CacheModelID(); got != want {
		return nil, queue.Fatal(fmt.Errorf("job %s needs captions from %q, this worker's captioner is %q", job.ID, want, got))
	}
	return adapt.Captioner{Client: c, Instruction: job.Params[paramCaptionPrompt]}, nil
}

func (p *IndexProcessor) sink(ctx context.Context, job *queue.Job, m *clip.Model) (itemSink, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := job.ID + "\x00" + m.ID()
	if s, ok := p.sinks[key]; ok {
		return s, nil
	}
	var s itemSink
	switch {
	case strings.HasPrefix(job.Store, storeDB):
		path := strings.TrimPrefix(job.Store, storeDB)
		db, err := gallery.Open(ctx, path)
		if err != nil {
			return nil, queue.Fatal(fmt.Errorf("open image DB %s for job %s: %w", path, job.ID, err))
		}
		s = &dbSink{db: db, model: m.ID(), dim: m.Dim(), captionModel: job.Params[paramCaptionModel], captionPrompt: job.Params[paramCaptionPrompt]}
	case strings.HasPrefix(job.Store, storeWeaviate):
		meta := weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim(), HasCaptions: job.Params[paramCaptionModel] != "", Gallery: job.Gallery, CaptionKey: job.CaptionKey}
		st, err := weaviate.Open(ctx, p.jobWeaviateConfig(job), meta, true)
		if err != nil {
			return nil, queue.Fatal(fmt.Errorf("job %s: %w", job.ID, err))
		}
		s = newWeaviateSink(st, p.spec.Log)
	default:
		return nil, queue.Fatal(fmt.Errorf("job %s: unknown store %q (want db:PATH or weaviate:COLLECTION)", job.ID, job.Store))
	}
	p.sinks[key] = s
	return s, nil
}

// jobWeaviateConfig is the Weaviate store a job writes to: this worker's
// environment and configuration name the nodes when they can (the
// publisher's URLs may not be reachable from here), the job names the
// collection, replicas and shards.
func (p *IndexProcessor) jobWeaviateConfig(job *queue.Job) weaviate.Config {
	getenv := p.spec.Getenv
	wc := weaviate.Config{
		URLs:             splitComma(firstNonEmpty(getenv("IMAGESCOPE_WEAVIATE_URL"), p.cfg.Weaviate.URL, job.Params[paramWeaviateURL])),
		GRPCAddrs:        splitComma(firstNonEmpty(p.cfg.Weaviate.GRPC, job.Params[paramWeaviateGRPC])),
		Collection:       firstNonEmpty(job.Params[paramCollection], strings.TrimPrefix(job.Store, storeWeaviate)),
		ConsistencyLevel: p.cfg.Weaviate.ConsistencyLevel,
		Logger:           p.spec.Log,
	}
	wc.Replicas, _ = strconv.Atoi(job.Params[paramReplicas])
	wc.Shards, _ = strconv.Atoi(job.Params[paramShards])
	if p.cfg.Weaviate.APIKeyEnv != "" {
		wc.APIKey = getenv(p.cfg.Weaviate.APIKeyEnv)
	}
	return wc
}

// Process embeds, captions and writes one item.
func (p *IndexProcessor) Process(ctx context.Context, job *queue.Job, it queue.Item) error {
	m, err := p.model(ctx, job)
	if err != nil {
		return err
	}
	capt, err := p.captioner(ctx, job)
	if err != nil {
		return err
	}
	sink, err := p.sink(ctx, job, m)
	if err != nil {
		return err
	}
	res, err := m.EmbedImageFiles(ctx, []string{it.Path})
	if err != nil {
		return fmt.Errorf("embed image %s: %w", it.Name, err)
	}
	if len(res) != 1 {
		return fmt.Errorf("embed image %s: %d results", it.Name, len(res))
	}
	if res[0].Err != nil {
		// The file itself is unreadable or not an image: retrying will not help.
		return queue.Permanent(fmt.Errorf("embed image %s (%s): %w", it.Name, it.Path, res[0].Err))
	}
	img := res[0].Vector
	var caption string
	var capv []float32
	if capt != nil {
		caption, err = capt.Caption(ctx, it.Path)
		if err != nil {
			return fmt.Errorf("caption image %s: %w", it.Name, err)
		}
		if caption == "" {
			return fmt.Errorf("caption image %s: empty caption", it.Name)
		}
		tr, err := m.EmbedTexts(ctx, []string{caption})
		if err != nil {
			return fmt.Errorf("embed caption of %s: %w", it.Name, err)
		}
		if len(tr) != 1 || tr[0].Err != nil {
			return fmt.Errorf("embed caption of %s: %v", it.Name, tr)
		}
		capv = tr[0].Vector
	}
	return sink.write(ctx, it, caption, img, capv)
}

// dbSink writes into the embedded image DB (one transaction per item).
type dbSink struct {
	db                          *gallery.DB
	model                       string
	dim                         int
	captionModel, captionPrompt string
}

func (s *dbSink) write(ctx context.Context, it queue.Item, caption string, img, capv []float32) error {
	rec := gallery.Record{Item: gallery.Item{Name: it.Name, Path: it.Path}, Pos: it.Ord, Image: img}
	if caption != "" {
		rec.Caption, rec.CaptionModel, rec.CaptionPrompt, rec.CaptionVec = caption, s.captionModel, s.captionPrompt, capv
	}
	if err := s.db.Put(ctx, s.model, s.dim, rec); err != nil {
		if strings.Contains(err.Error(), "CLIP model") || strings.Contains(err.Error(), "dimension") {
			return queue.Fatal(err)
		}
		return err
	}
	return nil
}

func (s *dbSink) close() { _ = s.db.Close() }

// weaviateSink upserts into a Weaviate collection. Writes of items processed
// at the same time go to Weaviate as one batch request (group commit): a
// write returns only after Weaviate confirmed its batch at the configured
// consistency level, so every item is still acknowledged only after its
// own durable write.
type weaviateSink struct {
	st    *weaviate.Store
	log   *slog.Logger
	queue chan *pendingWrite
	// batches and objects count the batch requests and what they carried
	// (touched by the flusher only; read after it stopped).
	batches, objects int
	stop             context.CancelFunc
	closed           sync.WaitGroup
}

type pendingWrite struct {
	obj  weaviate.Object
	done chan error // buffered: the flusher never blocks on a writer that left
}

func newWeaviateSink(st *weaviate.Store, log *slog.Logger) *weaviateSink {
	ctx, stop := context.WithCancel(context.Background())
	s := &weaviateSink{st: st, log: log, queue: make(chan *pendingWrite, 1024), stop: stop}
	s.closed.Add(1)
	go s.flush(ctx)
	return s
}

func (s *weaviateSink) write(ctx context.Context, it queue.Item, caption string, img, capv []float32) error {
	img = l2.Normalized(img)
	if capv != nil {
		capv = l2.Normalized(capv)
	}
	w := &pendingWrite{obj: weaviate.Object{Name: it.Name, Path: it.Path, Caption: caption, Ord: it.Ord, Image: img, CaptionVec: capv}, done: make(chan error, 1)}
	select {
	case s.queue <- w:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.done:
		if errors.Is(err, weaviate.ErrUnavailable) || errors.Is(err, weaviate.ErrMismatch) {
			return queue.Fatal(err)
		}
		return err
	case <-ctx.Done():
		// The write may still land; it is idempotent, and the item is
		// not acknowledged, so it comes back and is written again.
		return ctx.Err()
	}
}

// flush sends what is queued as batches until the sink closes.
func (s *weaviateSink) flush(ctx context.Context) {
	defer s.closed.Done()
	limit := s.st.Config().BatchSize
	for {
		var batch []*pendingWrite
		select {
		case w := <-s.queue:
			batch = append(batch, w)
		case <-ctx.Done():
			return
		}
	more:
		for len(batch) < limit {
			select {
			case w := <-s.queue:
				batch = append(batch, w)
			default:
				break more
			}
		}
		s.upsert(ctx, batch)
	}
}

// upsert writes one batch and reports to each writer. A batch that
// Weaviate refuses for one object's sake is written again object by object,
// so one bad item does not fail the others.
func (s *weaviateSink) upsert(ctx context.Context, batch []*pendingWrite) {
	objs := make([]weaviate.Object, len(batch))
	for i, w := range batch {
		objs[i] = w.obj
	}
	err := s.st.Upsert(ctx, objs)
	s.batches++
	s.objects += len(objs)
	if err != nil && len(batch) > 1 && !errors.Is(err, weaviate.ErrUnavailable) && ctx.Err() == nil {
		for _, w := range batch {
			w.done <- s.st.Upsert(ctx, []weaviate.Object{w.obj})
		}
		return
	}
	for _, w := range batch {
		w.done <- err
	}
}

func (s *weaviateSink) close() {
	s.stop()
	s.closed.Wait()
	if s.batches > 0 {
		s.log.Info("weaviate writes", "collection", s.st.Collection(), "objects", s.objects, "batches", s.batches)
	}
	_ = s.st.Close()
}
