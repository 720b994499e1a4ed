package main

import (
	"context"
	"errors"
)

// runEmbed implements 'imagescope embed'. Not implemented yet.
func runEmbed(ctx context.Context, e *env, args []string) error {
	return errors.New("not implemented yet")
}
