// Package metrics computes the benchmarks' official retrieval metrics from
// ranked lists of gallery names: Recall@K, CIRR Recall_subset@K, CIRCO
// mAP@K, FashionIQ per-category and averaged Recall@K and VisDial
// cumulative Hits@K per dialogue round. Values are fractions in [0,1].
//
// The definitions follow the official evaluation code (docs/benchmarks.md);
// where the reference ImageScope implementation computes something else,
// that variant is available as an option and reported under its own,
// labelled key.
package metrics

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/imagescope/imagescope/dataset"
)

// Rankings holds the ranked lists to score, keyed by query id.
type Rankings struct {
	// Lists maps a query id to its ranking of gallery names, best first.
	// Lists may be truncated; a target not in the list is a miss.
	Lists map[string][]string
	// Rounds maps a VisDial dialogue id to its 11 rankings, rounds 0..10
	// (round 0: the caption alone).
	Rounds map[string][][]string
	// Subset maps a CIRR pairid to its Recall_subset ranking when that is
	// given separately (the server's recall_subset file); otherwise the
	// subset ranking is Lists restricted to the query's subset candidates.
	Subset map[string][]string
}

// Default K values.
var (
	// DefaultRecallKs is the Recall@K set reported for every dataset with
	// a single target (it contains every dataset's official K).
	DefaultRecallKs = []int{1, 2, 3, 5, 10, 20, 50, 100}
	// CIRCORecallKs adds 25 for CIRCO, whose official evaluation prints
	// Recall@{5,10,25,50} beside mAP@K.
	CIRCORecallKs = []int{1, 2, 3, 5, 10, 20, 25, 50, 100}
	// DefaultSubsetKs: CIRR Recall_subset@K.
	DefaultSubsetKs = []int{1, 2, 3}
	// DefaultMAPKs: CIRCO mAP@K.
	DefaultMAPKs = []int{5, 10, 25, 50}
	// DefaultHitsKs: VisDial Hits@K.
	DefaultHitsKs = []int{1, 2, 3, 4, 5, 10, 20, 25, 50}
)

// Options selects K values and the reference-implementation variants.
// The zero value gives the official metrics with the default K sets.
type Options struct {
	RecallKs, SubsetKs, MAPKs, HitsKs []int
	// ReferenceCode also reports the reference ImageScope implementation's
	// variants, under keys prefixed "refcode_": CIRR Recall@K with the
	// reference image left in the ranking; VisDial Hits@K cumulative over
	// rounds 1..10 only (a list of 10 values).
	ReferenceCode bool
	// SoftRecall also reports CIRR's soft recall (the dataset authors'
	// validation variant: the best target_soft value, floored at 0, among
	// the top K, reference removed) as soft_recall@K. Val split only.
	SoftRecall bool
	// MaxQueries, when > 0, scores only the first MaxQueries queries in
	// file order (the reference implementation scores the first 2,400 CIRR
	// val queries). Rankings for later queries are ignored.
	MaxQueries int
}

func orDefault(ks, def []int) []int {
	if len(ks) == 0 {
		return def
	}
	return ks
}

// Validate checks a ranking set against a dataset: every query id is one
// of the dataset's, every name could be a gallery image, no list repeats
// a name, and VisDial has exactly 11 rankings per dialogue. The error names
// the query and the item.
func Validate(ds *dataset.Dataset, r Rankings) error {
	ids := make(map[string]bool, len(ds.Queries))
	for _, q := range ds.Queries {
		ids[q.ID] = true
	}
	if len(ds.Gallery) == 0 && !ds.GalleryUnlisted && hasNames(r) {
		where := "its gallery is empty"
		if ds.GalleryDir != "" {
			where = fmt.Sprintf("its image folder %s exists but holds no images", ds.GalleryDir)
		}
		return fmt.Errorf("%s %s: %s, so no ranked name can be checked; put the images there, or remove the empty folder to check names by their form only", ds.Name, ds.Split, where)
	}
	known := newNameSet(ds)
	chat := ds.Task == dataset.Chat
	if chat && len(r.Lists) > 0 {
		return fmt.Errorf("%s needs %d rankings per dialogue (rounds 0..10), got single lists", ds.Name, dataset.VisDialRounds)
	}
	if !chat && len(r.Rounds) > 0 {
		return fmt.Errorf("%s has no dialogue rounds, got per-round rankings", ds.Name)
	}
	if ds.Name != dataset.CIRR && len(r.Subset) > 0 {
		return fmt.Errorf("%s has no subset protocol, got subset rankings", ds.Name)
	}
	for _, id := range sortedKeys(r.Lists) {
		if err := validateList(ids, known, id, r.Lists[id]); err != nil {
			return err
		}
	}
	for _, id := range sortedKeys(r.Subset) {
		if err := validateList(ids, known, id, r.Subset[id]); err != nil {
			return fmt.Errorf("subset ranking: %w", err)
		}
	}
	for _, id := range sortedKeys(r.Rounds) {
		rounds := r.Rounds[id]
		if !ids[id] {
			return &ListError{Query: id, Round: -1, Item: -1, Msg: "unknown query id"}
		}
		if len(rounds) != dataset.VisDialRounds {
			return &ListError{Query: id, Round: -1, Item: -1, Msg: fmt.Sprintf("want %d rankings (rounds 0..10), got %d", dataset.VisDialRounds, len(rounds))}
		}
		for j, l := range rounds {
			if err := validateList(ids, known, id, l); err != nil {
				err.(*ListError).Round = j
				return err
			}
		}
	}
	return nil
}

// ListError is a problem with one ranked list.
type ListError struct {
	Query string
	Round int // VisDial round, -1 if none
	Item  int // 0-based position in the list, -1 if the list as a whole
	Msg   string
}

func (e *ListError) Error() string {
	s := fmt.Sprintf("query %q", e.Query)
	if e.Round >= 0 {
		s += fmt.Sprintf(": round %d", e.Round)
	}
	if e.Item >= 0 {
		s += fmt.Sprintf(": item %d", e.Item)
	}
	return s + ": " + e.Msg
}

// nameSet checks list items against a gallery: a name -> index map with a
// generation-stamped "seen" array for duplicate detection (no allocation
// per list), or, for an unlisted gallery, the dataset's name form and a
// per-list map.
type nameSet struct {
	idx   map[string]int32
	form  func(string) bool
	stamp []uint32
	pos   []int32
	gen   uint32
}

// hasNames reports whether any ranking lists an image.
func hasNames(r Rankings) bool {
	for _, m := range []map[string][]string{r.Lists, r.Subset} {
		for _, l := range m {
			if len(l) > 0 {
				return true
			}
		}
	}
	for _, rounds := range r.Rounds {
		for _, l := range rounds {
			if len(l) > 0 {
				return true
			}
		}
	}
	return false
}

func newNameSet(ds *dataset.Dataset) *nameSet {
	if ds.GalleryUnlisted {
		return &nameSet{form: ds.NameChecker()}
	}
	ns := &nameSet{idx: make(map[string]int32, len(ds.Gallery)), stamp: make([]uint32, len(ds.Gallery)), pos: make([]int32, len(ds.Gallery))}
	for i, im := range ds.Gallery {
		ns.idx[im.Name] = int32(i)
	}
	return ns
}

func validateList(ids map[string]bool, ns *nameSet, id string, l []string) error {
	if !ids[id] {
		return &ListError{Query: id, Round: -1, Item: -1, Msg: "unknown query id"}
	}
	unknown := func(i int, name string) error {
		return &ListError{Query: id, Round: -1, Item: i, Msg: fmt.Sprintf("unknown image name %q", name)}
	}
	dup := func(i int, name string, first int) error {
		return &ListError{Query: id, Round: -1, Item: i, Msg: fmt.Sprintf("image %q already at item %d", name, first)}
	}
	if ns.idx == nil {
		seen := make(map[string]int, len(l))
		for i, name := range l {
			if !ns.form(name) {
				return unknown(i, name)
			}
			if first, ok := seen[name]; ok {
				return dup(i, name, first)
			}
			seen[name] = i
		}
		return nil
	}
	ns.gen++
	if ns.gen == 0 { // wrapped: reset the stamps
		clear(ns.stamp)
		ns.gen = 1
	}
	for i, name := range l {
		j, ok := ns.idx[name]
		if !ok {
			return unknown(i, name)
		}
		if ns.stamp[j] == ns.gen {
			return dup(i, name, int(ns.pos[j]))
		}
		ns.stamp[j], ns.pos[j] = ns.gen, int32(i)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return idLess(keys[i], keys[j]) })
	return keys
}

// idLess orders query ids numerically when both are integers, else as
// strings.
func idLess(a, b string) bool {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	if (errA == nil) != (errB == nil) {
		return errA == nil
	}
	return a < b
}

// Rank returns the 1-based position of target in list, or 0 when absent.
func Rank(list []string, target string) int {
	for i, n := range list {
		if n == target {
			return i + 1
		}
	}
	return 0
}

// hit reports whether a 1-based rank (0 = absent) is within the top k.
func hit(rank, k int) bool { return rank > 0 && rank <= k }

// without returns list minus every occurrence of drop (a new slice).
func without(list []string, drop string) []string {
	if drop == "" || !slices.Contains(list, drop) {
		return list
	}
	out := make([]string, 0, len(list))
	for _, n := range list {
		if n != drop {
			out = append(out, n)
		}
	}
	return out
}

// restrict returns the items of list that are in set, order kept.
func restrict(list, set []string) []string {
	in := make(map[string]bool, len(set))
	for _, s := range set {
		in[s] = true
	}
	out := make([]string, 0, len(set))
	for _, n := range list {
		if in[n] {
			out = append(out, n)
		}
	}
	return out
}

// AveragePrecision is CIRCO's AP@K for one query: the sum over the first
// min(K, len(list)) positions i holding a ground truth of (hits so far)/i,
// divided by min(K, number of ground truths). 0 when there are no ground
// truths.
func AveragePrecision(list []string, gts []string, k int) float64 {
	if len(gts) == 0 || k <= 0 {
		return 0
	}
	g := make(map[string]bool, len(gts))
	for _, t := range gts {
		g[t] = true
	}
	hits, sum := 0, 0.0
	for i := 0; i < min(k, len(list)); i++ {
		if g[list[i]] {
			hits++
			sum += float64(hits) / float64(i+1)
		}
	}
	return sum / float64(min(k, len(g)))
}

// RankByScore orders names by descending score; equal scores keep the
// input (gallery) order; NaN scores go last.
func RankByScore(names []string, scores []float64) ([]string, error) {
	if len(names) != len(scores) {
		return nil, fmt.Errorf("rank by score: %d names but %d scores", len(names), len(scores))
	}
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	out := make([]string, len(names))
	for i, j := range idx {
		out[i] = names[j]
	}
	return out, nil
}
