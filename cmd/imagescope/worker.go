package main

import (
	"context"
	"errors"
)

// runWorker implements 'imagescope worker'. Not implemented yet.
func runWorker(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
