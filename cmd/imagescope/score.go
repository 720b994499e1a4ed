package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/dataset"
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
	var rep *metrics.Report
	var err error
	if strings.EqualFold(*name, "fashioniq") {
		rep, err = scoreFashionIQ(ctx, e, *data, *split, rankings, opt)
	} else {
		rep, err = scoreOne(ctx, e, *name, *data, *split, rankings, opt)
	}
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

func scoreOne(ctx context.Context, e *env, name, data, split string, files []string, opt metrics.Options) (*metrics.Report, error) {
	if _, _, err := dataset.Canonical(name, split); err != nil {
		return nil, usagef("%v", err)
	}
	ds, err := dataset.Load(ctx, name, data, split)
	if err != nil {
		return nil, err
	}
	var parsed []*metrics.RankingFile
	for _, f := range files {
		rf, err := metrics.ReadRankingFile(f, ds)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, rf)
	}
	r, err := metrics.CombineRankingFiles(parsed)
	if err != nil {
		return nil, err
	}
	rep, err := metrics.Score(ds, r, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(files, ", "), err)
	}
	warnUnranked(e, rep, strings.Join(files, ", "))
	return rep, nil
}

func warnUnranked(e *env, rep *metrics.Report, file string) {
	if rep.Missing > 0 {
		fmt.Fprintf(e.stderr, "imagescope score: warning: %d of %d %s %s queries have no ranking in %s; counted as misses\n",
			rep.Missing, rep.Queries, rep.Dataset, rep.Split, file)
	}
}

// scoreFashionIQ scores the three FashionIQ categories from one file
// {"dress": {...}, "shirt": {...}, "toptee": {...}} and averages them.
func scoreFashionIQ(ctx context.Context, e *env, data, split string, files []string, opt metrics.Options) (*metrics.Report, error) {
	cats := []string{"dress", "shirt", "toptee"}
	byCat := map[string][]byte{}
	pathOf := map[string]string{}
	if len(files) == 3 && strings.Contains(files[0], "=") {
		// One file per category: --ranking dress=FILE ...
		for _, f := range files {
			c, p, ok := strings.Cut(f, "=")
			if !ok || !slices.Contains(cats, c) {
				return nil, usagef("--dataset FashionIQ: --ranking %q: want CATEGORY=FILE with CATEGORY dress, shirt or toptee", f)
			}
			if _, dup := pathOf[c]; dup {
				return nil, usagef("--dataset FashionIQ: %s given twice", c)
			}
			pathOf[c] = p
		}
		for _, c := range cats {
			raw, err := os.ReadFile(pathOf[c])
			if err != nil {
				return nil, fmt.Errorf("read ranking file: %w", err)
			}
			byCat[c] = raw
		}
	} else {
		if len(files) != 1 {
			return nil, usagef("--dataset FashionIQ takes one --ranking file mapping dress, shirt and toptee to rankings, or three: --ranking dress=FILE --ranking shirt=FILE --ranking toptee=FILE")
		}
		path := files[0]
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read ranking file: %w", err)
		}
		keys, vals, lines, err := dataset.SplitJSONObject(path, raw)
		if err != nil {
			return nil, err
		}
		for i, k := range keys {
			if !slices.Contains(cats, k) {
				return nil, &dataset.FormatError{File: path, Line: lines[i], Record: fmt.Sprintf("key %q", k), Msg: "want one of dress, shirt, toptee"}
			}
			byCat[k], pathOf[k] = vals[i], path+"#"+k
		}
		for _, c := range cats {
			if _, ok := byCat[c]; !ok {
				return nil, &dataset.FormatError{File: path, Field: c, Msg: "missing category"}
			}
		}
	}
	var reps []*metrics.Report
	for _, c := range cats {
		ds, err := dataset.Load(ctx, "FashionIQ-"+c, data, split)
		if err != nil {
			return nil, err
		}
		rf, err := metrics.ParseRankingFile(pathOf[c], byCat[c], ds)
		if err != nil {
			return nil, err
		}
		rep, err := metrics.Score(ds, rf.Rankings, opt)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", pathOf[c], c, err)
		}
		warnUnranked(e, rep, filepath.Base(pathOf[c]))
		reps = append(reps, rep)
	}
	return metrics.Average("FashionIQ", reps[0].Split, reps)
}
