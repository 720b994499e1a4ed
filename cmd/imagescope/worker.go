package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/queue"
)

// runWorker implements 'imagescope worker'.
func runWorker(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "worker", "--queue URL [--job ID]... [--concurrency N] [--exit-when-idle]",
		`Process distributed indexing work published by 'imagescope index --queue URL':
for each image, embed it with CLIP, caption it with the configured captioner
(when the job asks for captions) and write the result to the job's store (the
embedded image DB or Weaviate). An item is acknowledged only after its write is
durable; if this process dies, its unacknowledged items go to another worker.
Unreadable images and malformed messages are dead-lettered with the reason
(see 'imagescope index --queue URL --status'). If the store becomes unreachable
the worker retries with backoff, then stops; items are kept for a restart.`)
	queueURL := fs.String("queue", "", "NATS server URL (default: config queue.url or $IMAGESCOPE_QUEUE_URL)")
	var jobs stringList
	fs.Var(&jobs, "job", "process only this job (repeatable; default: every job)")
	name := fs.String("name", "", "worker name in progress records (default host-pid)")
	concurrency := fs.Int("concurrency", 0, "items processed at once (default: config queue.concurrency or 2)")
	ackWait := fs.Duration("ack-wait", 0, "redelivery timeout for unacknowledged items (default: config or 2m)")
	maxAttempts := fs.Int("max-attempts", 0, "deliveries before a failing item is dead-lettered (default: config or 5)")
	exitIdle := fs.Bool("exit-when-idle", false, "exit when the selected jobs have nothing left (default: wait for work)")
	cf := addConfigFlags(fs)
	fs.Lookup("clip").Usage = "CLIP model to load; a job naming another is refused (default: the model each job names)"
	fs.StringVar(&cf.clip, "model", "", "same as --clip")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	for _, j := range jobs {
		if err := queue.ValidJobID(j); err != nil {
			return usagef("--job: %v", err)
		}
	}
	if cf.threads < 0 {
		return usagef("--threads must be >= 0")
	}
	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	url := app.QueueURL(*queueURL, e.getenv, cfg)
	if url == "" {
		return usagef("--queue URL is required (or queue.url in the config)")
	}
	q, err := app.OpenQueue(ctx, url, cfg, "imagescope-worker", e.log)
	if err != nil {
		return err
	}
	defer q.Close()
	st, err := app.Work(ctx, cfg, q, app.WorkerSpec{
		Queue:     queue.WorkerOptions{Name: *name, Jobs: jobs, Concurrency: *concurrency, AckWait: *ackWait, MaxAttempts: *maxAttempts, ExitWhenIdle: *exitIdle},
		CLIPModel: cf.clip, Log: e.log, Getenv: e.getenv, ClipProgress: progressPrinter(e),
	})
	fmt.Fprintf(e.stderr, "worker: %d items done, %d dead-lettered, %d retried\n", st.Done, st.DeadLettered, st.Retried)
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted: unacknowledged items go back to the queue
	}
	return err
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
