// Package weaviate keeps a gallery in Weaviate, the external vector engine,
// behind the same search shape as vindex.Index.
//
// One collection holds one gallery embedded by one CLIP model: each image is
// an object with two named vectors, "image" and "caption" (L2-normalised
// CLIP embeddings; cosine distance, HNSW), and the properties name, path,
// caption and ord (the image's position in gallery order). Object ids are
// UUIDv5 of the image name, so writes are idempotent upserts and an
// interrupted batch can simply be sent again. The collection description
// records the CLIP model, the dimension and whether captions are stored; a
// collection written by another model or dimension is refused.
//
// Search fetches a candidate set from Weaviate — the nearest neighbours of
// the query's mean description vector on the image vector and, when the
// caption term counts (tau > 0), on the caption vector — together with the
// candidates' stored vectors, then ranks the union with vindex's exact
// fused-score search (the score is linear in the descriptions, so the mean
// vector ranks exactly as the per-description mean does). Scores are
// therefore bit-identical to the embedded exact path, and the top K equals
// exact search whenever the true top K lies inside the candidate set (the
// only approximation is Weaviate's HNSW recall, measured by bench/weaviate).
// Restricted queries (CIRR subsets) and full rankings (k <= 0) are exact:
// they fetch the restricted objects, or scan the whole collection.
package weaviate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/imagescope/imagescope/internal/backoff"
	wv "github.com/weaviate/weaviate-go-client/v5/weaviate"
	"github.com/weaviate/weaviate-go-client/v5/weaviate/fault"
	wvgrpc "github.com/weaviate/weaviate-go-client/v5/weaviate/grpc"
	"github.com/weaviate/weaviate/entities/models"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Named vectors and properties of a gallery collection.
const (
	VectorImage   = "image"
	VectorCaption = "caption"
	PropName      = "name"
	PropPath      = "path"
	PropCaption   = "caption"
	PropOrd       = "ord"
)

// Defaults for Config.
const (
	DefaultCandidates = 256
	// DefaultDynamicEfMax lets the dynamic ef reach 8 x DefaultCandidates.
	DefaultDynamicEfMax     = 8 * DefaultCandidates
	DefaultConsistencyLevel = "QUORUM"
	DefaultBatchSize        = 256
	DefaultRetries          = 6
	DefaultRetryBase        = 250 * time.Millisecond
	DefaultGRPCPort         = 50051
)

// Config says how to reach Weaviate and which collection to use.
type Config struct {
	// URLs are the REST endpoints of the cluster's nodes
	// (http://127.0.0.1:8080). Requests go to the first that answers; when
	// a node stops answering the next one is used.
	URLs []string
	// GRPCAddrs are the nodes' gRPC host:port, same order as URLs; empty
	// means each URL's host with port 50051.
	GRPCAddrs []string
	// APIKey is sent as a bearer token when set.
	APIKey string
	// Collection names the collection (Weaviate class); empty derives it
	// from the gallery and the CLIP model (CollectionName).
	Collection string
	// ConsistencyLevel for reads and writes: ONE, QUORUM or ALL.
	ConsistencyLevel string
	// Candidates is the candidate-set size fetched per query before exact
	// re-ranking (at least k is fetched).
	Candidates int
	// Replicas is the replication factor used when creating the collection
	// (default 1); Shards the number of shards (default: one per node).
	Replicas int
	Shards   int
	// EfConstruction and MaxConnections tune the HNSW graphs at creation
	// (0: Weaviate's defaults). Ef sets the query-time ef (0: dynamic).
	EfConstruction int
	MaxConnections int
	Ef             int
	// DynamicEfMax caps the dynamic query-time ef, which Weaviate sets to
	// 8 x the candidate count (0: DefaultDynamicEfMax). Weaviate's own cap
	// of 500 keeps the search depth below what large candidate sets need on
	// hard data; see docs/scale-out.md for the measured overlap.
	DynamicEfMax int
	// QueryConcurrency bounds the queries of one Search call in flight at
	// once (default 4).
	QueryConcurrency int
	// BatchSize is the number of objects per batch write.
	BatchSize int
	// Retries and RetryBase bound the retries with exponential backoff on
	// an unreachable node before a call gives up with ErrUnavailable.
	Retries   int
	RetryBase time.Duration
	// Timeout bounds one request (default 60s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Meta identifies what a collection holds.
type Meta struct {
	CLIPModel   string `json:"clip_model"`
	Dim         int    `json:"dim"`
	HasCaptions bool   `json:"captions"`
	Gallery     string `json:"gallery,omitempty"`
	CaptionKey  string `json:"caption_key,omitempty"`
}

// ErrUnavailable marks a failure to reach any Weaviate node after retries.
var ErrUnavailable = errors.New("weaviate unavailable")

// ErrMismatch marks a collection whose model or dimension differs.
var ErrMismatch = errors.New("collection does not match")

// Store is an open gallery collection.
type Store struct {
	cfg   Config
	meta  Meta
	class string
	nodes []*node
	cur   atomic.Int32
	log   *slog.Logger
}

type node struct {
	url    string
	grpc   string
	client *wv.Client
}

var classRE = regexp.MustCompile(`^[A-Z][_0-9A-Za-z]{0,230}$`)

// CollectionName derives a valid collection name from the gallery and the
// CLIP model: "Imagescope_<gallery>_<model>" with other characters mapped
// to '_' and a short hash to keep distinct inputs distinct.
func CollectionName(gallery, clipModel string) string {
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
				b.WriteRune(r)
			default:
				b.WriteByte('_')
			}
		}
		out := strings.Trim(b.String(), "_")
		if len(out) > 60 {
			out = out[len(out)-60:]
		}
		return out
	}
	h := uuid.NewSHA1(uuid.NameSpaceOID, []byte(gallery+"\x00"+clipModel))
	return "Imagescope_" + clean(gallery) + "_" + clean(clipModel) + "_" + strings.ReplaceAll(h.String(), "-", "")[:8]
}

var idSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/imagescope/imagescope/gallery-image"))

// ObjectID is the deterministic object id (UUIDv5) of an image name.
func ObjectID(name string) string {
	return uuid.NewSHA1(idSpace, []byte(name)).String()
}

// Open connects to Weaviate and opens the collection, creating it when
// create is set and it does not exist. An unreachable server gives an
// error naming the URLs; a collection written with another CLIP model or
// dimension is refused.
func Open(ctx context.Context, cfg Config, meta Meta, create bool) (*Store, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("weaviate: no URL configured")
	}
	if meta.Dim <= 0 {
		return nil, fmt.Errorf("weaviate: dimension %d must be positive", meta.Dim)
	}
	if meta.CLIPModel == "" {
		return nil, errors.New("weaviate: the CLIP model id is required")
	}
	if cfg.Collection == "" {
		cfg.Collection = CollectionName(meta.Gallery, meta.CLIPModel)
	}
	if !classRE.MatchString(cfg.Collection) {
		return nil, fmt.Errorf("weaviate: collection name %q must start with an upper-case letter and hold only letters, digits and '_'", cfg.Collection)
	}
	cfg.ConsistencyLevel = strings.ToUpper(cfg.ConsistencyLevel)
	switch cfg.ConsistencyLevel {
	case "":
		cfg.ConsistencyLevel = DefaultConsistencyLevel
	case "ONE", "QUORUM", "ALL":
	default:
		return nil, fmt.Errorf("weaviate: consistency level %q: use ONE, QUORUM or ALL", cfg.ConsistencyLevel)
	}
	if cfg.Candidates <= 0 {
		cfg.Candidates = DefaultCandidates
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.QueryConcurrency <= 0 {
		cfg.QueryConcurrency = 4
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Retries <= 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.GRPCAddrs) != 0 && len(cfg.GRPCAddrs) != len(cfg.URLs) {
		return nil, fmt.Errorf("weaviate: %d gRPC addresses for %d URLs", len(cfg.GRPCAddrs), len(cfg.URLs))
	}
	s := &Store{cfg: cfg, meta: meta, class: cfg.Collection, log: cfg.Logger}
	var reachable []string
	var lastErr error
	for i, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("weaviate: URL %q: want http(s)://host:port", raw)
		}
		g := ""
		if len(cfg.GRPCAddrs) > 0 {
			g = cfg.GRPCAddrs[i]
		} else {
			g = net.JoinHostPort(u.Hostname(), strconv.Itoa(DefaultGRPCPort))
		}
		n := &node{url: strings.TrimRight(raw, "/"), grpc: g}
		if err := ready(ctx, n.url, cfg.APIKey); err != nil {
			lastErr = err
			cfg.Logger.Warn("weaviate node not ready", "url", n.url, "err", err)
		} else {
			reachable = append(reachable, n.url)
		}
		c, err := newClient(n, cfg)
		if err != nil {
			return nil, fmt.Errorf("weaviate %s: %w", n.url, err)
		}
		n.client = c
		s.nodes = append(s.nodes, n)
	}
	if len(reachable) == 0 {
		return nil, fmt.Errorf("weaviate at %s is unreachable: %w (%w)", strings.Join(cfg.URLs, ", "), lastErr, ErrUnavailable)
	}
	for i, n := range s.nodes {
		if n.url == reachable[0] {
			s.cur.Store(int32(i))
		}
	}
	if err := s.ensureCollection(ctx, create); err != nil {
		return nil, err
	}
	return s, nil
}

func ready(ctx context.Context, base, apiKey string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/.well-known/ready", nil)
	if err != nil {
		return err
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/v1/.well-known/ready answered %s", base, resp.Status)
	}
	return nil
}

func newClient(n *node, cfg Config) (*wv.Client, error) {
	u, _ := url.Parse(n.url)
	wc := wv.Config{
		Host:       u.Host,
		Scheme:     u.Scheme,
		Timeout:    cfg.Timeout,
		GrpcConfig: &wvgrpc.Config{Host: n.grpc, Secured: u.Scheme == "https"},
	}
	if cfg.APIKey != "" {
		// A static bearer header (what the client's auth.ApiKey sends),
		// without its start-up probe that blocks on an unreachable node.
		wc.Headers = map[string]string{"Authorization": "Bearer " + cfg.APIKey}
	}
	return wv.NewClient(wc)
}

// Collection is the collection's name.
func (s *Store) Collection() string { return s.class }

// Meta is what the collection holds.
func (s *Store) Meta() Meta { return s.meta }

// Config is the effective configuration (defaults filled in).
func (s *Store) Config() Config { return s.cfg }

// Close releases the store. The client holds no resources that need it,
// but callers should not use the store afterwards.
func (s *Store) Close() error { return nil }

const metaPrefix = "imagescope gallery: "

func (s *Store) ensureCollection(ctx context.Context, create bool) error {
	var cls *models.Class
	err := s.do(ctx, "read collection "+s.class, func(c *wv.Client) error {
		ok, err := c.Schema().ClassExistenceChecker().WithClassName(s.class).Do(ctx)
		if err != nil {
			return err
		}
		if !ok {
			cls = nil
			return nil
		}
		cls, err = c.Schema().ClassGetter().WithClassName(s.class).Do(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if cls == nil {
		if !create {
			return fmt.Errorf("weaviate: collection %s does not exist on %s (index the gallery first)", s.class, s.nodes[s.cur.Load()].url)
		}
		return s.createCollection(ctx)
	}
	return s.checkCollection(ctx, cls)
}

func (s *Store) checkCollection(ctx context.Context, cls *models.Class) error {
	desc, ok := strings.CutPrefix(cls.Description, metaPrefix)
	if !ok {
		return fmt.Errorf("weaviate: collection %s was not created by imagescope (no gallery record in its description): %w", s.class, ErrMismatch)
	}
	var got Meta
	if err := json.Unmarshal([]byte(desc), &got); err != nil {
		return fmt.Errorf("weaviate: collection %s: unreadable gallery record %q: %v: %w", s.class, desc, err, ErrMismatch)
	}
	if got.CLIPModel != s.meta.CLIPModel {
		return fmt.Errorf("weaviate: collection %s holds embeddings of CLIP model %q, configured model is %q: %w", s.class, got.CLIPModel, s.meta.CLIPModel, ErrMismatch)
	}
	if got.Dim != s.meta.Dim {
		return fmt.Errorf("weaviate: collection %s holds %d-d vectors, configured CLIP model gives %d-d: %w", s.class, got.Dim, s.meta.Dim, ErrMismatch)
	}
	if _, ok := cls.VectorConfig[VectorImage]; !ok {
		return fmt.Errorf("weaviate: collection %s has no named vector %q: %w", s.class, VectorImage, ErrMismatch)
	}
	// The record is authoritative for captions: a reader does not know
	// in advance whether the gallery was captioned.
	s.meta.HasCaptions = got.HasCaptions
	if s.meta.Gallery == "" {
		s.meta.Gallery = got.Gallery
	}
	// Check an actual object too: a collection filled by another tool may
	// carry another dimension than its record says.
	objs, err := s.scanPage(ctx, "", 1)
	if err != nil {
		return err
	}
	if len(objs) == 1 && len(objs[0].image) != s.meta.Dim {
		return fmt.Errorf("weaviate: collection %s: object %q has a %d-d image vector, expected %d: %w", s.class, objs[0].name, len(objs[0].image), s.meta.Dim, ErrMismatch)
	}
	return nil
}

func (s *Store) createCollection(ctx context.Context) error {
	rec, _ := json.Marshal(s.meta)
	hnsw := map[string]any{"distance": "cosine"}
	if s.cfg.EfConstruction > 0 {
		hnsw["efConstruction"] = s.cfg.EfConstruction
	}
	if s.cfg.MaxConnections > 0 {
		hnsw["maxConnections"] = s.cfg.MaxConnections
	}
	if s.cfg.Ef > 0 {
		hnsw["ef"] = s.cfg.Ef
	} else {
		efMax := s.cfg.DynamicEfMax
		if efMax <= 0 {
			efMax = DefaultDynamicEfMax
		}
		hnsw["dynamicEfMax"] = efMax
	}
	vc := models.VectorConfig{
		Vectorizer:        map[string]any{"none": map[string]any{}},
		VectorIndexType:   "hnsw",
		VectorIndexConfig: hnsw,
	}
	f, t := false, true
	cls := &models.Class{
		Class:       s.class,
		Description: metaPrefix + string(rec),
		VectorConfig: map[string]models.VectorConfig{
			VectorImage:   vc,
			VectorCaption: vc,
		},
		Properties: []*models.Property{
			{Name: PropName, DataType: []string{"text"}, Tokenization: "field", IndexFilterable: &t, IndexSearchable: &f},
			{Name: PropPath, DataType: []string{"text"}, IndexFilterable: &f, IndexSearchable: &f},
			{Name: PropCaption, DataType: []string{"text"}, IndexFilterable: &f, IndexSearchable: &t},
			{Name: PropOrd, DataType: []string{"int"}, IndexFilterable: &t},
		},
		ReplicationConfig: &models.ReplicationConfig{Factor: int64(s.cfg.Replicas)},
	}
	if s.cfg.Shards > 0 {
		cls.ShardingConfig = map[string]any{"desiredCount": s.cfg.Shards}
	}
	err := s.do(ctx, "create collection "+s.class, func(c *wv.Client) error {
		err := c.Schema().ClassCreator().WithClass(cls).Do(ctx)
		if err != nil && strings.Contains(err.Error(), "already exists") {
			return nil // another worker created it first
		}
		return err
	})
	if err != nil {
		return err
	}
	s.log.Info("created weaviate collection", "collection", s.class, "clip", s.meta.CLIPModel, "dim", s.meta.Dim, "replicas", s.cfg.Replicas)
	return nil
}

// Drop deletes the collection and everything in it.
func (s *Store) Drop(ctx context.Context) error {
	return s.do(ctx, "delete collection "+s.class, func(c *wv.Client) error {
		return c.Schema().ClassDeleter().WithClassName(s.class).Do(ctx)
	})
}

// do runs op against the current node; on an unreachable node it moves to
// the next one, with exponential backoff once all were tried, and gives up
// with ErrUnavailable after Retries rounds. Other errors return at once.
func (s *Store) do(ctx context.Context, what string, op func(c *wv.Client) error) error {
	wait := backoff.Policy{Base: s.cfg.RetryBase, Max: 10 * time.Second}
	var last error
	for attempt := 0; attempt <= s.cfg.Retries; attempt++ {
		for range s.nodes {
			i := int(s.cur.Load())
			n := s.nodes[i]
			err := op(n.client)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("weaviate: %s: %w", what, ctx.Err())
			}
			if !transient(err) {
				return fmt.Errorf("weaviate %s: %s: %w", n.url, what, err)
			}
			last = fmt.Errorf("%s: %w", n.url, err)
			s.log.Warn("weaviate node failed, trying the next", "url", n.url, "op", what, "err", err)
			s.cur.CompareAndSwap(int32(i), int32((i+1)%len(s.nodes)))
		}
		if attempt == s.cfg.Retries {
			break
		}
		if err := backoff.Sleep(ctx, wait.Delay(attempt+1)); err != nil {
			return fmt.Errorf("weaviate: %s: %w", what, err)
		}
	}
	return fmt.Errorf("weaviate: %s: no node answered after %d retries (last: %v): %w", what, s.cfg.Retries, last, ErrUnavailable)
}

// transient reports whether err looks like an unreachable or overloaded
// node rather than a rejected request.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
			return true
		}
	}
	var we *fault.WeaviateClientError
	if errors.As(err, &we) {
		if we.StatusCode >= 500 || we.StatusCode == 429 {
			return true
		}
		if we.DerivedFromError != nil {
			return transient(we.DerivedFromError) || isNetErr(we.DerivedFromError)
		}
		if !we.IsUnexpectedStatusCode {
			return true // transport failure without a status
		}
	}
	if isNetErr(err) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "Unavailable", "no such host", "i/o timeout",
		"not enough replicas", "cannot achieve consistency", "context deadline exceeded", "status code: 5", "leader not found", "no leader"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func isNetErr(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe)
}
