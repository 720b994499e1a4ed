package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

// docCommand is one `imagescope ...` command line found in the docs.
type docCommand struct {
	where string // file:line
	args  []string
}

var inlineCode = regexp.MustCompile("`(?:go run \\./cmd/)?imagescope [^`]+`")

// docCommands returns every imagescope command line of README.md and
// docs/*.md: lines of code blocks and inline code spans.
func docCommands(t *testing.T) []docCommand {
	t.Helper()
	root := testutil.RepoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	var out []docCommand
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		lines := strings.Split(string(b), "\n")
		inBlock := false
		for i := 0; i < len(lines); i++ {
			l := lines[i]
			where := rel + ":" + strconv.Itoa(i+1)
			if strings.HasPrefix(strings.TrimSpace(l), "```") {
				inBlock = !inBlock
				continue
			}
			if inBlock {
				s := strings.TrimPrefix(strings.TrimSpace(l), "$ ")
				for strings.HasSuffix(s, "\\") && i+1 < len(lines) {
					i++
					s = strings.TrimSuffix(s, "\\") + " " + strings.TrimSpace(lines[i])
				}
				if args := commandArgs(s); args != nil {
					out = append(out, docCommand{where, args})
				}
				continue
			}
			for _, m := range inlineCode.FindAllString(l, -1) {
				if args := commandArgs(strings.Trim(m, "`")); args != nil {
					out = append(out, docCommand{where, args})
				}
			}
		}
	}
	return out
}

// commandArgs splits a shell line that runs imagescope into its arguments
// (after the program name); nil when the line runs something else. Quotes
// group words; a comment, pipe or redirection ends the command.
func commandArgs(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		default:
			if !inWord && (r == '#' || r == '|' || r == '>' || r == '&' || r == ';') {
				flush()
				goto done
			}
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
done:
	switch {
	case len(words) >= 2 && words[0] == "imagescope":
		return words[1:]
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/imagescope":
		return words[3:]
	}
	return nil
}

var helpFlag = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9-]*)`)

// TestDocsCommandsMatchFlags checks every imagescope command line in
// README.md and docs/*.md against the command's flag set (as --help lists
// it), and runs the ones that need nothing but the repository's testdata.
func TestDocsCommandsMatchFlags(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 20 {
		t.Fatalf("found only %d imagescope command lines in the docs", len(cmds))
	}
	helps := map[string]string{}
	help := func(cmd ...string) (string, bool) {
		key := strings.Join(cmd, " ")
		if h, ok := helps[key]; ok {
			return h, h != ""
		}
		code, out, _ := runCmd(t, nil, append(append([]string{}, cmd...), "--help")...)
		if code != 0 {
			out = ""
		}
		helps[key] = out
		return out, out != ""
	}
	withSub := map[string]bool{"db": true, "cache": true}
	ran := 0
	for _, c := range cmds {
		if len(c.args) == 0 || strings.HasPrefix(c.args[0], "<") || strings.HasPrefix(c.args[0], "-") {
			continue // "imagescope <command> --help", "imagescope --help"
		}
		cmd := []string{c.args[0]}
		rest := c.args[1:]
		if withSub[cmd[0]] && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && !strings.ContainsAny(rest[0], "<…|") {
			cmd, rest = append(cmd, rest[0]), rest[1:]
		}
		h, ok := help(cmd...)
		if !ok {
			t.Errorf("%s: imagescope %s: no such command", c.where, strings.Join(cmd, " "))
			continue
		}
		if withSub[cmd[0]] && len(cmd) == 1 {
			continue // "imagescope db" alone: the overview
		}
		known := map[string]bool{"help": true, "h": true}
		for _, m := range helpFlag.FindAllStringSubmatch(h, -1) {
			known[m[1]] = true
		}
		for _, a := range rest {
			if !strings.HasPrefix(a, "-") || a == "-" || a == "--" || strings.Trim(a, "-0123456789.") == "" {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !known[name] {
				t.Errorf("%s: imagescope %s: flag %s is not in '%s --help'", c.where, strings.Join(c.args, " "), a, strings.Join(cmd, " "))
			}
		}
		line := strings.Join(c.args, " ")
		if strings.Contains(line, "testdata/") && !strings.ContainsAny(line, "~<…") && !strings.Contains(line, "...") {
			env := map[string]string{"IMAGESCOPE_HOME": t.TempDir()}
			code, out, errOut := runCmd(t, env, c.args...)
			if code != 0 {
				t.Errorf("%s: imagescope %s: exit %d\n%s%s", c.where, line, code, out, errOut)
			}
			ran++
		}
	}
	if ran == 0 {
		t.Error("no doc command ran on testdata")
	}
	t.Logf("%d command lines checked, %d run", len(cmds), ran)
}

// TestIndexQueueFlagsNeedQueue: the queue-mode flags that 'index --help'
// lists are refused without --queue.
func TestIndexQueueFlagsNeedQueue(t *testing.T) {
	gal := testutil.CLIP(t, "images")
	for _, f := range []string{"--weaviate=http://127.0.0.1:1", "--status", "--job=x", "--collection=C", "--wait"} {
		code, _, errOut := runCmd(t, map[string]string{"IMAGESCOPE_HOME": t.TempDir()}, "index", "--gallery", gal, f)
		if code != 2 || !strings.Contains(errOut, "needs --queue") {
			t.Errorf("index %s without --queue: exit %d, %q", f, code, errOut)
		}
	}
	code, out, _ := runCmd(t, nil, "index", "--help")
	for _, f := range []string{"-queue", "-weaviate", "-collection", "-job", "-status", "-wait"} {
		if code != 0 || !strings.Contains(out, "  "+f+" ") && !strings.Contains(out, "  "+f+"\n") {
			t.Errorf("index --help does not list %s", f)
		}
	}
}

// snakeKeys reports the object keys of a JSON value that are not snake_case.
func snakeKeys(v any, bad map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if !regexp.MustCompile(`^[a-z0-9_@./-]+$`).MatchString(k) {
				bad[k] = true
			}
			snakeKeys(e, bad)
		}
	case []any:
		for _, e := range x {
			snakeKeys(e, bad)
		}
	}
}

// TestDBInfoJSONAndLinkFailures: a gallery's dangling symlink and symlink
// loop are reported like any unreadable file, in db info --failures and in
// db info --json, whose keys (like every JSON output's) are snake_case.
func TestDBInfoJSONAndLinkFailures(t *testing.T) {
	home := t.TempDir()
	gal := filepath.Join(t.TempDir(), "photos")
	os.MkdirAll(gal, 0o755)
	b, err := os.ReadFile(testutil.CLIP(t, "images", "square_224x224.png"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(gal, "a.png"), b, 0o644)
	os.Symlink(filepath.Join(gal, "gone.png"), filepath.Join(gal, "dangling.png"))
	os.Symlink("loop.jpg", filepath.Join(gal, "loop.jpg"))
	env := map[string]string{"IMAGESCOPE_HOME": home}
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	if code, out, errOut := runCmd(t, env, "index", "--gallery", gal, "--clip", model, "--threads", "1"); code != 0 {
		t.Fatalf("index: exit %d\n%s%s", code, out, errOut)
	}
	db, err := filepath.Glob(filepath.Join(home, "db", "folder_photos_*.db"))
	if err != nil || len(db) != 1 {
		t.Fatalf("db %v %v", db, err)
	}
	code, out, errOut := runCmd(t, env, "db", "info", "--db", db[0], "--failures")
	if code != 0 || !strings.Contains(out+errOut, "dangling.png") || !strings.Contains(out+errOut, "loop.jpg") {
		t.Errorf("db info --failures: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"db", "info", "--db", db[0], "--json"}, {"db", "info", "--json"}, {"cache", "stats", "--json"}} {
		code, out, errOut := runCmd(t, env, args...)
		if code != 0 {
			t.Errorf("%v: exit %d %s", args, code, errOut)
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
			continue
		}
		bad := map[string]bool{}
		snakeKeys(v, bad)
		if len(bad) > 0 {
			t.Errorf("%v: keys not snake_case: %v", args, bad)
		}
		if args[0] == "db" && len(args) == 5 && (!strings.Contains(out, `"failures"`) || !strings.Contains(out, "loop.jpg")) {
			t.Errorf("db info --json lacks the failures:\n%s", out)
		}
	}
}
