package main

import (
	"fmt"
	"go/build"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

const modulePath = "github.com/imagescope/imagescope"

// TestArchitecture keeps docs/architecture.md true: every package of the
// module (bench/ and scripts/ aside) has a row in its layer table, and no
// package imports one of a higher layer (a smaller layer number).
func TestArchitecture(t *testing.T) {
	root := testutil.RepoRoot(t)
	layers := architectureTable(t, filepath.Join(root, "docs", "architecture.md"))
	pkgs := modulePackages(t, root)
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages under %s", len(pkgs), root)
	}
	for pkg, imports := range pkgs {
		layer, ok := layers[pkg]
		if !ok {
			t.Errorf("package %s has no row in docs/architecture.md", pkg)
			continue
		}
		for _, imp := range imports {
			il, ok := layers[imp]
			if ok && il < layer {
				t.Errorf("%s (layer %d) imports %s of the higher layer %d", pkg, layer, imp, il)
			}
		}
	}
	for pkg := range layers {
		if _, ok := pkgs[pkg]; !ok {
			t.Errorf("docs/architecture.md lists %s, which is not a package of the module", pkg)
		}
	}
}

var layerRow = regexp.MustCompile("^\\| (\\d+) [^|]+\\| `([^`]+)` \\|")

// architectureTable reads the layer table: package -> layer number.
func architectureTable(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		m := layerRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if _, dup := out[m[2]]; dup {
			t.Errorf("%s: package %s has two rows", path, m[2])
		}
		out[m[2]] = n
	}
	if len(out) == 0 {
		t.Fatalf("%s: no layer table rows", path)
	}
	return out
}

// modulePackages maps each package folder of the module (relative path)
// to the module packages its non-test files import, whatever their build
// tags.
func modulePackages(t *testing.T, root string) map[string][]string {
	t.Helper()
	ctx := build.Default
	ctx.UseAllFiles = true
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		name := d.Name()
		if rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" ||
			rel == "bench" || rel == "scripts") {
			return filepath.SkipDir
		}
		p, err := ctx.ImportDir(path, build.ImportComment)
		if _, ok := err.(*build.NoGoError); ok {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read package %s: %w", rel, err)
		}
		if rel == "." {
			rel = ""
		}
		var own []string
		for _, imp := range p.Imports {
			if rest, ok := strings.CutPrefix(imp, modulePath+"/"); ok {
				own = append(own, rest)
			}
		}
		out[rel] = own
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
