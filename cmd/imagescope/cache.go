package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
)

// runCache implements 'imagescope cache'.
func runCache(ctx context.Context, e *env, args []string) error {
	const usage = `Usage: imagescope cache <stats|clear|check> [flags]

  stats  [--json]       entries and size per role and model
  clear  [--role ROLE]  delete every cached answer (or one role's)
  check                 verify the database and every entry's checksum

The cache file is cache.path in the config (default $IMAGESCOPE_HOME/cache/answers.db);
--cache PATH overrides it.`
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stdout, usage)
		if len(args) == 0 {
			return usagef("missing subcommand: stats, clear or check")
		}
		return nil
	}
	sub := args[0]
	fs := newFlagSet(e, "cache "+sub, "[flags]", "Inspect or clear the model answer cache.")
	cfgPath := fs.String("config", "", "config file (default $IMAGESCOPE_CONFIG)")
	cachePath := fs.String("cache", "", "answer cache file (overrides cache.path)")
	var asJSON *bool
	var role *string
	switch sub {
	case "stats":
		asJSON = fs.Bool("json", false, "print JSON")
	case "clear":
		role = fs.String("role", "", "clear only this role's answers (captioner, reasoner, proposer, verifier, evaluator, embedder)")
	case "check":
	default:
		return usagef("unknown subcommand %q: want stats, clear or check", sub)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %v", fs.Args())
	}
	path := *cachePath
	if path == "" {
		cfg, err := config.Load(*cfgPath, e.getenv)
		if err != nil {
			return err
		}
		path = cfg.Cache.Path
	}
	if role != nil && *role != "" {
		if _, err := modelrole.Parse(*role); err != nil {
			return usagef("--role: %v", err)
		}
	}
	if _, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			if sub == "stats" && !*asJSON {
				fmt.Fprintf(e.stdout, "answer cache %s: empty (no file yet)\n", path)
				return nil
			}
			if sub != "stats" {
				fmt.Fprintf(e.stdout, "answer cache %s: nothing to do (no file)\n", path)
				return nil
			}
		} else {
			return fmt.Errorf("answer cache %s: %w", path, err)
		}
	}
	cache, err := llm.OpenCache(path)
	if err != nil {
		return err
	}
	defer cache.Close()
	switch sub {
	case "stats":
		st, err := cache.Stats(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		fmt.Fprintf(e.stdout, "answer cache %s: %d entries, %s of answers, %s on disk\n", st.Path, st.Entries, byteSize(st.Bytes), byteSize(st.FileBytes))
		if len(st.Groups) > 0 {
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROLE\tMODEL\tKIND\tENTRIES\tSIZE\tNEWEST")
			for _, g := range st.Groups {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", g.Role, g.Model, g.Kind, g.Entries, byteSize(g.Bytes), g.Newest.Format("2006-01-02 15:04"))
			}
			tw.Flush()
		}
	case "clear":
		n, err := cache.Clear(ctx, *role)
		if err != nil {
			return err
		}
		what := "answers"
		if *role != "" {
			what = *role + " answers"
		}
		fmt.Fprintf(e.stdout, "answer cache %s: deleted %d %s\n", path, n, what)
	case "check":
		n, err := cache.Check(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "answer cache %s: ok, %d entries verified\n", path, n)
	}
	return nil
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f TiB", f/unit)
}
