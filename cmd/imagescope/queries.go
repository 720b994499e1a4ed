package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/dataset"
)

// runQueries implements 'imagescope queries'.
func runQueries(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "queries", "--dataset NAME --data DIR [--split SPLIT]", `
Print a benchmark split's queries, one JSON object per line, in file order:
id, instruction (or turns for VisDial: caption then the ten
"question? answer" rounds), reference image, targets, and for CIRR the
subset candidates. Image files need not exist.`)
	name := fs.String("dataset", "", benchmarkNameHelp)
	data := benchmarkDataFlag(e, fs)
	split := fs.String("split", "", "split: val (or valid) or test; CIRR test means test1 (default: val; test for Flickr30K and MSCOCO, which have only test)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *name == "" {
		return usagef("--dataset is required")
	}
	if *data == "" {
		return usagef("--data is required (or set IMAGESCOPE_DATA)")
	}
	if _, _, err := dataset.Canonical(*name, *split); err != nil {
		return usagef("%v", err)
	}
	ds, err := dataset.Load(ctx, *name, *data, *split)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	for _, q := range ds.Queries {
		b, err := json.Marshal(q)
		if err != nil {
			return fmt.Errorf("encode query %s: %w", q.ID, err)
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write queries: %w", err)
	}
	return nil
}
