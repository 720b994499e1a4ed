package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/queue"
)

// runIndexQueue implements 'imagescope index --queue URL [...]': it puts a
// gallery's images on a NATS JetStream work queue for 'imagescope worker'
// processes, or (--status) shows the progress of queued jobs.
func runIndexQueue(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "index", "--queue URL (--gallery DIR | --dataset NAME --data DIR --split SPLIT) (--db PATH | --weaviate URL) [--job ID] [--wait]\n       imagescope index --queue URL --status [--job ID] [--json]",
		`Distributed indexing: publish the gallery's images as work items on a NATS
JetStream work queue; 'imagescope worker --queue URL' processes (caption + embed)
them on any number of machines and writes the results to the store named here:
the embedded image DB (--db, on a file system every worker shares) or Weaviate
(--weaviate or the config's weaviate.url). Publishing is idempotent within the
server's duplicate window, and a re-published item is rewritten harmlessly.
--status prints every job's progress over all workers and its dead letters.`)
	queueURL := fs.String("queue", "", "NATS server URL (default: config queue.url or $IMAGESCOPE_QUEUE_URL)")
	status := fs.Bool("status", false, "print the progress of the job (or of all jobs) and exit")
	asJSON := fs.Bool("json", false, "with --status: print JSON")
	jobID := fs.String("job", "", "job id (default: derived from gallery, store and CLIP model)")
	galleryDir := fs.String("gallery", "", "index a plain image folder (recursive)")
	dsName := fs.String("dataset", "", "benchmark name (CIRR, CIRCO, FashionIQ-dress|shirt|toptee, Flickr30K, MSCOCO, VisDial)")
	dataRoot := fs.String("data", "", "benchmark data root")
	split := fs.String("split", "", "benchmark split")
	dbPath := fs.String("db", "", "write to this image DB (shared file system)")
	wvURL := fs.String("weaviate", "", "write to Weaviate at these node URLs (comma-separated)")
	collection := fs.String("collection", "", "Weaviate collection (default derived from gallery and model)")
	cf := addConfigFlags(fs)
	fs.Lookup("clip").Usage = "CLIP model the workers must use (default: config clip.model)"
	fs.Lookup("threads").Usage = "ignored with --queue (workers use their config's clip.threads)"
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones (caption instruction)")
	wait := fs.Bool("wait", false, "after publishing, print progress until the job is finished")
	fs.StringVar(&cf.clip, "model", "", "same as --clip")
	domain := fs.String("domain", "", "caption prompt set (default: the dataset's; folders: general)")
	noCaptions := fs.Bool("no-captions", false, "do not caption even when a captioner is configured")
	embedder := fs.String("embedder", "clip", "workers embed with in-process CLIP (clip); remote is not supported with --queue")
	// Flags of the local index run that the workers' own settings decide.
	fs.Int("caption-workers", 0, "ignored with --queue (workers use --concurrency)")
	fs.Int("batch", 8, "ignored with --queue")
	fs.Bool("float16", false, "ignored with --queue")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *embedder != "clip" {
		return usagef("--embedder %s: queue workers embed with in-process CLIP only", *embedder)
	}
	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	url := app.QueueURL(*queueURL, e.getenv, cfg)
	if url == "" {
		return usagef("--queue URL is required (or queue.url in the config)")
	}
	if *jobID != "" {
		if err := queue.ValidJobID(*jobID); err != nil {
			return usagef("--job: %v", err)
		}
	}
	q, err := app.OpenQueue(ctx, url, cfg, "imagescope-index", e.log)
	if err != nil {
		return err
	}
	defer q.Close()
	if *status {
		return printQueueStatus(ctx, e, q, *jobID, *asJSON)
	}

	spec := app.GallerySpec{Folder: *galleryDir, DB: *dbPath}
	switch {
	case *galleryDir != "" && *dsName != "":
		return usagef("give --gallery or --dataset, not both")
	case *galleryDir != "":
	case *dsName != "":
		if *dataRoot == "" || *split == "" {
			return usagef("--dataset needs --data and --split")
		}
		if spec.Split, err = dataset.Load(ctx, *dsName, *dataRoot, *split); err != nil {
			return err
		}
	default:
		return usagef("nothing to index: give --gallery DIR or --dataset NAME --data DIR --split SPLIT (or --status)")
	}
	if *dbPath != "" && *wvURL != "" {
		return usagef("give --db or --weaviate, not both")
	}
	src, err := app.Resolve(ctx, cfg.Home, spec)
	if err != nil {
		return err
	}
	job, items, err := app.QueueJob(cfg, e.getenv, app.QueueSpec{Source: src, Weaviate: *wvURL,
		Collection: *collection, NoCaptions: *noCaptions, PromptDir: *promptDir, Domain: *domain, JobID: *jobID})
	if err != nil {
		return err
	}
	st, err := q.Publish(ctx, job, items)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "job %s: queued %d items on %s (%d already queued), store %s\n", job.ID, st.Published, url, st.Duplicate, job.Store)
	fmt.Fprintf(e.stdout, "start workers with: imagescope worker --queue %s --job %s\n", url, job.ID)
	if !*wait {
		return nil
	}
	s, err := app.WaitJob(ctx, q, job.ID, 2*time.Second, func(s *queue.Status) {
		fmt.Fprintf(e.stderr, "job %s: %d/%d done, %d pending, %d in flight, %d dead-lettered\n", job.ID, s.Done, s.Job.Total, s.Pending, s.InFlight, s.Dead)
	})
	if err != nil {
		return err
	}
	return s.WriteText(e.stdout)
}

// queueRequested reports whether the index arguments ask for the queue
// (--queue / -queue, with its value joined or separate).
func queueRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "queue" {
			return true
		}
	}
	return false
}
