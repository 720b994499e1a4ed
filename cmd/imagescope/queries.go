package main

import (
	"context"
	"errors"
)

// runQueries implements 'imagescope queries'. Not implemented yet.
func runQueries(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
