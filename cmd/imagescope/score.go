package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/metrics"
)

// rankingFilesFlag collects a repeatable string flag.
type rankingFilesFlag []string

func (s *rankingFilesFlag) String() string { return strings.Join(*s, ",") }
func (s *rankingFilesFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// kValuesFlag is a comma-separated list of positive integers ("1,5,10").
type kValuesFlag []int

func (s *kValuesFlag) String() string {
	var parts []string
	for _, v := range *s {
		parts = append(parts, strconv.Itoa(v))
	}
	return strings.Join(parts, ",")
}

func (s *kValuesFlag) Set(v string) error {
	*s = nil
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer", f)
		}
		*s = append(*s, n)
	}
	return nil
}

// dataFlag registers --data, defaulting to $IMAGESCOPE_DATA.
func benchmarkDataFlag(e *env, fs interface {
	StringVar(*string, string, string, string)
}) *string {
	p := new(string)
	fs.StringVar(p, "data", e.getenv("IMAGESCOPE_DATA"),
		"data root holding the dataset folders (CIRR/, CIRCO/, ...), or the dataset's own folder (default $IMAGESCOPE_DATA)")
	return p
}

const benchmarkNameHelp = "benchmark: CIRR, CIRCO, FashionIQ-dress, FashionIQ-shirt, FashionIQ-toptee, Flickr30K, MSCOCO, VisDial (case-insensitive)"

// runScore implements 'imagescope score'.
func runScore(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "score", "--dataset NAME --data DIR [--split SPLIT] --ranking FILE [flags]", `
Compute a benchmark's official metrics for a ranking file; no models and no
image files are needed, only the annotation and split files.

FILE is a JSON object mapping query id (string) to a ranked list of gallery
image names, best first (VisDial: to a list of 11 ranked lists, rounds
0..10, round 0 = the caption alone). The CIRR and CIRCO evaluation-server
submission formats are accepted too and checked by the servers' rules; for
CIRR pass --ranking twice to score a recall and a recall_subset file
together. --dataset FashionIQ scores the three categories at once from a
file mapping "dress", "shirt" and "toptee" to per-category rankings, or from
three files given as --ranking dress=FILE --ranking shirt=FILE --ranking
toptee=FILE (the rankings files of three eval runs), and reports their
average.

Prints one JSON object on stdout (values are fractions in [0,1]) and a
table on stderr. Queries without a ranking count as misses, with a warning.`)
	name := fs.String("dataset", "", benchmarkNameHelp+"; or FashionIQ for all three categories")
	data := benchmarkDataFlag(e, fs)
	split := fs.String("split", "", "split: val (or valid) or test; CIRR test means test1 (default: val; test for Flickr30K and MSCOCO, which have only test)")
	var rankings rankingFilesFlag
	fs.Var(&rankings, "ranking", "ranking or submission file (repeatable: a CIRR recall file plus a recall_subset file)")
	var opt metrics.Options
	fs.Var((*kValuesFlag)(&opt.RecallKs), "recall-k", "Recall@K values (default 1,2,3,5,10,20,50,100)")
	fs.Var((*kValuesFlag)(&opt.SubsetKs), "subset-k", "CIRR Recall_subset@K values (default 1,2,3)")
	fs.Var((*kValuesFlag)(&opt.MAPKs), "map-k", "CIRCO mAP@K values (default 5,10,25,50)")
	fs.Var((*kValuesFlag)(&opt.HitsKs), "hits-k", "VisDial Hits@K values (default 1,2,3,4,5,10,20,25,50)")
	fs.BoolVar(&opt.SoftRecall, "soft", false, "CIRR: also report soft recall (the dataset authors' target_soft variant) as soft_recall@K")
	fs.BoolVar(&opt.ReferenceCode, "reference-code", false,
		"also report the reference implementation's variants as refcode_*: CIRR recall with the reference image left in, VisDial hits over rounds 1..10 only")
	fs.IntVar(&opt.MaxQueries, "max-queries", 0, "score only the first N queries in file order (the reference implementation uses 2400 for CIRR val); 0 = all")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case *name == "":
		return usagef("--dataset is required")
	case *data == "":
		return usagef("--data is required (or set IMAGESCOPE_DATA)")
	case len(rankings) == 0:
		return usagef("--ranking is required")
	case opt.MaxQueries < 0:
		return usagef("--max-queries must be >= 0")
	}
	rep, err := app.Score(ctx, app.ScoreSpec{Dataset: *name, Data: *data, Split: *split, Files: rankings, Options: opt,
		Scored: func(rep *metrics.Report, file string) { warnUnranked(e, rep, file) }})
	if err != nil {
		return err
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if _, err := fmt.Fprintf(e.stdout, "%s\n", b); err != nil {
		return err
	}
	return rep.WriteTable(e.stderr)
}

func warnUnranked(e *env, rep *metrics.Report, file string) {
	if rep.Missing > 0 {
		fmt.Fprintf(e.stderr, "imagescope score: warning: %d of %d %s %s queries have no ranking in %s; counted as misses\n",
			rep.Missing, rep.Queries, rep.Dataset, rep.Split, file)
	}
}
