package main

import (
	"context"
	"errors"
)

// runEval implements 'imagescope eval'. Not implemented yet.
func runEval(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
