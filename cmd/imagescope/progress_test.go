package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestProgressPrinter: a downloaded file gets a progress report ending in
// its full size; a file already in the cache prints nothing.
func TestProgressPrinter(t *testing.T) {
	var errb bytes.Buffer
	e := &env{stderr: &errb, log: slog.New(slog.NewTextHandler(&errb, nil))}
	p := progressPrinter(e)
	p("config.json", 512, 512) // cached: complete at once
	for _, done := range []int64{0, 1000, 4000, 10000} {
		p("model.safetensors", done, 10000)
	}
	out := errb.String()
	if strings.Contains(out, "config.json") {
		t.Errorf("cached file reported:\n%s", out)
	}
	if !strings.Contains(out, "download model.safetensors finished") || !strings.Contains(out, "done=10000") {
		t.Errorf("no final report for the download:\n%s", out)
	}
}
