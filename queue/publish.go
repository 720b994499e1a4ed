package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PublishStats summarises one Publish call.
type PublishStats struct {
	Published int // messages stored by the server
	Duplicate int // messages the server recognised as already published (same job + item)
}

// Publish stores the job record and puts items on the work queue. Item Job
// fields are set to job.ID; V is set to ItemVersion. Each message carries a
// deduplication id (job + item key), so re-running Publish shortly after an
// interrupted run does not queue the same item twice; beyond the server's
// duplicate window a re-published item is processed again, which is harmless
// because workers write idempotently.
//
// The job record is written before any item, so a worker never sees an item
// of an unknown job. Publish returns after the server acknowledged every
// message; the first failure is returned naming the item.
func (q *Queue) Publish(ctx context.Context, job Job, items []Item) (PublishStats, error) {
	var st PublishStats
	if err := ValidJobID(job.ID); err != nil {
		return st, err
	}
	seen := make(map[string]struct{}, len(items))
	for i := range items {
		it := &items[i]
		it.V = ItemVersion
		it.Job = job.ID
		if it.Name == "" || it.Path == "" {
			return st, fmt.Errorf("publish job %s: item %d has an empty name or path", job.ID, i)
		}
		if _, dup := seen[it.Name]; dup {
			return st, fmt.Errorf("publish job %s: item name %q appears twice", job.ID, it.Name)
		}
		seen[it.Name] = struct{}{}
	}
	now := time.Now().UTC()
	prev, err := q.Job(ctx, job.ID)
	switch {
	case err == nil:
		job.CreatedAt = prev.CreatedAt
		if job.Total < prev.Total {
			job.Total = prev.Total
		}
		job.Published = prev.Published
	case errors.Is(err, ErrNoJob):
		job.CreatedAt = now
	default:
		return st, err
	}
	if job.Total < len(items) {
		job.Total = len(items)
	}
	job.UpdatedAt = now
	if err := q.putJob(ctx, &job); err != nil {
		return st, err
	}
	if _, err := q.ensureConsumer(ctx, job.ID, 0); err != nil {
		return st, err
	}

	subject := q.workSubject(job.ID)
	const window = 4096
	type pending struct {
		f    jetstream.PubAckFuture
		name string
	}
	var inflight []pending
	wait := func() error {
		for _, p := range inflight {
			select {
			case ack := <-p.f.Ok():
				if ack.Duplicate {
					st.Duplicate++
				} else {
					st.Published++
				}
			case err := <-p.f.Err():
				return fmt.Errorf("publish item %q of job %s: %w", p.name, job.ID, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		inflight = inflight[:0]
		return nil
	}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		data, err := json.Marshal(it)
		if err != nil {
			return st, fmt.Errorf("encode item %q: %w", it.Name, err)
		}
		f, err := q.js.PublishAsync(subject, data, jetstream.WithMsgID(job.ID+"/"+ItemKey(it.Name)), jetstream.WithExpectStream(q.workStream()))
		if err != nil {
			return st, fmt.Errorf("publish item %q of job %s: %w", it.Name, job.ID, err)
		}
		inflight = append(inflight, pending{f, it.Name})
		if len(inflight) >= window {
			if err := wait(); err != nil {
				return st, err
			}
		}
	}
	if err := wait(); err != nil {
		return st, err
	}
	// Record the count; read-modify-write with a revision check so that two
	// publishers of one job do not lose each other's count.
	for range 10 {
		e, err := q.kv.Get(ctx, job.ID)
		if err != nil {
			return st, fmt.Errorf("update job %s: %w", job.ID, err)
		}
		var cur Job
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return st, fmt.Errorf("job %s: malformed record: %w", job.ID, err)
		}
		cur.Published += st.Published
		cur.UpdatedAt = time.Now().UTC()
		data, _ := json.Marshal(cur)
		if _, err := q.kv.Update(ctx, job.ID, data, e.Revision()); err == nil {
			return st, nil
		}
	}
	return st, fmt.Errorf("update job %s: record kept changing", job.ID)
}

func (q *Queue) putJob(ctx context.Context, j *Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	if _, err := q.kv.Put(ctx, j.ID, data); err != nil {
		return fmt.Errorf("write job %s: %w", j.ID, err)
	}
	return nil
}

// PublishRaw puts an arbitrary payload on a job's work subject. It exists for
// tools and tests that must exercise the dead-letter path with malformed
// messages; normal publishers use Publish.
func (q *Queue) PublishRaw(ctx context.Context, jobID string, payload []byte) error {
	if err := ValidJobID(jobID); err != nil {
		return err
	}
	if _, err := q.js.Publish(ctx, q.workSubject(jobID), payload); err != nil {
		return fmt.Errorf("publish to job %s: %w", jobID, err)
	}
	return nil
}
