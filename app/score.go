package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/metrics"
)

// ArgError is an error in what was asked for (a wrong benchmark name or a
// malformed argument) rather than a failure doing it: the commands report
// it as wrong use.
type ArgError struct{ Msg string }

func (e *ArgError) Error() string { return e.Msg }

func argErrorf(format string, a ...any) error { return &ArgError{fmt.Sprintf(format, a...)} }

// ScoreSpec names the rankings to score: a benchmark split and its
// ranking or submission files.
type ScoreSpec struct {
	// Dataset is a benchmark name, or FashionIQ for its three categories
	// at once.
	Dataset, Data, Split string
	// Files are the ranking files: one, or a CIRR recall file and a
	// recall_subset file; for FashionIQ one file mapping dress, shirt and
	// toptee to rankings, or three given as CATEGORY=FILE.
	Files   []string
	Options metrics.Options
	// Scored, when set, is called with each file's report as it is made
	// (one for most benchmarks, one per category for FashionIQ) and the
	// file's name for messages, e.g. about queries without a ranking.
	Scored func(rep *metrics.Report, file string)
}

// Score computes a benchmark's official metrics for ranking files; no
// models and no image files are needed.
func Score(ctx context.Context, spec ScoreSpec) (*metrics.Report, error) {
	if spec.Scored == nil {
		spec.Scored = func(*metrics.Report, string) {}
	}
	if strings.EqualFold(spec.Dataset, "fashioniq") {
		return scoreFashionIQ(ctx, spec)
	}
	if _, _, err := dataset.Canonical(spec.Dataset, spec.Split); err != nil {
		return nil, &ArgError{err.Error()}
	}
	ds, err := dataset.Load(ctx, spec.Dataset, spec.Data, spec.Split)
	if err != nil {
		return nil, err
	}
	var parsed []*metrics.RankingFile
	for _, f := range spec.Files {
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
	files := strings.Join(spec.Files, ", ")
	rep, err := metrics.Score(ds, r, spec.Options)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", files, err)
	}
	spec.Scored(rep, files)
	return rep, nil
}

// fashionIQCategories are FashionIQ's categories, in report order.
var fashionIQCategories = []string{"dress", "shirt", "toptee"}

// scoreFashionIQ scores the three FashionIQ categories from one file
// {"dress": {...}, "shirt": {...}, "toptee": {...}} or three
// CATEGORY=FILE files, and averages them.
func scoreFashionIQ(ctx context.Context, spec ScoreSpec) (*metrics.Report, error) {
	cats := fashionIQCategories
	byCat, pathOf, err := fashionIQRankings(spec.Files)
	if err != nil {
		return nil, err
	}
	var reps []*metrics.Report
	for _, c := range cats {
		ds, err := dataset.Load(ctx, "FashionIQ-"+c, spec.Data, spec.Split)
		if err != nil {
			return nil, err
		}
		rf, err := metrics.ParseRankingFile(pathOf[c], byCat[c], ds)
		if err != nil {
			return nil, err
		}
		rep, err := metrics.Score(ds, rf.Rankings, spec.Options)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", pathOf[c], c, err)
		}
		spec.Scored(rep, filepath.Base(pathOf[c]))
		reps = append(reps, rep)
	}
	return metrics.Average("FashionIQ", reps[0].Split, reps)
}

// fashionIQRankings reads the per-category rankings (raw JSON) and names
// their source (a file, or file#category).
func fashionIQRankings(files []string) (byCat map[string][]byte, pathOf map[string]string, err error) {
	cats := fashionIQCategories
	byCat, pathOf = map[string][]byte{}, map[string]string{}
	if len(files) == 3 && strings.Contains(files[0], "=") {
		// One file per category: --ranking dress=FILE ...
		for _, f := range files {
			c, p, ok := strings.Cut(f, "=")
			if !ok || !slices.Contains(cats, c) {
				return nil, nil, argErrorf("--dataset FashionIQ: --ranking %q: want CATEGORY=FILE with CATEGORY dress, shirt or toptee", f)
			}
			if _, dup := pathOf[c]; dup {
				return nil, nil, argErrorf("--dataset FashionIQ: %s given twice", c)
			}
			pathOf[c] = p
		}
		for _, c := range cats {
			raw, err := os.ReadFile(pathOf[c])
			if err != nil {
				return nil, nil, fmt.Errorf("read ranking file: %w", err)
			}
			byCat[c] = raw
		}
		return byCat, pathOf, nil
	}
	if len(files) != 1 {
		return nil, nil, argErrorf("--dataset FashionIQ takes one --ranking file mapping dress, shirt and toptee to rankings, or three: --ranking dress=FILE --ranking shirt=FILE --ranking toptee=FILE")
	}
	path := files[0]
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read ranking file: %w", err)
	}
	keys, vals, lines, err := dataset.SplitJSONObject(path, raw)
	if err != nil {
		return nil, nil, err
	}
	for i, k := range keys {
		if !slices.Contains(cats, k) {
			return nil, nil, &dataset.FormatError{File: path, Line: lines[i], Record: fmt.Sprintf("key %q", k), Msg: "want one of dress, shirt, toptee"}
		}
		byCat[k], pathOf[k] = vals[i], path+"#"+k
	}
	for _, c := range cats {
		if _, ok := byCat[c]; !ok {
			return nil, nil, &dataset.FormatError{File: path, Field: c, Msg: "missing category"}
		}
	}
	return byCat, pathOf, nil
}
