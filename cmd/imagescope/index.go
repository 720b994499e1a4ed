package main

import (
	"context"
	"errors"
)

// runIndex implements 'imagescope index'. Not implemented yet.
func runIndex(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
