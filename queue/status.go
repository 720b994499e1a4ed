package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is the progress of one job over all workers.
type Status struct {
	Job         Job               `json:"job"`
	Done        uint64            `json:"done"`         // distinct items written and acknowledged
	Pending     uint64            `json:"pending"`      // items still in the queue (not yet acknowledged), in flight included
	InFlight    int               `json:"in_flight"`    // delivered, not yet acknowledged (includes items given back and awaiting redelivery)
	Redelivered int               `json:"redelivered"`  // in-flight items delivered more than once
	Dead        uint64            `json:"dead_letters"` // dead-lettered items
	Workers     map[string]uint64 `json:"workers"`      // processed deliveries per worker (redeliveries counted again)
}

// Finished reports whether nothing is left to do for the job.
func (s *Status) Finished() bool { return s.Pending == 0 && s.InFlight == 0 }

// Status reads a job's progress.
func (q *Queue) Status(ctx context.Context, jobID string) (*Status, error) {
	job, err := q.Job(ctx, jobID)
	if err != nil {
		return nil, err
	}
	st := &Status{Job: *job, Workers: map[string]uint64{}}
	if st.Pending, err = q.countSubject(ctx, q.workStream(), q.workSubject(jobID)); err != nil {
		return nil, err
	}
	if st.Done, err = q.countSubject(ctx, q.doneStream(), q.subj+".done."+jobID+".*"); err != nil {
		return nil, err
	}
	if st.Dead, err = q.countSubject(ctx, q.deadStream(), q.deadSubject(jobID)); err != nil {
		return nil, err
	}
	c, err := q.js.Consumer(ctx, q.workStream(), q.consumerName(jobID))
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return nil, fmt.Errorf("consumer of job %s: %w", jobID, err)
	default:
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer of job %s: %w", jobID, err)
		}
		st.InFlight = info.NumAckPending
		st.Redelivered = info.NumRedelivered
	}
	s, err := q.js.Stream(ctx, q.progressStream())
	if err != nil {
		return nil, fmt.Errorf("progress stream: %w", err)
	}
	prefix := q.subj + ".progress." + jobID + "."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("progress of job %s: %w", jobID, err)
	}
	for subj, n := range info.State.Subjects {
		st.Workers[strings.TrimPrefix(subj, prefix)] = n
	}
	return st, nil
}

// countSubject counts the messages on subject (wildcards allowed) in stream
// without reading them. On limits streams it uses a short-lived consumer's
// pending count (cheap for millions of subjects); work-queue streams allow
// no overlapping consumer, and there the subject is a single one, so the
// stream's per-subject state is read.
func (q *Queue) countSubject(ctx context.Context, stream, subject string) (uint64, error) {
	if stream == q.workStream() {
		s, err := q.js.Stream(ctx, stream)
		if err != nil {
			return 0, fmt.Errorf("count %s in %s: %w", subject, stream, err)
		}
		si, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0, fmt.Errorf("count %s in %s: %w", subject, stream, err)
		}
		var n uint64
		for _, v := range si.State.Subjects {
			n += v
		}
		return n, nil
	}
	c, err := q.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, fmt.Errorf("count %s in %s: %w", subject, stream, err)
	}
	n := c.CachedInfo().NumPending
	_ = q.js.DeleteConsumer(ctx, stream, c.CachedInfo().Name)
	return n, nil
}

// DeadLetter is one dead-lettered item.
type DeadLetter struct {
	Sequence uint64    `json:"sequence"` // in the dead-letter stream
	Reason   string    `json:"reason"`
	Worker   string    `json:"worker"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
	Data     string    `json:"data"` // the original message
}

// DeadLetters returns up to limit dead letters of a job, oldest first.
func (q *Queue) DeadLetters(ctx context.Context, jobID string, limit int) ([]DeadLetter, error) {
	if err := ValidJobID(jobID); err != nil {
		return nil, err
	}
	n, err := q.countSubject(ctx, q.deadStream(), q.deadSubject(jobID))
	if err != nil || n == 0 {
		return nil, err
	}
	c, err := q.js.OrderedConsumer(ctx, q.deadStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{q.deadSubject(jobID)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("read dead letters of job %s: %w", jobID, err)
	}
	want := int(min(n, uint64(max(limit, 0))))
	if limit <= 0 {
		want = int(n)
	}
	var out []DeadLetter
	for len(out) < want {
		batch, err := c.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, fmt.Errorf("read dead letters of job %s: %w", jobID, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, _ := m.Metadata()
			d := DeadLetter{Reason: m.Headers().Get(HeaderReason), Worker: m.Headers().Get(HeaderWorker), Data: string(m.Data())}
			d.Attempts, _ = strconv.Atoi(m.Headers().Get(HeaderAttempts))
			if meta != nil {
				d.Sequence = meta.Sequence.Stream
				d.Time = meta.Timestamp
			}
			out = append(out, d)
		}
		if got == 0 {
			break
		}
	}
	return out, nil
}

// WriteText writes a human-readable status.
func (s *Status) WriteText(w io.Writer) error {
	total := uint64(s.Job.Total)
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(s.Done) / float64(total)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "job %s: %d/%d done (%.1f%%), %d pending, %d in flight or awaiting redelivery, %d dead-lettered\n",
		s.Job.ID, s.Done, total, pct, s.Pending, s.InFlight, s.Dead)
	if s.Job.Gallery != "" {
		fmt.Fprintf(&b, "  gallery: %s\n", s.Job.Gallery)
	}
	if s.Job.Store != "" {
		fmt.Fprintf(&b, "  store:   %s\n", s.Job.Store)
	}
	if s.Job.CLIPModel != "" {
		fmt.Fprintf(&b, "  clip:    %s\n", s.Job.CLIPModel)
	}
	if s.Redelivered > 0 {
		fmt.Fprintf(&b, "  %d in-flight items were delivered more than once\n", s.Redelivered)
	}
	names := make([]string, 0, len(s.Workers))
	for n := range s.Workers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  worker %s: %d processed\n", n, s.Workers[n])
	}
	if s.Finished() {
		b.WriteString("  finished\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
