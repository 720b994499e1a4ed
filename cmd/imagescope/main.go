// Command imagescope is language-guided image retrieval in which several
// models reason together: text-to-image, composed (reference image + change)
// and chat-based retrieval through one three-stage pipeline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/progress"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env carries what every command needs: standard streams and the logger.
// Commands must not touch os.Stdout/os.Stderr directly so tests can run them
// in-process.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	// getenv reads an environment variable (os.Getenv outside tests).
	getenv func(string) string
}

// command is one subcommand of the binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists every subcommand; each lives in its own file.
func commands() []command {
	return []command{
		{"index", "caption and embed a gallery (folder or benchmark split) into an image DB", runIndex},
		{"search", "run one query through the configured stages and print the ranking", runSearch},
		{"eval", "run a benchmark end to end: stages, metrics, submissions, run folder", runEval},
		{"score", "compute official metrics for a ranking file (no models needed)", runScore},
		{"queries", "print a benchmark split's queries as JSON lines", runQueries},
		{"embed", "print CLIP embeddings of images and texts as JSON lines", runEmbed},
		{"serve", "HTTP JSON API and web UI over an indexed gallery", runServe},
		{"db", "inspect, import or export an image DB", runDB},
		{"cache", "inspect or clear the model answer cache", runCache},
		{"worker", "process distributed indexing work from a NATS JetStream queue", runWorker},
	}
}

// usageError marks errors caused by wrong command-line use (exit code 2).
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	level := new(slog.LevelVar)
	if v := getenv("IMAGESCOPE_LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			fmt.Fprintf(stderr, "imagescope: IMAGESCOPE_LOG_LEVEL=%q: %v\n", v, err)
			return exitUsage
		}
	}
	// Log lines and messages go through one console so that they never
	// break a progress bar drawn on the terminal.
	console := progress.NewConsole(stderr)
	e := &env{
		stdin:  stdin,
		stdout: stdout,
		stderr: console,
		log:    slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: level})),
		getenv: getenv,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			args = []string{args[1], "--help"}
		} else {
			if len(args) == 0 {
				printUsage(stderr)
				return exitUsage
			}
			printUsage(stdout)
			return exitOK
		}
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, "imagescope", version())
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		}
		var ue *usageError
		var ae *app.ArgError
		if errors.As(err, &ue) || errors.As(err, &ae) || errors.Is(err, dataset.ErrUnknownName) || errors.Is(err, app.ErrNoWeaviate) {
			fmt.Fprintf(stderr, "imagescope %s: %v\nRun 'imagescope %s --help' for usage.\n", c.name, err, c.name)
			return exitUsage
		}
		fmt.Fprintf(stderr, "imagescope %s: %v\n", c.name, err)
		return exitError
	}
	fmt.Fprintf(stderr, "imagescope: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `imagescope - language-guided image retrieval with collective model reasoning

Usage:
  imagescope <command> [flags]

Commands:
`)
	cs := commands()
	for _, c := range cs {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'imagescope <command> --help' for a command's flags.
Where things live:
  image DBs       $IMAGESCOPE_HOME/db/ (default ~/.cache/imagescope/db/; see 'imagescope db info')
  answer cache    $IMAGESCOPE_HOME/cache/answers.db
  CLIP models     the HuggingFace cache, $HF_HOME/hub (default ~/.cache/huggingface/hub),
                  downloaded once; --clip DIR uses a local checkpoint folder instead
  run folders     runs/ under the current folder ('imagescope eval')
Environment: IMAGESCOPE_HOME, IMAGESCOPE_CONFIG (config file), IMAGESCOPE_LOG_LEVEL
(debug, info, warn, error), HF_HOME, HF_HUB_OFFLINE=1 (use downloaded models only),
HF_ENDPOINT (a hub mirror), HF_TOKEN (gated models).
`)
}

// newFlagSet returns a FlagSet for a subcommand. --help prints the usage
// line, the description and the flags to stdout; a flag error prints the
// error and the usage to stderr.
func newFlagSet(e *env, name, usage, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	errOut := &trackingWriter{w: e.stderr}
	fs.SetOutput(errOut)
	fs.Usage = func() {
		// The flag package writes the error message before calling Usage,
		// so nothing written yet means help was asked for.
		w := e.stdout
		if errOut.wrote {
			w = e.stderr
		}
		fmt.Fprintf(w, "Usage: imagescope %s %s\n\n%s\n\nFlags:\n", name, usage, strings.TrimSpace(description))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(errOut)
	}
	return fs
}

// trackingWriter remembers whether anything was written through it.
type trackingWriter struct {
	w     io.Writer
	wrote bool
}

func (t *trackingWriter) Write(p []byte) (int, error) {
	t.wrote = true
	return t.w.Write(p)
}

// parseFlags parses args; a parse error becomes a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	return nil
}
