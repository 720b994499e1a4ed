package main

import (
	"context"
	"errors"
)

// runServe implements 'imagescope serve'. Not implemented yet.
func runServe(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
