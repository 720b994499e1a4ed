// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
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

// Shared returns the path of a file or folder under the shared reference
// material that sits beside the repository (../shared from the root), and
// fails the test when it is missing.
func Shared(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{RepoRoot(tb), "..", "shared"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("shared fixture missing: %v", err)
	}
	return p
}

// Fixtures returns a path under ../shared/fixtures.
func Fixtures(tb testing.TB, elem ...string) string {
	tb.Helper()
	return Shared(tb, append([]string{"fixtures"}, elem...)...)
}
