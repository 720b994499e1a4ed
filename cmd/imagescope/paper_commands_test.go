package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

// TestPaperCommandsParse runs every imagescope command of docs/benchmarks.md
// "Reproducing the paper" against the real flag set and configuration
// loader, with a data folder that does not exist: each must get past its
// flags and configuration and stop at the missing data (exit 1), never at
// a usage error (exit 2).
func TestPaperCommandsParse(t *testing.T) {
	root := testutil.RepoRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	start := strings.Index(text, "## Reproducing the paper")
	if start < 0 {
		t.Fatal(`docs/benchmarks.md has no "## Reproducing the paper" section`)
	}
	section := text[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var cmds [][]string
	inCode := false
	for _, line := range strings.Split(section, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
			continue
		}
		if inCode && strings.HasPrefix(l, "imagescope ") {
			cmds = append(cmds, strings.Fields(strings.ReplaceAll(l, "$c", "dress"))[1:])
		}
	}
	if len(cmds) < 6 {
		t.Fatalf("found %d commands in the section, want the six of the paper table", len(cmds))
	}
	noData := filepath.Join(t.TempDir(), "nodata")
	for _, args := range cmds {
		name := args[0]
		for i := range args {
			if i > 0 && args[i-1] == "--data" {
				args[i] = noData
			}
			if i > 0 && args[i-1] == "--dataset" {
				name += " " + args[i]
			}
		}
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCmd(t, map[string]string{"HF_HUB_OFFLINE": "1"}, args...)
			// eval stops at the data folder; score first reads the rankings
			// of the runs, which do not exist here.
			if code != 1 || !strings.Contains(errOut, "nodata") && !strings.Contains(errOut, "rankings.stage3.json") {
				t.Errorf("exit %d, want 1 at the missing data or run folders:\n%s", code, errOut)
			}
		})
	}
}
