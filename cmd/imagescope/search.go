package main

import (
	"context"
	"errors"
)

// runSearch implements 'imagescope search'. Not implemented yet.
func runSearch(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
