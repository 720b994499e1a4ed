package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
	"github.com/imagescope/imagescope/queue"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// Job parameters the publisher records for the workers.
const (
	paramCaptionModel  = "caption_model"
	paramCaptionPrompt = "caption_prompt"
	paramWeaviateURL   = "weaviate_url"
	paramWeaviateGRPC  = "weaviate_grpc"
	paramCollection    = "collection"
	paramReplicas      = "replicas"
	paramShards        = "shards"
	storeDB            = "db:"
	storeWeaviate      = "weaviate:"
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
	model := fs.String("clip", "", "CLIP model the workers must use (default: config clip.model)")
	configPath := fs.String("config", "", "configuration file (default $IMAGESCOPE_CONFIG)")
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones (caption instruction)")
	wait := fs.Bool("wait", false, "after publishing, print progress until the job is finished")
	fs.StringVar(model, "model", "", "same as --clip")
	domain := fs.String("domain", "", "caption prompt set (default: the dataset's; folders: general)")
	noCaptions := fs.Bool("no-captions", false, "do not caption even when a captioner is configured")
	embedder := fs.String("embedder", "clip", "workers embed with in-process CLIP (clip); remote is not supported with --queue")
	// Flags of the local index run that the workers' own settings decide.
	fs.Int("threads", 0, "ignored with --queue (workers use their config's clip.threads)")
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
	cfg, err := config.Load(*configPath, e.getenv)
	if err != nil {
		return err
	}
	url := firstNonEmpty(*queueURL, e.getenv("IMAGESCOPE_QUEUE_URL"), cfg.Queue.URL)
	if url == "" {
		return usagef("--queue URL is required (or queue.url in the config)")
	}
	if *jobID != "" {
		if err := queue.ValidJobID(*jobID); err != nil {
			return usagef("--job: %v", err)
		}
	}
	q, err := openQueue(ctx, url, cfg, "imagescope-index", e)
	if err != nil {
		return err
	}
	defer q.Close()
	if *status {
		return printQueueStatus(ctx, e, q, *jobID, *asJSON)
	}

	var ds *dataset.Dataset
	switch {
	case *galleryDir != "" && *dsName != "":
		return usagef("give --gallery or --dataset, not both")
	case *galleryDir != "":
		ds, err = dataset.LoadFolder(ctx, *galleryDir)
	case *dsName != "":
		if *dataRoot == "" || *split == "" {
			return usagef("--dataset needs --data and --split")
		}
		ds, err = dataset.Load(ctx, *dsName, *dataRoot, *split)
	default:
		return usagef("nothing to index: give --gallery DIR or --dataset NAME --data DIR --split SPLIT (or --status)")
	}
	if err != nil {
		return err
	}
	if len(ds.Gallery) == 0 {
		return fmt.Errorf("gallery %s has no images", galleryLabel(ds, *galleryDir))
	}
	clipModel := firstNonEmpty(*model, cfg.CLIP.Model)
	job := queue.Job{Gallery: galleryLabel(ds, *galleryDir), CLIPModel: clipModel, Params: map[string]string{}}

	// Where the results go.
	weaviateURLs := firstNonEmpty(*wvURL, e.getenv("IMAGESCOPE_WEAVIATE_URL"), cfg.Weaviate.URL)
	switch {
	case *dbPath != "" && *wvURL != "":
		return usagef("give --db or --weaviate, not both")
	case *dbPath != "":
		abs, err := filepath.Abs(*dbPath)
		if err != nil {
			return err
		}
		job.Store = storeDB + abs
	case weaviateURLs != "":
		coll := firstNonEmpty(*collection, cfg.Weaviate.Collection)
		if coll == "" {
			coll = weaviate.CollectionName(job.Gallery, clipModel)
		}
		job.Store = storeWeaviate + coll
		job.Params[paramWeaviateURL] = weaviateURLs
		job.Params[paramWeaviateGRPC] = cfg.Weaviate.GRPC
		job.Params[paramCollection] = coll
		if cfg.Weaviate.Replicas > 0 {
			job.Params[paramReplicas] = strconv.Itoa(cfg.Weaviate.Replicas)
		}
		if cfg.Weaviate.Shards > 0 {
			job.Params[paramShards] = strconv.Itoa(cfg.Weaviate.Shards)
		}
	default:
		abs, err := filepath.Abs(gallery.DefaultPath(cfg.Home, ds.Name+"_"+ds.Split))
		if err != nil {
			return err
		}
		job.Store = storeDB + abs
	}

	// Captions: the workers must all use the same captioner and prompt.
	if rc, ok := cfg.Role(modelrole.Captioner); ok && rc.Configured() && !*noCaptions {
		lib, err := prompt.Load(*promptDir)
		if err != nil {
			return err
		}
		instr, err := lib.CaptionInstruction(firstNonEmpty(*domain, ds.Domain))
		if err != nil {
			return err
		}
		job.CaptionKey = gallery.CaptionKey(rc.CacheModelID(), instr)
		job.Params[paramCaptionModel] = rc.CacheModelID()
		job.Params[paramCaptionPrompt] = instr
	}
	job.ID = *jobID
	if job.ID == "" {
		job.ID = defaultJobID(ds, job)
	}
	items := make([]queue.Item, len(ds.Gallery))
	for i, im := range ds.Gallery {
		p, err := filepath.Abs(im.Path)
		if err != nil {
			return err
		}
		items[i] = queue.Item{Name: im.Name, Path: p, Ord: i}
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
	for {
		s, err := q.Status(ctx, job.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "job %s: %d/%d done, %d pending, %d in flight, %d dead-lettered\n", job.ID, s.Done, s.Job.Total, s.Pending, s.InFlight, s.Dead)
		if s.Finished() {
			return s.WriteText(e.stdout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
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

func galleryLabel(ds *dataset.Dataset, dir string) string {
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			return "folder:" + abs
		}
		return "folder:" + dir
	}
	return ds.Name + "/" + ds.Split
}

func defaultJobID(ds *dataset.Dataset, j queue.Job) string {
	h := sha256.Sum256([]byte(j.Gallery + "\x00" + j.Store + "\x00" + j.CLIPModel + "\x00" + j.CaptionKey))
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, strings.ToLower(ds.Name+"-"+ds.Split))
	base = strings.Trim(base, "-")
	if len(base) > 40 {
		base = base[:40]
	}
	return base + "-" + hex.EncodeToString(h[:4])
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func openQueue(ctx context.Context, url string, cfg *config.Config, name string, e *env) (*queue.Queue, error) {
	opt := queue.Options{Prefix: cfg.Queue.Prefix, Replicas: cfg.Queue.Replicas, Name: name, Logger: e.log}
	if cfg.Queue.Creds != "" {
		opt.NATSOptions = append(opt.NATSOptions, nats.UserCredentials(cfg.Queue.Creds))
	}
	return queue.Connect(ctx, url, opt)
}

func printQueueStatus(ctx context.Context, e *env, q *queue.Queue, jobID string, asJSON bool) error {
	var ids []string
	if jobID != "" {
		ids = []string{jobID}
	} else {
		jobs, err := q.Jobs(ctx)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
		if len(ids) == 0 {
			fmt.Fprintf(e.stdout, "no jobs on %s\n", q.URL())
			return nil
		}
	}
	type entry struct {
		*queue.Status
		DeadLetters []queue.DeadLetter `json:"dead_letter_list,omitempty"`
	}
	var out []entry
	for _, id := range ids {
		s, err := q.Status(ctx, id)
		if err != nil {
			if errors.Is(err, queue.ErrNoJob) {
				return fmt.Errorf("no job %q on %s", id, q.URL())
			}
			return err
		}
		en := entry{Status: s}
		if s.Dead > 0 {
			if en.DeadLetters, err = q.DeadLetters(ctx, id, 20); err != nil {
				return err
			}
		}
		out = append(out, en)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, en := range out {
		if err := en.Status.WriteText(e.stdout); err != nil {
			return err
		}
		for _, d := range en.DeadLetters {
			fmt.Fprintf(e.stdout, "  dead letter (worker %s, %d attempts): %s\n    message: %s\n", d.Worker, d.Attempts, d.Reason, truncate(d.Data, 200))
		}
		if int(en.Dead) > len(en.DeadLetters) {
			fmt.Fprintf(e.stdout, "  ... %d more dead letters (--json lists the first 20)\n", int(en.Dead)-len(en.DeadLetters))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
