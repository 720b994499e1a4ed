package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/imagescope/imagescope/dataset"
)

// Format is the kind of a ranking file.
type Format string

const (
	// FormatRanking is imagescope's own: a JSON object mapping query id to
	// a ranked list of gallery names (VisDial: to 11 ranked lists, rounds
	// 0..10). Queries may be missing (they count as misses).
	FormatRanking Format = "ranking"
	// FormatCIRR is the CIRR evaluation server's submission file.
	FormatCIRR Format = "cirr-submission"
	// FormatCIRCO is the CIRCO evaluation server's submission file.
	FormatCIRCO Format = "circo-submission"
)

// RankingFile is one parsed ranking file.
type RankingFile struct {
	Path   string
	Format Format
	// Metric is the CIRR submission's metric ("recall" or "recall_subset").
	Metric   string
	Rankings Rankings
}

// ReadRankingFile reads and validates a ranking file for ds, detecting its
// format: a CIRR submission has "version" and "metric" keys; a CIRCO
// submission lists image ids (numbers or digit strings) instead of names.
// Errors are *dataset.FormatError naming the file, line, query and item.
func ReadRankingFile(path string, ds *dataset.Dataset) (*RankingFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ranking file %s: not found: %w", path, err)
		}
		return nil, fmt.Errorf("read ranking file %s: %w", path, err)
	}
	return ParseRankingFile(path, data, ds)
}

// ParseRankingFile is ReadRankingFile on data read from path.
func ParseRankingFile(path string, data []byte, ds *dataset.Dataset) (*RankingFile, error) {
	keys, vals, lines, err := dataset.SplitJSONObject(path, data)
	if err != nil {
		return nil, err
	}
	if slices.Contains(keys, "version") || slices.Contains(keys, "metric") {
		return parseCIRR(path, keys, vals, lines, ds)
	}
	if ds.Name == dataset.CIRCO && looksLikeIDs(vals) {
		return parseCIRCO(path, keys, vals, lines, ds)
	}
	return parseRanking(path, keys, vals, lines, ds)
}

// fileErr builds the error for query key at line.
func fileErr(path string, line int, key, format string, a ...any) error {
	rec := ""
	if key != "" {
		rec = fmt.Sprintf("query %q", key)
	}
	return &dataset.FormatError{File: path, Line: line, Record: rec, Msg: fmt.Sprintf(format, a...)}
}

// listErr converts a Validate error into a FormatError at the query's line.
func listErr(path string, keys []string, lines []int, err error) error {
	var le *ListError
	if !errors.As(err, &le) {
		return &dataset.FormatError{File: path, Msg: err.Error()}
	}
	line := 0
	if i := slices.Index(keys, le.Query); i >= 0 {
		line = lines[i]
	}
	msg := le.Msg
	if le.Item >= 0 {
		msg = fmt.Sprintf("item %d: %s", le.Item, msg)
	}
	if le.Round >= 0 {
		msg = fmt.Sprintf("round %d: %s", le.Round, msg)
	}
	return fileErr(path, line, le.Query, "%s", msg)
}

// stringList decodes an array of strings, naming the bad item.
func stringList(raw json.RawMessage) ([]string, error) {
	var items []json.RawMessage
	if dataset.Kind(raw) != "array" || json.Unmarshal(raw, &items) != nil {
		return nil, fmt.Errorf("want an array of image names, got %s", dataset.Kind(raw))
	}
	out := make([]string, len(items))
	for i, it := range items {
		if dataset.Kind(it) != "string" || json.Unmarshal(it, &out[i]) != nil {
			return nil, fmt.Errorf("item %d: want an image name (string), got %s", i, dataset.Kind(it))
		}
	}
	return out, nil
}

func parseRanking(path string, keys []string, vals []json.RawMessage, lines []int, ds *dataset.Dataset) (*RankingFile, error) {
	rf := &RankingFile{Path: path, Format: FormatRanking}
	chat := ds.Task == dataset.Chat
	if chat {
		rf.Rankings.Rounds = make(map[string][][]string, len(keys))
	} else {
		rf.Rankings.Lists = make(map[string][]string, len(keys))
	}
	for i, k := range keys {
		if !chat {
			l, err := stringList(vals[i])
			if err != nil {
				return nil, fileErr(path, lines[i], k, "%v", err)
			}
			rf.Rankings.Lists[k] = l
			continue
		}
		var rounds []json.RawMessage
		if dataset.Kind(vals[i]) != "array" || json.Unmarshal(vals[i], &rounds) != nil {
			return nil, fileErr(path, lines[i], k, "want an array of %d ranked lists (rounds 0..10), got %s", dataset.VisDialRounds, dataset.Kind(vals[i]))
		}
		if len(rounds) != dataset.VisDialRounds {
			return nil, fileErr(path, lines[i], k, "want %d ranked lists (rounds 0..10), got %d", dataset.VisDialRounds, len(rounds))
		}
		ls := make([][]string, len(rounds))
		for j, raw := range rounds {
			l, err := stringList(raw)
			if err != nil {
				return nil, fileErr(path, lines[i], k, "round %d: %v", j, err)
			}
			ls[j] = l
		}
		rf.Rankings.Rounds[k] = ls
	}
	if err := Validate(ds, rf.Rankings); err != nil {
		return nil, listErr(path, keys, lines, err)
	}
	return rf, nil
}

// looksLikeIDs reports whether some list holds a number or a digit-only
// string (a CIRCO submission) rather than file names.
func looksLikeIDs(vals []json.RawMessage) bool {
	for _, v := range vals {
		var items []json.RawMessage
		if json.Unmarshal(v, &items) != nil {
			continue
		}
		for _, it := range items {
			switch dataset.Kind(it) {
			case "number":
				return true
			case "string":
				var s string
				_ = json.Unmarshal(it, &s)
				_, ok := parseCIRCOID(s)
				return ok
			}
		}
	}
	return false
}
