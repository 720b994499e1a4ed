package main

import (
	"context"
	"errors"
)

// runScore implements 'imagescope score'. Not implemented yet.
func runScore(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
