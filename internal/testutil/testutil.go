// Package testutil holds helpers shared by the tests of several packages:
// where the repository's own test data lives, and the rule for optional
// cross-checks (reference data beside the repository, a browser): they run
// when present, skip when absent, and fail when absent under CI=true.
package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// Data returns the path of a file or folder under the repository's
// testdata/ (see testdata/README.md) and fails the test when it is missing.
func Data(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{RepoRoot(tb), "testdata"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("testdata missing (regenerate with scripts/gen-testdata/run): %v", err)
	}
	return p
}

// Datasets returns the data root of the miniature benchmarks in testdata/.
func Datasets(tb testing.TB) string {
	tb.Helper()
	return Data(tb, "datasets")
}

// CLIP returns a path under testdata/clip (tiny checkpoints and their
// reference numbers).
func CLIP(tb testing.TB, elem ...string) string {
	tb.Helper()
	return Data(tb, append([]string{"clip"}, elem...)...)
}

// CI reports whether the tests run under continuous integration (CI=true),
// where optional cross-checks are required.
func CI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable ends the test for lack of something optional: a skip
// normally, a failure under CI=true.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		tb.Fatalf("%s (required under CI=true)", msg)
	}
	tb.Skip(msg)
}

// Shared returns the path of a file or folder under the independent
// reference material beside the repository (../shared from the root). When
// it is missing the test is skipped, or fails under CI=true.
func Shared(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{RepoRoot(tb), "..", "shared"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		Unavailable(tb, "cross-check data missing: %v", err)
	}
	return p
}

// Fixtures returns a path under ../shared/fixtures (see Shared).
func Fixtures(tb testing.TB, elem ...string) string {
	tb.Helper()
	return Shared(tb, append([]string{"fixtures"}, elem...)...)
}
