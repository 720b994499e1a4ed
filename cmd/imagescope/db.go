package main

import (
	"context"
	"errors"
)

// runDB implements 'imagescope db'. Not implemented yet.
func runDB(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
