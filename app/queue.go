package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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

// Job parameters the publisher records for the workers, and the prefixes
// of a job's store.
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

// QueueURL is the work queue's NATS URL: the flag's value, else
// $IMAGESCOPE_QUEUE_URL, else the configuration's queue.url ("" for none).
func QueueURL(flag string, getenv func(string) string, cfg *config.Config) string {
	return firstNonEmpty(flag, getenv("IMAGESCOPE_QUEUE_URL"), cfg.Queue.URL)
}

// OpenQueue connects to the work queue at url with the configuration's
// queue settings (subject prefix, replicas, credentials); name identifies
// the connection on the server.
func OpenQueue(ctx context.Context, url string, cfg *config.Config, name string, log *slog.Logger) (*queue.Queue, error) {
	opt := queue.Options{Prefix: cfg.Queue.Prefix, Replicas: cfg.Queue.Replicas, Name: name, Logger: log}
	if cfg.Queue.Creds != "" {
		opt.NATSOptions = append(opt.NATSOptions, nats.UserCredentials(cfg.Queue.Creds))
	}
	return queue.Connect(ctx, url, opt)
}

// QueueSpec is what 'imagescope index --queue' publishes: a gallery and
// the store its workers write to.
type QueueSpec struct {
	// Source is the folder or split (Resolve); its image DB is the store
	// unless Weaviate is named and no DB was given.
	Source *Source
	// Weaviate are Weaviate node URLs (comma-separated; "" falls back to
	// $IMAGESCOPE_WEAVIATE_URL and weaviate.url, and without any the
	// source's image DB is the store).
	Weaviate string
	// Collection is the Weaviate collection ("" for weaviate.collection,
	// else one derived from gallery and model).
	Collection string
	// NoCaptions leaves captions out even with a captioner configured.
	NoCaptions bool
	// PromptDir and Domain choose the caption instruction ("" domain: the
	// split's, else general).
	PromptDir, Domain string
	// JobID names the job ("" derives one from gallery, store and model).
	JobID string
}

// QueueJob builds the job that spec describes and its work items: the
// store, the CLIP model the workers must use (cfg.CLIP.Model) and, with a
// captioner configured, the captioner and instruction every worker must
// caption with.
func QueueJob(cfg *config.Config, getenv func(string) string, spec QueueSpec) (queue.Job, []queue.Item, error) {
	src := spec.Source
	label, base := "folder:"+src.Spec.Folder, dataset.Folder
	if abs, err := filepath.Abs(src.Spec.Folder); err == nil {
		label = "folder:" + abs
	}
	if ds := src.Spec.Split; ds != nil {
		label, base = ds.Name+"/"+ds.Split, ds.Name+"-"+ds.Split
	}
	if len(src.Items) == 0 {
		return queue.Job{}, nil, fmt.Errorf("gallery %s has no images", label)
	}
	clipModel := cfg.CLIP.Model
	job := queue.Job{Gallery: label, CLIPModel: clipModel, Params: map[string]string{}}

	// Where the results go: an image DB given, else Weaviate when a server
	// is named, else the gallery's own image DB.
	weaviateURLs := firstNonEmpty(spec.Weaviate, getenv("IMAGESCOPE_WEAVIATE_URL"), cfg.Weaviate.URL)
	if src.Spec.DB == "" && weaviateURLs != "" {
		coll := firstNonEmpty(spec.Collection, cfg.Weaviate.Collection)
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
	} else {
		abs, err := filepath.Abs(src.Path)
		if err != nil {
			return queue.Job{}, nil, err
		}
		job.Store = storeDB + abs
	}

	// Captions: the workers must all use the same captioner and prompt.
	if rc, ok := cfg.Role(modelrole.Captioner); ok && rc.Configured() && !spec.NoCaptions {
		lib, err := prompt.Load(spec.PromptDir)
		if err != nil {
			return queue.Job{}, nil, err
		}
		instr, err := lib.CaptionInstruction(firstNonEmpty(spec.Domain, src.Domain, "general"))
		if err != nil {
			return queue.Job{}, nil, err
		}
		job.CaptionKey = gallery.CaptionKey(rc.CacheModelID(), instr)
		job.Params[paramCaptionModel] = rc.CacheModelID()
		job.Params[paramCaptionPrompt] = instr
	}
	job.ID = spec.JobID
	if job.ID == "" {
		job.ID = defaultJobID(base, job)
	}
	items := make([]queue.Item, len(src.Items))
	for i, im := range src.Items {
		p, err := filepath.Abs(im.Path)
		if err != nil {
			return queue.Job{}, nil, err
		}
		items[i] = queue.Item{Name: im.Name, Path: p, Ord: i}
	}
	return job, items, nil
}

// defaultJobID is <base>-<hash of gallery, store, model and caption set>
// (base: <dataset>-<split>, or folder), so publishing the same work again
// names the same job.
func defaultJobID(base string, j queue.Job) string {
	h := sha256.Sum256([]byte(j.Gallery + "\x00" + j.Store + "\x00" + j.CLIPModel + "\x00" + j.CaptionKey))
	base = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, strings.ToLower(base))
	base = strings.Trim(base, "-")
	if len(base) > 40 {
		base = base[:40]
	}
	return base + "-" + hex.EncodeToString(h[:4])
}

// JobStatus is a job's progress over all workers with its first dead
// letters.
type JobStatus struct {
	*queue.Status
	DeadLetters []queue.DeadLetter `json:"dead_letter_list,omitempty"`
}

// DeadLettersShown is how many dead letters QueueStatus reads per job.
const DeadLettersShown = 20

// QueueStatus returns the status of job jobID, or of every job on the
// queue when jobID is "" (none: an empty list).
func QueueStatus(ctx context.Context, q *queue.Queue, jobID string) ([]JobStatus, error) {
	var ids []string
	if jobID != "" {
		ids = []string{jobID}
	} else {
		jobs, err := q.Jobs(ctx)
		if err != nil {
			return nil, err
		}
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
	}
	var out []JobStatus
	for _, id := range ids {
		s, err := q.Status(ctx, id)
		if err != nil {
			if errors.Is(err, queue.ErrNoJob) {
				return nil, fmt.Errorf("no job %q on %s", id, q.URL())
			}
			return nil, err
		}
		en := JobStatus{Status: s}
		if s.Dead > 0 {
			if en.DeadLetters, err = q.DeadLetters(ctx, id, DeadLettersShown); err != nil {
				return nil, err
			}
		}
		out = append(out, en)
	}
	return out, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// WaitJob polls job id's status every interval, calling tick with each,
// until the job is finished (its last status is returned) or ctx ends.
func WaitJob(ctx context.Context, q *queue.Queue, id string, interval time.Duration, tick func(*queue.Status)) (*queue.Status, error) {
	for {
		s, err := q.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		tick(s)
		if s.Finished() {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}
