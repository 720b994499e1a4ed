package main

import (
	"context"
	"errors"
)

// runIndexQueue implements 'imagescope index --queue URL [...]': distributed
// indexing through a NATS JetStream work queue. It receives the full index
// argument list. Not implemented yet.
func runIndexQueue(ctx context.Context, e *env, args []string) error {
	return errors.New("indexing through a queue is not implemented yet")
}
