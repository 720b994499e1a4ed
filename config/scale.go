package config

import "time"

// Weaviate configures the external vector engine (vindex/weaviate). The
// gallery lives there instead of (or besides) the embedded image DB when
// URL is set.
type Weaviate struct {
	// URL lists the REST endpoints of the cluster's nodes, comma-separated
	// (http://10.0.0.5:8080,http://10.0.0.6:8080); requests fail over
	// between them. Environment: IMAGESCOPE_WEAVIATE_URL.
	URL string `yaml:"url"`
	// GRPC lists the nodes' gRPC host:port in the same order; empty means
	// each URL's host with port 50051.
	GRPC string `yaml:"grpc"`
	// APIKeyEnv names the environment variable holding the API key.
	APIKeyEnv string `yaml:"api_key_env"`
	// Collection overrides the collection name (default: derived from the
	// gallery and the CLIP model).
	Collection string `yaml:"collection"`
	// ConsistencyLevel for reads and writes: ONE, QUORUM (default) or ALL.
	ConsistencyLevel string `yaml:"consistency_level"`
	// Candidates is the candidate-set size fetched per query before exact
	// re-ranking (default 256).
	Candidates int `yaml:"candidates"`
	// Replicas and Shards apply when a collection is created.
	Replicas int `yaml:"replicas"`
	Shards   int `yaml:"shards"`
}

// Queue configures distributed indexing over NATS JetStream (package queue).
type Queue struct {
	// URL of the NATS server(s), e.g. nats://10.0.0.7:4222 (comma-separated
	// for a cluster). Environment: IMAGESCOPE_QUEUE_URL.
	URL string `yaml:"url"`
	// Prefix names the streams and subjects (default IMAGESCOPE).
	Prefix string `yaml:"prefix"`
	// Creds is a NATS credentials file (optional).
	Creds string `yaml:"creds"`
	// Replicas of the JetStream streams (3 on a 3-node NATS cluster).
	Replicas int `yaml:"replicas"`
	// AckWait is how long an item may stay unacknowledged before it is
	// redelivered to another worker (default 2m; workers extend it while
	// they work).
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAttempts is the number of deliveries before a failing item is
	// dead-lettered (default 5).
	MaxAttempts int `yaml:"max_attempts"`
	// Concurrency is the number of items one worker processes at once.
	Concurrency int `yaml:"concurrency"`
}
