package metrics

import (
	"fmt"
	"slices"

	"github.com/imagescope/imagescope/dataset"
)

// Score computes the dataset's metrics for a ranking set:
//
//   - every dataset with targets: recall@K of the primary target
//     (CIRR: the reference image removed from the ranking first);
//   - CIRR: recall_subset@K over the five img_set members other than the
//     reference;
//   - CIRCO: map@K over all ground truths, and semantic_map@10/<aspect>;
//   - VisDial: hits@K (cumulative) and round_recall@K (that round only),
//     each a list over rounds 0..10.
//
// Queries with no ranking count as misses (Report.Missing says how many).
// Test splits without labels give a Report with Labelled false and no
// metrics (the rankings are still validated).
func Score(ds *dataset.Dataset, r Rankings, opt Options) (*Report, error) {
	if ds == nil {
		return nil, fmt.Errorf("score: no dataset")
	}
	if err := Validate(ds, r); err != nil {
		return nil, fmt.Errorf("score %s %s: %w", ds.Name, ds.Split, err)
	}
	queries := ds.Queries
	if opt.MaxQueries > 0 && opt.MaxQueries < len(queries) {
		queries = queries[:opt.MaxQueries]
	}
	rep := &Report{Dataset: ds.Name, Split: ds.Split, Labelled: ds.HasLabels()}
	for _, q := range queries {
		if !rankedQuery(r, q.ID) {
			rep.Missing++
		}
	}
	rep.Queries = len(queries)
	if !rep.Labelled {
		return rep, nil
	}
	var labelled []dataset.Query
	for _, q := range queries {
		if len(q.Targets) > 0 {
			labelled = append(labelled, q)
		}
	}
	rep.Queries = len(labelled)
	if len(labelled) == 0 {
		return rep, nil
	}
	if ds.Task == dataset.Chat {
		scoreChat(rep, labelled, r, opt)
		return rep, nil
	}
	hasLists := len(r.Lists) > 0 || len(r.Subset) == 0
	n := float64(len(labelled))
	if hasLists {
		removeRef := ds.Name == dataset.CIRR
		defKs := DefaultRecallKs
		if ds.Name == dataset.CIRCO {
			defKs = CIRCORecallKs
		}
		for _, k := range orDefault(opt.RecallKs, defKs) {
			c := 0
			for _, q := range labelled {
				l := r.Lists[q.ID]
				if removeRef {
					l = without(l, q.Reference)
				}
				if hit(Rank(l, q.Targets[0]), k) {
					c++
				}
			}
			rep.add(fmt.Sprintf("recall@%d", k), float64(c)/n)
		}
	}
	if ds.Name == dataset.CIRR {
		for _, k := range orDefault(opt.SubsetKs, DefaultSubsetKs) {
			c := 0
			for _, q := range labelled {
				l, ok := r.Subset[q.ID]
				if !ok {
					l = r.Lists[q.ID]
				}
				if hit(Rank(restrict(l, q.Subset), q.Targets[0]), k) {
					c++
				}
			}
			rep.add(fmt.Sprintf("recall_subset@%d", k), float64(c)/n)
		}
		if hasLists && opt.SoftRecall {
			for _, k := range orDefault(opt.RecallKs, DefaultRecallKs) {
				sum := 0.0
				for _, q := range labelled {
					l := without(r.Lists[q.ID], q.Reference)
					best := 0.0
					for _, name := range l[:min(k, len(l))] {
						best = max(best, q.SoftTargets[name])
					}
					sum += best
				}
				rep.add(fmt.Sprintf("soft_recall@%d", k), sum/n)
			}
		}
		if hasLists && opt.ReferenceCode {
			for _, k := range orDefault(opt.RecallKs, DefaultRecallKs) {
				c := 0
				for _, q := range labelled {
					if hit(Rank(r.Lists[q.ID], q.Targets[0]), k) {
						c++
					}
				}
				rep.add(fmt.Sprintf("refcode_recall@%d", k), float64(c)/n)
			}
		}
	}
	if ds.Name == dataset.CIRCO {
		for _, k := range orDefault(opt.MAPKs, DefaultMAPKs) {
			sum := 0.0
			for _, q := range labelled {
				sum += AveragePrecision(r.Lists[q.ID], q.Targets, k)
			}
			rep.add(fmt.Sprintf("map@%d", k), sum/n)
		}
		var aspects []string
		for _, q := range labelled {
			for _, a := range q.SemanticAspects {
				if !slices.Contains(aspects, a) {
					aspects = append(aspects, a)
				}
			}
		}
		slices.Sort(aspects)
		for _, a := range aspects {
			sum, c := 0.0, 0
			for _, q := range labelled {
				if slices.Contains(q.SemanticAspects, a) {
					sum += AveragePrecision(r.Lists[q.ID], q.Targets, 10)
					c++
				}
			}
			rep.add("semantic_map@10/"+a, sum/float64(c))
		}
	}
	return rep, nil
}

func rankedQuery(r Rankings, id string) bool {
	if _, ok := r.Lists[id]; ok {
		return true
	}
	if _, ok := r.Rounds[id]; ok {
		return true
	}
	_, ok := r.Subset[id]
	return ok
}

// scoreChat computes VisDial's cumulative Hits@K per round (PlugIR): a
// dialogue is a hit at round r when its target was within the top K at any
// round j <= r.
func scoreChat(rep *Report, qs []dataset.Query, r Rankings, opt Options) {
	const rounds = dataset.VisDialRounds
	n := float64(len(qs))
	ranks := make([][]int, len(qs)) // 0 = absent
	for i, q := range qs {
		ranks[i] = make([]int, rounds)
		if lists, ok := r.Rounds[q.ID]; ok {
			for j := range rounds {
				ranks[i][j] = Rank(lists[j], q.Targets[0])
			}
		}
	}
	cumulative := func(k, from int) []float64 {
		out := make([]float64, 0, rounds-from)
		for j := from; j < rounds; j++ {
			c := 0
			for i := range qs {
				for jj := from; jj <= j; jj++ {
					if hit(ranks[i][jj], k) {
						c++
						break
					}
				}
			}
			out = append(out, float64(c)/n)
		}
		return out
	}
	ks := orDefault(opt.HitsKs, DefaultHitsKs)
	for _, k := range ks {
		rep.addRounds(fmt.Sprintf("hits@%d", k), cumulative(k, 0))
	}
	for _, k := range ks {
		per := make([]float64, rounds)
		for j := range rounds {
			c := 0
			for i := range qs {
				if hit(ranks[i][j], k) {
					c++
				}
			}
			per[j] = float64(c) / n
		}
		rep.addRounds(fmt.Sprintf("round_recall@%d", k), per)
	}
	if opt.ReferenceCode {
		for _, k := range ks {
			rep.addRounds(fmt.Sprintf("refcode_hits@%d", k), cumulative(k, 1))
		}
	}
}
