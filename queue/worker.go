package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/imagescope/imagescope/internal/backoff"
	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for WorkerOptions.
const (
	DefaultAckWait     = 2 * time.Minute
	DefaultMaxAttempts = 5
)

// Processor does the work of one item: caption, embed and a durable write
// to the store. It must be idempotent: the same item may be processed again
// after a worker dies between the write and the acknowledgement.
//
// Errors steer what happens to the item:
//   - Permanent(err): the item can never succeed (unreadable image, bad
//     name); it is dead-lettered with the reason.
//   - Fatal(err): the worker cannot go on (store unreachable after its own
//     retries, wrong model); the item is returned to the queue and Work
//     stops with the error, so a restarted worker resumes.
//   - any other error: retried with backoff; after MaxAttempts deliveries
//     the item is dead-lettered with the last error.
type Processor interface {
	Process(ctx context.Context, job *Job, it Item) error
}

// ProcessorFunc adapts a function to Processor.
type ProcessorFunc func(ctx context.Context, job *Job, it Item) error

// Process calls f.
func (f ProcessorFunc) Process(ctx context.Context, job *Job, it Item) error { return f(ctx, job, it) }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Fatal marks err as one that should stop the worker (item kept for later).
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// IsFatal reports whether err was marked with Fatal.
func IsFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

// WorkerOptions configures Work.
type WorkerOptions struct {
	// Name identifies the worker in progress records (default host-pid).
	Name string
	// Jobs restricts the worker to these job ids; empty means every job.
	Jobs []string
	// Concurrency is how many items are processed at once (default 1).
	Concurrency int
	// AckWait is how long the server waits for an ack before redelivering
	// (default 2m). While an item is processed the worker extends it.
	AckWait time.Duration
	// MaxAttempts is the number of deliveries after which a failing item
	// is dead-lettered (default 5).
	MaxAttempts int
	// Retry is the wait before redelivering a failed item; default
	// exponential from 1s, capped at 1m.
	Retry backoff.Policy
	// ExitWhenIdle makes Work return once the selected jobs have no
	// pending or in-flight items; otherwise it waits for more work.
	ExitWhenIdle bool
	// PollInterval is how long one fetch waits for messages (default 2s).
	PollInterval time.Duration
	// OnDone is called after an item is acknowledged (progress display).
	OnDone func(job string, it Item)
}

// WorkerStats counts what one Work call did.
type WorkerStats struct {
	Done         int
	DeadLettered int
	Retried      int
}

var workerNameRE = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// DefaultWorkerName is host-pid made subject-safe.
func DefaultWorkerName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "worker"
	}
	return SanitizeWorkerName(h + "-" + strconv.Itoa(os.Getpid()))
}

// SanitizeWorkerName makes a worker name usable as a subject token.
func SanitizeWorkerName(s string) string {
	s = workerNameRE.ReplaceAllString(s, "_")
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		s = "worker"
	}
	return s
}

// Work processes items until ctx is cancelled, a Fatal error occurs, or (with
// ExitWhenIdle) no work is left. Cancellation leaves unacknowledged items in
// the queue for redelivery.
func (q *Queue) Work(ctx context.Context, p Processor, opt WorkerOptions) (WorkerStats, error) {
	var st WorkerStats
	if opt.Name == "" {
		opt.Name = DefaultWorkerName()
	}
	opt.Name = SanitizeWorkerName(opt.Name)
	if opt.Concurrency <= 0 {
		opt.Concurrency = 1
	}
	if opt.AckWait <= 0 {
		opt.AckWait = DefaultAckWait
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = DefaultMaxAttempts
	}
	if opt.Retry.Base <= 0 {
		opt.Retry = backoff.Policy{Base: time.Second, Max: time.Minute}
	}
	if opt.PollInterval <= 0 {
		opt.PollInterval = 2 * time.Second
	}
	for _, j := range opt.Jobs {
		if err := ValidJobID(j); err != nil {
			return st, err
		}
	}
	w := &worker{q: q, p: p, opt: opt, jobs: map[string]*Job{}}
	for {
		ids := opt.Jobs
		if len(ids) == 0 {
			all, err := q.Jobs(ctx)
			if err != nil {
				return w.stats(), err
			}
			for _, j := range all {
				ids = append(ids, j.ID)
			}
		}
		busy := false
		for _, id := range ids {
			did, err := w.runJob(ctx, id)
			if err != nil {
				return w.stats(), err
			}
			busy = busy || did
		}
		if err := ctx.Err(); err != nil {
			return w.stats(), err
		}
		if !busy {
			if opt.ExitWhenIdle {
				idle, err := w.allIdle(ctx, ids)
				if err != nil {
					return w.stats(), err
				}
				if idle {
					return w.stats(), nil
				}
			}
			select {
			case <-ctx.Done():
				return w.stats(), ctx.Err()
			case <-time.After(opt.PollInterval):
			}
		}
	}
}

type worker struct {
	q    *Queue
	p    Processor
	opt  WorkerOptions
	jobs map[string]*Job

	mu sync.Mutex
	st WorkerStats
}

func (w *worker) stats() WorkerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

func (w *worker) allIdle(ctx context.Context, ids []string) (bool, error) {
	for _, id := range ids {
		c, err := w.q.ensureConsumer(ctx, id, w.opt.AckWait)
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false, fmt.Errorf("consumer info for job %s: %w", id, err)
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return false, nil
		}
	}
	return true, nil
}

// runJob drains what is available of one job; it reports whether it got any
// message.
func (w *worker) runJob(ctx context.Context, id string) (bool, error) {
	job, err := w.job(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNoJob) && len(w.opt.Jobs) > 0 {
			return false, nil // not published yet
		}
		return false, err
	}
	cons, err := w.q.ensureConsumer(ctx, id, w.opt.AckWait)
	if err != nil {
		return false, err
	}
	got := false
	for {
		if err := ctx.Err(); err != nil {
			return got, err
		}
		batch, err := cons.Fetch(w.opt.Concurrency, jetstream.FetchMaxWait(w.opt.PollInterval))
		if err != nil {
			if ctx.Err() != nil {
				return got, ctx.Err()
			}
			return got, fmt.Errorf("fetch work of job %s from %s: %w", id, w.q.url, err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return got, ctx.Err()
			}
			return got, fmt.Errorf("fetch work of job %s from %s: %w", id, w.q.url, err)
		}
		if len(msgs) == 0 {
			return got, nil
		}
		got = true
		errs := make([]error, len(msgs))
		parallel.For(len(msgs), len(msgs), func(_, i int) { errs[i] = w.handle(ctx, job, msgs[i]) })
		if err := errors.Join(errs...); err != nil {
			return got, err
		}
	}
}

func (w *worker) job(ctx context.Context, id string) (*Job, error) {
	if j, ok := w.jobs[id]; ok {
		return j, nil
	}
	j, err := w.q.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	w.jobs[id] = j
	return j, nil
}

// handle processes one message; the returned error stops the worker.
func (w *worker) handle(ctx context.Context, job *Job, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	it, err := DecodeItem(m.Data())
	if err == nil && it.Job != job.ID {
		err = fmt.Errorf("item %q names job %q but was queued for job %q", it.Name, it.Job, job.ID)
	}
	if err != nil {
		return w.deadLetter(ctx, job.ID, m, meta, err)
	}

	// Keep the item ours while it is processed.
	pctx, cancel := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		t := time.NewTicker(max(w.opt.AckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	perr := w.p.Process(pctx, job, it)
	cancel()
	hb.Wait()

	switch {
	case perr == nil:
	case ctx.Err() != nil:
		// Shutting down: leave the item for redelivery.
		_ = m.Nak()
		return ctx.Err()
	case IsFatal(perr):
		_ = m.Nak()
		return fmt.Errorf("item %q of job %s: %w (item left in the queue)", it.Name, job.ID, perr)
	case IsPermanent(perr) || int(meta.NumDelivered) >= w.opt.MaxAttempts:
		return w.deadLetter(ctx, job.ID, m, meta, fmt.Errorf("item %q: %w", it.Name, perr))
	default:
		delay := w.opt.Retry.Delay(int(meta.NumDelivered))
		w.q.log.Warn("item failed, will retry", "job", job.ID, "item", it.Name, "attempt", meta.NumDelivered, "delay", delay, "err", perr)
		w.mu.Lock()
		w.st.Retried++
		w.mu.Unlock()
		if err := m.NakWithDelay(delay); err != nil {
			return fmt.Errorf("return item %q of job %s to the queue: %w", it.Name, job.ID, err)
		}
		return nil
	}

	// The write is durable: record it, then acknowledge (the ack is
	// confirmed by the server).
	rec := []byte(`{"worker":"` + w.opt.Name + `","at":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`)
	if _, err := w.q.js.Publish(ctx, w.q.doneSubject(job.ID, it.Name), rec); err != nil {
		return fmt.Errorf("record item %q of job %s as done: %w", it.Name, job.ID, err)
	}
	if _, err := w.q.js.Publish(ctx, w.q.progressSubject(job.ID, w.opt.Name), []byte(it.Name)); err != nil {
		return fmt.Errorf("record progress of item %q: %w", it.Name, err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		return fmt.Errorf("acknowledge item %q of job %s: %w", it.Name, job.ID, err)
	}
	w.mu.Lock()
	w.st.Done++
	w.mu.Unlock()
	if w.opt.OnDone != nil {
		w.opt.OnDone(job.ID, it)
	}
	return nil
}

// Dead-letter headers.
const (
	HeaderReason   = "Imagescope-Reason"
	HeaderWorker   = "Imagescope-Worker"
	HeaderAttempts = "Imagescope-Attempts"
	HeaderSubject  = "Imagescope-Subject"
	HeaderSequence = "Imagescope-Sequence"
)

// deadLetter stores the message with the reason in the dead-letter stream
// (confirmed by the server) and only then removes it from the work queue.
func (w *worker) deadLetter(ctx context.Context, job string, m jetstream.Msg, meta *jetstream.MsgMetadata, reason error) error {
	msg := nats.NewMsg(w.q.deadSubject(job))
	msg.Data = m.Data()
	msg.Header.Set(HeaderReason, reason.Error())
	msg.Header.Set(HeaderWorker, w.opt.Name)
	msg.Header.Set(HeaderAttempts, strconv.FormatUint(meta.NumDelivered, 10))
	msg.Header.Set(HeaderSubject, m.Subject())
	msg.Header.Set(HeaderSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
	if _, err := w.q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s-%d", meta.Stream, meta.Sequence.Stream))); err != nil {
		_ = m.Nak()
		return fmt.Errorf("dead-letter message %d of job %s: %w", meta.Sequence.Stream, job, err)
	}
	w.q.log.Warn("item dead-lettered", "job", job, "seq", meta.Sequence.Stream, "reason", reason)
	if err := m.TermWithReason("dead-lettered"); err != nil {
		return fmt.Errorf("remove dead-lettered message %d of job %s: %w", meta.Sequence.Stream, job, err)
	}
	w.mu.Lock()
	w.st.DeadLettered++
	w.mu.Unlock()
	return nil
}
