package main

import (
	"context"
	"errors"
)

// runCache implements 'imagescope cache'. Not implemented yet.
func runCache(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
