package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/internal/progress"

	"github.com/imagescope/imagescope/clip"
)

// embedItem is one --image or --text argument, in command-line order.
type embedItem struct {
	kind  string // "image" or "text"
	input string
}

// embedList collects repeated --image/--text flags into one ordered list.
type embedList struct {
	kind  string
	items *[]embedItem
}

func (l embedList) String() string { return "" }
func (l embedList) Set(v string) error {
	*l.items = append(*l.items, embedItem{l.kind, v})
	return nil
}

// runEmbed implements 'imagescope embed'.
func runEmbed(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "embed", "[--clip DIR_OR_HF_ID] [--image PATH]... [--text STRING]... [--normalize]",
		`Print CLIP embeddings as JSON lines {"kind":"image"|"text","input":...,"embedding":[...]},
one per --image/--text in command-line order. Embeddings are the projected
features, L2-normalised only with --normalize. An item that cannot be embedded
is reported on stderr and the others are still printed; the exit status is
non-zero when any item failed.`)
	var items []embedItem
	model := fs.String("clip", "", "CLIP checkpoint directory or HuggingFace model id (default "+clip.DefaultModel+")")
	fs.StringVar(model, "model", "", "same as --clip")
	fs.Var(embedList{"image", &items}, "image", "image file to embed (repeatable)")
	fs.Var(embedList{"text", &items}, "text", "text to embed (repeatable)")
	normalize := fs.Bool("normalize", false, "L2-normalise the embeddings")
	threads := fs.Int("threads", 0, "CPU threads (0: all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q (use --image or --text)", fs.Args())
	}
	if len(items) == 0 {
		return usagef("nothing to embed: give at least one --image or --text")
	}
	if *threads < 0 {
		return usagef("--threads must be >= 0")
	}
	m, err := clip.Load(ctx, *model, clip.Options{Threads: *threads, Logger: e.log, Progress: progressPrinter(e)})
	if err != nil {
		return err
	}
	inputs := make([]app.EmbedInput, len(items))
	for i, it := range items {
		inputs[i] = app.EmbedInput{Image: it.kind == "image", Input: it.input}
	}
	results, err := app.Embed(ctx, m, inputs)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	failed := 0
	for i, it := range items {
		r := results[i]
		if r.Err != nil {
			failed++
			fmt.Fprintf(e.stderr, "imagescope embed: %s %q: %v\n", it.kind, it.input, r.Err)
			continue
		}
		if *normalize {
			clip.Normalize(r.Vector)
		}
		line, err := json.Marshal(struct {
			Kind      string    `json:"kind"`
			Input     string    `json:"input"`
			Embedding []float32 `json:"embedding"`
		}{it.kind, it.input, r.Vector})
		if err != nil {
			return fmt.Errorf("encode %s %q: %w", it.kind, it.input, err)
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d items failed", failed, len(items))
	}
	return nil
}

// progressPrinter reports hub downloads on stderr: a bar per file with
// bytes, rate and ETA on a terminal, periodic log lines otherwise. A file
// already in the cache (reported complete at once) prints nothing.
func progressPrinter(e *env) func(file string, done, total int64) {
	var mu sync.Mutex
	type state struct {
		bar  *progress.Bar
		seen int64
	}
	bars := map[string]*state{}
	return func(file string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		st, ok := bars[file]
		if !ok {
			if total > 0 && done == total {
				return // cached
			}
			st = &state{bar: progress.New(e.stderr, "download "+file, total, progress.Options{Unit: "bytes", Logger: e.log}), seen: done}
			st.bar.Add(done)
			bars[file] = st
		}
		if done > st.seen {
			st.bar.Add(done - st.seen)
			st.seen = done
		}
		if total > 0 && done >= total {
			st.bar.Finish()
			delete(bars, file)
		}
	}
}
