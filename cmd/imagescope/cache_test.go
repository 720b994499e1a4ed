package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/llm"
)

func TestCacheCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache", "answers.db")
	c, err := llm.OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Put(ctx, "k1", "verifier", "google/paligemma-3b-mix-224", "chat", []byte(`{"text":"yes"}`))
	c.Put(ctx, "k2", "verifier", "google/paligemma-3b-mix-224", "chat", []byte(`{"text":"no"}`))
	c.Put(ctx, "k3", "reasoner", "meta-llama/Meta-Llama-3-8B-Instruct", "chat", []byte(`{"text":"{}"}`))
	c.Close()
	env := func(k string) string {
		return map[string]string{"IMAGESCOPE_HOME": dir, "HOME": dir}[k]
	}
	cmd := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, append([]string{"cache"}, args...), strings.NewReader(""), &out, &errb, env)
		return code, out.String(), errb.String()
	}
	code, out, errs := cmd("stats")
	if code != 0 || !strings.Contains(out, "3 entries") || !strings.Contains(out, "google/paligemma-3b-mix-224") {
		t.Fatalf("stats: %d %q %q", code, out, errs)
	}
	code, out, _ = cmd("stats", "--json", "--cache", path)
	var st llm.CacheStats
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Entries != 3 || len(st.Groups) != 2 {
		t.Fatalf("stats --json: %d %q", code, out)
	}
	if code, out, _ = cmd("check"); code != 0 || !strings.Contains(out, "3 entries verified") {
		t.Fatalf("check: %d %q", code, out)
	}
	if code, out, _ = cmd("clear", "--role", "verifier"); code != 0 || !strings.Contains(out, "deleted 2 verifier answers") {
		t.Fatalf("clear --role: %d %q", code, out)
	}
	if code, out, _ = cmd("clear"); code != 0 || !strings.Contains(out, "deleted 1 answers") {
		t.Fatalf("clear: %d %q", code, out)
	}
	if code, _, _ = cmd("clear", "--role", "critic"); code != 2 {
		t.Errorf("bad role: exit %d", code)
	}
	if code, _, _ = cmd("bogus"); code != 2 {
		t.Errorf("bad subcommand: exit %d", code)
	}
	if code, out, _ = cmd("stats", "--cache", filepath.Join(dir, "none.db")); code != 0 || !strings.Contains(out, "no file yet") {
		t.Errorf("missing file: %d %q", code, out)
	}
}
