package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
)

// startServe runs 'imagescope serve' until the returned stop is called. It
// returns the base URL the server printed, what it wrote to stderr up to
// that line, and stop, which ends the server and fails the test on a
// non-zero exit.
func startServe(t *testing.T, ctx context.Context, env func(string) string, args []string) (string, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	codec := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		codec <- run(ctx, args, strings.NewReader(""), &out, pw, env)
		pw.Close()
	}()
	urlRe := regexp.MustCompile(`on (http://127\.0\.0\.1:\d+/)`)
	sc := bufio.NewScanner(pr)
	var base string
	var stderr strings.Builder
	for sc.Scan() {
		stderr.WriteString(sc.Text() + "\n")
		if m := urlRe.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
	}
	if base == "" {
		cancel()
		t.Fatalf("%v: no URL printed; stderr:\n%s (exit %d)", args, stderr.String(), <-codec)
	}
	go io.Copy(io.Discard, pr)
	return base, stderr.String(), func() {
		cancel()
		if code := <-codec; code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}
