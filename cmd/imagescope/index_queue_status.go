package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/queue"
)

// printQueueStatus prints the progress and first dead letters of job
// jobID, or of every job on the queue when jobID is "".
func printQueueStatus(ctx context.Context, e *env, q *queue.Queue, jobID string, asJSON bool) error {
	out, err := app.QueueStatus(ctx, q, jobID)
	if err != nil {
		return err
	}
	if len(out) == 0 {
		fmt.Fprintf(e.stdout, "no jobs on %s\n", q.URL())
		return nil
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, en := range out {
		if err := en.Status.WriteText(e.stdout); err != nil {
			return err
		}
		for _, d := range en.DeadLetters {
			fmt.Fprintf(e.stdout, "  dead letter (worker %s, %d attempts): %s\n    message: %s\n", d.Worker, d.Attempts, d.Reason, truncate(d.Data, 200))
		}
		if int(en.Dead) > len(en.DeadLetters) {
			fmt.Fprintf(e.stdout, "  ... %d more dead letters (--json lists the first %d)\n", int(en.Dead)-len(en.DeadLetters), app.DeadLettersShown)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
