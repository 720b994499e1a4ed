package metrics

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/dataset"
)

// CIRR evaluation-server constants.
const (
	CIRRVersion      = "rc2"
	CIRRRecall       = "recall"
	CIRRRecallSubset = "recall_subset"
	// CIRRRecallN and CIRRSubsetN are the list lengths the server takes.
	CIRRRecallN = 50
	CIRRSubsetN = 3
	// CIRCON is the CIRCO server's list length (at most).
	CIRCON = 50
)

// cirrLen is the exact list length the CIRR server wants for a query.
func cirrLen(ds *dataset.Dataset, q dataset.Query, metric string) int {
	if metric == CIRRRecallSubset {
		return min(CIRRSubsetN, len(q.Subset))
	}
	return min(CIRRRecallN, len(ds.Gallery)-1)
}

// CIRRSubmissionLists prepares the CIRR server's lists from full rankings:
// for "recall" the reference image is removed and the top 50 kept; for
// "recall_subset" the ranking is restricted to the query's five subset
// candidates and the top 3 kept. Every query of ds needs a ranking.
func CIRRSubmissionLists(ds *dataset.Dataset, lists map[string][]string, metric string) (map[string][]string, error) {
	if metric != CIRRRecall && metric != CIRRRecallSubset {
		return nil, fmt.Errorf("CIRR submission: unknown metric %q (want %q or %q)", metric, CIRRRecall, CIRRRecallSubset)
	}
	out := make(map[string][]string, len(ds.Queries))
	for _, q := range ds.Queries {
		l, ok := lists[q.ID]
		if !ok {
			return nil, fmt.Errorf("CIRR submission: no ranking for pairid %s", q.ID)
		}
		if metric == CIRRRecallSubset {
			l = restrict(l, q.Subset)
		} else {
			l = without(l, q.Reference)
		}
		n := cirrLen(ds, q, metric)
		if len(l) < n {
			return nil, fmt.Errorf("CIRR submission: pairid %s: %s needs %d images, the ranking gives %d", q.ID, metric, n, len(l))
		}
		out[q.ID] = slices.Clone(l[:n])
	}
	return out, nil
}

// WriteCIRRSubmission writes a CIRR evaluation-server file:
// {"version": "rc2", "metric": metric, "<pairid>": [top n names], ...},
// pairids in numeric order. Lists are cut to n; a pairid that is not an
// integer or a list repeating a name is an error.
func WriteCIRRSubmission(w io.Writer, metric string, lists map[string][]string, n int) error {
	if metric != CIRRRecall && metric != CIRRRecallSubset {
		return fmt.Errorf("CIRR submission: unknown metric %q (want %q or %q)", metric, CIRRRecall, CIRRRecallSubset)
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "{\"version\": %q, \"metric\": %q", CIRRVersion, metric)
	for _, id := range sortedKeys(lists) {
		if _, err := strconv.ParseInt(id, 10, 64); err != nil {
			return fmt.Errorf("CIRR submission: pairid %q is not an integer", id)
		}
		l := lists[id]
		if err := noDuplicates(l); err != nil {
			return fmt.Errorf("CIRR submission: pairid %s: %w", id, err)
		}
		b, err := json.Marshal(l[:min(n, len(l))])
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, ",\n %q: %s", id, b)
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

// WriteCIRCOSubmission writes a CIRCO evaluation-server file:
// {"<id>": ["9761", ...], ...}: query ids in numeric order, each list cut
// to n and written as unpadded COCO id strings (gallery names must be
// 12-digit ids + ".jpg").
func WriteCIRCOSubmission(w io.Writer, lists map[string][]string, n int) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("{")
	for i, id := range sortedKeys(lists) {
		if _, err := strconv.ParseInt(id, 10, 64); err != nil {
			return fmt.Errorf("CIRCO submission: query id %q is not an integer", id)
		}
		l := lists[id]
		if err := noDuplicates(l); err != nil {
			return fmt.Errorf("CIRCO submission: query %s: %w", id, err)
		}
		l = l[:min(n, len(l))]
		ids := make([]string, len(l))
		for j, name := range l {
			cid, ok := dataset.COCOID(name)
			if !ok {
				return fmt.Errorf("CIRCO submission: query %s: item %d: %q is not a COCO image name (12 digits + .jpg)", id, j, name)
			}
			ids[j] = strconv.FormatInt(cid, 10)
		}
		b, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteString(",")
		}
		fmt.Fprintf(bw, "\n %q: %s", id, b)
	}
	bw.WriteString("\n}\n")
	return bw.Flush()
}

func noDuplicates(l []string) error {
	seen := make(map[string]int, len(l))
	for i, n := range l {
		if first, dup := seen[n]; dup {
			return fmt.Errorf("item %d: image %q already at item %d", i, n, first)
		}
		seen[n] = i
	}
	return nil
}

// parseCIRR reads a CIRR submission and applies the server's rules: version
// "rc2"; metric "recall" or "recall_subset"; the keys are exactly the
// split's pairids; recall lists hold exactly the top 50 (fewer only when
// the gallery is smaller) without the reference image; recall_subset lists
// hold exactly 3 of the query's subset candidates; no list repeats a name.
func parseCIRR(path string, keys []string, vals []json.RawMessage, lines []int, ds *dataset.Dataset) (*RankingFile, error) {
	if ds.Name != dataset.CIRR {
		return nil, fileErr(path, 0, "", "a CIRR submission file (it has \"version\"/\"metric\" keys) cannot score %s", ds.Name)
	}
	rf := &RankingFile{Path: path, Format: FormatCIRR}
	var version string
	lists := map[string][]string{}
	var listKeys []string
	var listLines []int
	for i, k := range keys {
		switch k {
		case "version", "metric":
			var s string
			if dataset.Kind(vals[i]) != "string" || json.Unmarshal(vals[i], &s) != nil {
				return nil, &dataset.FormatError{File: path, Line: lines[i], Field: k, Msg: "want a string, got " + dataset.Kind(vals[i])}
			}
			if k == "version" {
				version = s
			} else {
				rf.Metric = s
			}
		default:
			l, err := stringList(vals[i])
			if err != nil {
				return nil, fileErr(path, lines[i], k, "%v", err)
			}
			lists[k] = l
			listKeys = append(listKeys, k)
			listLines = append(listLines, lines[i])
		}
	}
	if !slices.Contains(keys, "version") {
		return nil, &dataset.FormatError{File: path, Field: "version", Msg: "missing (CIRR submissions carry \"version\": \"rc2\")"}
	}
	if version != CIRRVersion {
		return nil, &dataset.FormatError{File: path, Line: lines[slices.Index(keys, "version")], Field: "version", Msg: fmt.Sprintf("want %q, got %q", CIRRVersion, version)}
	}
	if !slices.Contains(keys, "metric") {
		return nil, &dataset.FormatError{File: path, Field: "metric", Msg: "missing (want \"recall\" or \"recall_subset\")"}
	}
	if rf.Metric != CIRRRecall && rf.Metric != CIRRRecallSubset {
		return nil, &dataset.FormatError{File: path, Line: lines[slices.Index(keys, "metric")], Field: "metric", Msg: fmt.Sprintf("want %q or %q, got %q", CIRRRecall, CIRRRecallSubset, rf.Metric)}
	}
	if rf.Metric == CIRRRecall {
		rf.Rankings.Lists = lists
	} else {
		rf.Rankings.Subset = lists
	}
	if err := Validate(ds, rf.Rankings); err != nil {
		return nil, listErr(path, listKeys, listLines, err)
	}
	if err := exactKeys(path, ds, lists, "pairid"); err != nil {
		return nil, err
	}
	for _, q := range ds.Queries {
		l := lists[q.ID]
		line := listLines[slices.Index(listKeys, q.ID)]
		if want := cirrLen(ds, q, rf.Metric); len(l) != want {
			return nil, fileErr(path, line, q.ID, "%s list has %d images, the server wants exactly %d", rf.Metric, len(l), want)
		}
		for j, name := range l {
			if name == q.Reference {
				return nil, fileErr(path, line, q.ID, "item %d: the reference image %q must not be listed", j, name)
			}
			if rf.Metric == CIRRRecallSubset && !slices.Contains(q.Subset, name) {
				return nil, fileErr(path, line, q.ID, "item %d: %q is not one of the query's subset candidates", j, name)
			}
		}
	}
	return rf, nil
}

// exactKeys checks that the file's query keys are exactly the split's ids.
func exactKeys(path string, ds *dataset.Dataset, lists map[string][]string, what string) error {
	var missing []string
	for _, q := range ds.Queries {
		if _, ok := lists[q.ID]; !ok {
			missing = append(missing, q.ID)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ex := missing[:min(5, len(missing))]
	more := ""
	if len(missing) > len(ex) {
		more = ", ..."
	}
	return fileErr(path, 0, "", "%d of the split's %d %ss missing (%s%s); the evaluation server needs every one",
		len(missing), len(ds.Queries), what, strings.Join(ex, ", "), more)
}

// parseCIRCOID applies the CIRCO server's integer cast to a string item:
// "9761" and "000000009761" are id 9761; "000000009761.jpg" is not an id.
func parseCIRCOID(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// circoLen is the exact list length the CIRCO test server takes: the top
// 50 (the whole gallery when it is smaller).
func circoLen(ds *dataset.Dataset) int {
	if n := len(ds.Gallery); n > 0 && !ds.GalleryUnlisted {
		return min(CIRCON, n)
	}
	return CIRCON
}

// parseCIRCO reads a CIRCO submission and applies the server's rules: the
// keys are exactly the split's query ids; each list holds image ids
// (integers, or strings the server's integer cast accepts), no id twice,
// exactly 50 per query on the test split (the test server's rule) and at
// most 50 on val (the official evaluation script scores shorter lists).
func parseCIRCO(path string, keys []string, vals []json.RawMessage, lines []int, ds *dataset.Dataset) (*RankingFile, error) {
	rf := &RankingFile{Path: path, Format: FormatCIRCO, Rankings: Rankings{Lists: map[string][]string{}}}
	for i, k := range keys {
		var items []json.RawMessage
		if dataset.Kind(vals[i]) != "array" || json.Unmarshal(vals[i], &items) != nil {
			return nil, fileErr(path, lines[i], k, "want an array of image ids, got %s", dataset.Kind(vals[i]))
		}
		if len(items) > CIRCON {
			return nil, fileErr(path, lines[i], k, "%d image ids, the server takes at most %d", len(items), CIRCON)
		}
		l := make([]string, len(items))
		for j, it := range items {
			var id int64
			ok := false
			switch dataset.Kind(it) {
			case "number":
				var f float64
				if json.Unmarshal(it, &f) == nil && f >= 0 && f == math.Trunc(f) && f < 1<<53 {
					id, ok = int64(f), true
				}
			case "string":
				var s string
				_ = json.Unmarshal(it, &s)
				id, ok = parseCIRCOID(s)
			}
			if !ok {
				return nil, fileErr(path, lines[i], k, "item %d: want a COCO image id (integer or digit string such as \"9761\"), got %s", j, strings.TrimSpace(string(it)))
			}
			l[j] = dataset.COCOName(id)
		}
		rf.Rankings.Lists[k] = l
	}
	if err := Validate(ds, rf.Rankings); err != nil {
		return nil, listErr(path, keys, lines, err)
	}
	if err := exactKeys(path, ds, rf.Rankings.Lists, "query id"); err != nil {
		return nil, err
	}
	if !ds.HasLabels() {
		want := circoLen(ds)
		for i, k := range keys {
			if n := len(rf.Rankings.Lists[k]); n != want {
				return nil, fileErr(path, lines[i], k, "%d image ids, the CIRCO test server takes exactly %d per query (the top %d, best first)", n, want, want)
			}
		}
	}
	return rf, nil
}

// CombineRankingFiles merges parsed files into one ranking set: at most
// one file may give full rankings (our format, a CIRR recall file or a
// CIRCO file) and at most one a CIRR recall_subset file.
func CombineRankingFiles(files []*RankingFile) (Rankings, error) {
	var out Rankings
	var full, subset string
	for _, f := range files {
		if f.Rankings.Lists != nil || f.Rankings.Rounds != nil {
			if full != "" {
				return Rankings{}, fmt.Errorf("%s and %s both give full rankings; pass one (plus at most one CIRR recall_subset file)", full, f.Path)
			}
			full = f.Path
			out.Lists, out.Rounds = f.Rankings.Lists, f.Rankings.Rounds
		}
		if f.Rankings.Subset != nil {
			if subset != "" {
				return Rankings{}, fmt.Errorf("%s and %s are both CIRR recall_subset files", subset, f.Path)
			}
			subset = f.Path
			out.Subset = f.Rankings.Subset
		}
	}
	return out, nil
}
