// Package queue spreads gallery indexing over many workers through a NATS
// JetStream work queue.
//
// A publisher ('imagescope index --queue URL') stores a job record and puts
// one message per gallery image on a work-queue stream; workers
// ('imagescope worker --queue URL') pull items, caption and embed them, write
// the result to the configured store and acknowledge only after the write is
// durable. An item whose worker dies is redelivered after the ack wait; writes
// are idempotent so a redelivered item is harmless. Malformed items and items
// that keep failing go to a dead-letter stream with the reason. Progress over
// all workers is read back with Status.
//
// Streams and buckets (names derive from Options.Prefix, default IMAGESCOPE):
//
//	<P>_WORK      work-queue retention; subject <p>.work.<job>; one durable pull consumer per job
//	<P>_DONE      one message per finished item, subject <p>.done.<job>.<item key> (max 1 per subject)
//	<P>_PROGRESS  one message per processed delivery, subject <p>.progress.<job>.<worker>
//	<P>_DEAD      dead letters, subject <p>.dead.<job>, reason in headers
//	KV <p>-jobs   job records (JSON), key = job id
package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ItemVersion is the version of the item message format this package writes.
const ItemVersion = 1

// Item is one unit of indexing work: one gallery image.
type Item struct {
	V    int    `json:"v"`
	Job  string `json:"job"`
	Name string `json:"name"` // gallery image name, unique within the job
	Path string `json:"path"` // image file as the workers see it (shared storage)
	Ord  int    `json:"ord"`  // position in gallery order
}

// Job describes one indexing run. The publisher writes it; workers read it
// to learn where results go and which models the job expects.
type Job struct {
	ID         string            `json:"id"`
	Gallery    string            `json:"gallery"`              // where the items came from (folder, dataset split)
	Store      string            `json:"store"`                // where results go, e.g. "db:/path/gallery.db" or "weaviate:http://host:8080/Collection"
	CLIPModel  string            `json:"clip_model,omitempty"` // workers must embed with this model
	CaptionKey string            `json:"caption_key,omitempty"`
	Params     map[string]string `json:"params,omitempty"`
	Total      int               `json:"total"`
	Published  int               `json:"published"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// Options configures a connection to the queue.
type Options struct {
	// Prefix names the streams (upper case) and subjects (lower case).
	// Default "IMAGESCOPE".
	Prefix string
	// Name is the NATS client connection name (shown by the server).
	Name string
	// Replicas is the JetStream replica count of the streams (1 on a single
	// server; 3 on a 3-node NATS cluster). Default 1.
	Replicas int
	// ConnectTimeout bounds the first connection. Default 5s.
	ConnectTimeout time.Duration
	// NATSOptions are extra nats.go options (credentials, TLS).
	NATSOptions []nats.Option
	Logger      *slog.Logger
}

// Queue is a connection to the indexing queue.
type Queue struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	url    string
	sp     string // stream prefix (upper case)
	subj   string // subject prefix (lower case)
	log    *slog.Logger
	replic int
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidJobID reports whether id can name a job (it becomes a subject token).
func ValidJobID(id string) error {
	if !tokenRE.MatchString(id) {
		return fmt.Errorf("job id %q: use 1-64 letters, digits, '-' or '_'", id)
	}
	return nil
}

// Connect connects to the NATS server at url and makes sure the streams, and
// the job bucket exist. An unreachable server gives an error naming the URL.
func Connect(ctx context.Context, url string, opt Options) (*Queue, error) {
	if opt.Prefix == "" {
		opt.Prefix = "IMAGESCOPE"
	}
	if !tokenRE.MatchString(opt.Prefix) {
		return nil, fmt.Errorf("queue prefix %q: use letters, digits, '-' or '_'", opt.Prefix)
	}
	if opt.Replicas <= 0 {
		opt.Replicas = 1
	}
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Name == "" {
		opt.Name = "imagescope"
	}
	nopts := append([]nats.Option{
		nats.Name(opt.Name),
		nats.Timeout(opt.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}, opt.NATSOptions...)
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS server %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream on %s: %w", url, err)
	}
	q := &Queue{nc: nc, js: js, url: url, sp: strings.ToUpper(opt.Prefix), subj: strings.ToLower(opt.Prefix), log: opt.Logger, replic: opt.Replicas}
	if err := q.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

// Close closes the connection. Acks and naks still buffered are flushed
// first, so an item a stopping worker gave back is redelivered at once
// rather than after the ack wait.
func (q *Queue) Close() {
	if q.nc != nil {
		_ = q.nc.FlushTimeout(5 * time.Second)
		q.nc.Close()
	}
}

// URL is the server URL the queue was opened with.
func (q *Queue) URL() string { return q.url }

func (q *Queue) workStream() string     { return q.sp + "_WORK" }
func (q *Queue) doneStream() string     { return q.sp + "_DONE" }
func (q *Queue) progressStream() string { return q.sp + "_PROGRESS" }
func (q *Queue) deadStream() string     { return q.sp + "_DEAD" }
func (q *Queue) workSubject(job string) string {
	return q.subj + ".work." + job
}
func (q *Queue) doneSubject(job, name string) string {
	return q.subj + ".done." + job + "." + ItemKey(name)
}
func (q *Queue) progressSubject(job, worker string) string {
	return q.subj + ".progress." + job + "." + worker
}
func (q *Queue) deadSubject(job string) string { return q.subj + ".dead." + job }
func (q *Queue) consumerName(job string) string {
	return "workers-" + job
}

// ItemKey is the subject-safe key of an item name (hex SHA-256 prefix).
func ItemKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:16])
}

func (q *Queue) setup(ctx context.Context) error {
	streams := []jetstream.StreamConfig{
		{
			Name:        q.workStream(),
			Description: "imagescope indexing work items",
			Subjects:    []string{q.subj + ".work.>"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    q.replic,
			Duplicates:  10 * time.Minute,
		},
		{
			Name:              q.doneStream(),
			Description:       "imagescope indexing: one record per finished item",
			Subjects:          []string{q.subj + ".done.>"},
			Retention:         jetstream.LimitsPolicy,
			MaxMsgsPerSubject: 1,
			Storage:           jetstream.FileStorage,
			Replicas:          q.replic,
		},
		{
			Name:        q.progressStream(),
			Description: "imagescope indexing: one record per processed delivery, by worker",
			Subjects:    []string{q.subj + ".progress.>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      30 * 24 * time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    q.replic,
		},
		{
			Name:        q.deadStream(),
			Description: "imagescope indexing: dead-lettered items with the reason",
			Subjects:    []string{q.subj + ".dead.>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    q.replic,
			Duplicates:  10 * time.Minute,
		},
	}
	for _, sc := range streams {
		if _, err := q.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create stream %s on %s: %w", sc.Name, q.url, err)
		}
	}
	kv, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      q.subj + "-jobs",
		Description: "imagescope indexing job records",
		Storage:     jetstream.FileStorage,
		Replicas:    q.replic,
	})
	if err != nil {
		return fmt.Errorf("create job bucket on %s: %w", q.url, err)
	}
	q.kv = kv
	return nil
}

func (q *Queue) ensureConsumer(ctx context.Context, job string, ackWait time.Duration) (jetstream.Consumer, error) {
	if ackWait <= 0 {
		ackWait = DefaultAckWait
	}
	c, err := q.js.CreateOrUpdateConsumer(ctx, q.workStream(), jetstream.ConsumerConfig{
		Durable:       q.consumerName(job),
		Description:   "imagescope workers for job " + job,
		FilterSubject: q.workSubject(job),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1, // the worker dead-letters after Options.MaxAttempts itself
		MaxAckPending: 10000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer for job %s: %w", job, err)
	}
	return c, nil
}

// Job reads a job record.
func (q *Queue) Job(ctx context.Context, id string) (*Job, error) {
	if err := ValidJobID(id); err != nil {
		return nil, err
	}
	e, err := q.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("job %q: %w", id, ErrNoJob)
		}
		return nil, fmt.Errorf("read job %q: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("job %q: malformed record: %w", id, err)
	}
	return &j, nil
}

// Jobs lists all job records, in id order.
func (q *Queue) Jobs(ctx context.Context) ([]Job, error) {
	ids, err := q.kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	slices.Sort(ids)
	var jobs []Job
	for _, id := range ids {
		j, err := q.Job(ctx, id)
		if err != nil {
			if errors.Is(err, ErrNoJob) {
				continue
			}
			return nil, err
		}
		jobs = append(jobs, *j)
	}
	return jobs, nil
}

// ErrNoJob is returned for an unknown job id.
var ErrNoJob = errors.New("no such job")

// DecodeItem parses and validates an item message.
func DecodeItem(data []byte) (Item, error) {
	var it Item
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&it); err != nil {
		return it, fmt.Errorf("malformed item message: %w", err)
	}
	switch {
	case it.V != ItemVersion:
		return it, fmt.Errorf("item message version %d, want %d", it.V, ItemVersion)
	case it.Name == "":
		return it, errors.New("item message: field name is empty")
	case it.Path == "":
		return it, fmt.Errorf("item %q: field path is empty", it.Name)
	case it.Ord < 0:
		return it, fmt.Errorf("item %q: field ord is negative (%d)", it.Name, it.Ord)
	}
	if err := ValidJobID(it.Job); err != nil {
		return it, fmt.Errorf("item %q: %w", it.Name, err)
	}
	return it, nil
}
