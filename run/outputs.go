package run

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
)

// Submission sizes (evaluation servers' formats).
const (
	submitTop       = 50
	submitSubsetTop = 3
)

// stageList returns unit key's ranked list after stage st (nil if not finished).
func (r *Runner) stageList(st int, key string) []string {
	var names []string
	switch st {
	case 1:
		s := r.get1(key)
		if s == nil {
			return nil
		}
		names = s.Names()
	case 2:
		s := r.get2(key)
		if s == nil {
			return nil
		}
		names = s.Ranking
	case 3:
		s := r.get3(key)
		if s == nil {
			return nil
		}
		names = s.Ranking
	case stageSoft:
		s := r.get2(key)
		if s == nil || s.SoftRanking == nil {
			return nil
		}
		names = s.SoftRanking
	}
	depth := r.cfg.Engine.Options().Depth
	if len(names) > depth {
		names = names[:depth]
	}
	return slices.Clone(names)
}

// stageSoft names the stage-2 ranking by soft (log-probability) scores,
// written beside the hard one when soft scoring is on.
const stageSoft = 4

func stageKey(st int) string {
	if st == stageSoft {
		return "stage2_soft"
	}
	return fmt.Sprintf("stage%d", st)
}

// subsetList is the unit's list restricted to its CIRR subset, in ranked
// order: members inside the stored list in that order, then the others in
// their stage-1 subset order.
func (r *Runner) subsetList(st int, u unit) []string {
	dq := r.cfg.Dataset.Queries[u.qi]
	if dq.Subset == nil {
		return nil
	}
	list := r.stageList(st, u.key)
	if r.cfg.Settings.Subset {
		return list
	}
	member := map[string]bool{}
	for _, m := range dq.Subset {
		if m != dq.Reference {
			member[m] = true
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range list {
		if member[n] && !seen[n] {
			out = append(out, n)
			seen[n] = true
		}
	}
	if s1 := r.get1(u.key); s1 != nil {
		for _, n := range s1.SubsetRanking {
			if member[n] && !seen[n] {
				out = append(out, n)
				seen[n] = true
			}
		}
	}
	return out
}

// lists returns stage st's rankings (lists for single-turn datasets, rounds
// for chat) or ok=false when some unit has not finished the stage. For
// CIRR full-gallery runs each list is followed by the img_set members it
// does not contain, in ranked order, so subset metrics are exact.
func (r *Runner) lists(st int) (lists map[string][]string, rounds map[string][][]string, ok bool) {
	chat := r.cfg.Dataset.Task == dataset.Chat
	if chat {
		rounds = map[string][][]string{}
	} else {
		lists = map[string][]string{}
	}
	for _, chain := range r.chains() {
		for _, i := range chain {
			u := r.units[i]
			l := r.stageList(st, u.key)
			if l == nil {
				return nil, nil, false
			}
			id := r.cfg.Dataset.Queries[u.qi].ID
			if chat {
				rounds[id] = append(rounds[id], l)
				continue
			}
			if !r.cfg.Settings.Subset {
				in := map[string]bool{}
				for _, n := range l {
					in[n] = true
				}
				for _, n := range r.subsetList(st, u) {
					if !in[n] {
						l = append(l, n)
					}
				}
			}
			lists[id] = l
		}
	}
	return lists, rounds, true
}

// scoredDataset is the dataset limited to the run's queries.
func (r *Runner) scoredDataset() *dataset.Dataset {
	ds := *r.cfg.Dataset
	if n := len(r.byQ); n < len(ds.Queries) {
		ds.Queries = ds.Queries[:n]
	}
	return &ds
}

// maybeWrite writes the outputs of every stage that all units have
// finished and that were not written yet.
func (r *Runner) maybeWrite() {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	for st := 1; st <= r.cfg.Settings.Stages; st++ {
		if r.wrote[st] || r.done[st].Load() < int64(len(r.units)) {
			continue
		}
		if err := r.writeStage(st); err != nil {
			r.cfg.Log.Error("write stage outputs", "stage", st, "err", err)
			if r.writeErr == nil {
				r.writeErr = fmt.Errorf("write stage %d outputs: %w", st, err)
			}
			continue
		}
		r.wrote[st] = true
		if st == 2 && r.cfg.Engine.Options().Soft {
			if _, _, ok := r.lists(stageSoft); ok {
				if err := r.writeStage(stageSoft); err != nil {
					r.cfg.Log.Error("write soft stage-2 outputs", "err", err)
				}
			} else {
				r.cfg.Log.Warn("soft scores unavailable for some queries (no log-probabilities): no soft ranking written")
			}
		}
	}
}

func (r *Runner) orderedIDs() []string {
	var ids []string
	for _, chain := range r.chains() {
		ids = append(ids, r.cfg.Dataset.Queries[r.units[chain[0]].qi].ID)
	}
	return ids
}

// writeStage writes rankings.stageN.json, the submissions and the stage's
// metrics (metrics.json holds every finished stage).
func (r *Runner) writeStage(st int) error {
	lists, rounds, ok := r.lists(st)
	if !ok {
		return fmt.Errorf("stage %d unfinished", st)
	}
	ids := r.orderedIDs()
	var buf bytes.Buffer
	buf.WriteString("{")
	for i, id := range ids {
		if i > 0 {
			buf.WriteString(",")
		}
		k, _ := json.Marshal(id)
		var v []byte
		if rounds != nil {
			v, _ = json.Marshal(rounds[id])
		} else {
			v, _ = json.Marshal(lists[id])
		}
		fmt.Fprintf(&buf, "\n%s: %s", k, v)
	}
	buf.WriteString("\n}\n")
	if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "rankings."+stageKey(st)+".json"), buf.Bytes()); err != nil {
		return err
	}
	if st != stageSoft {
		if err := r.writeSubmissions(st, lists); err != nil {
			return err
		}
	}
	if r.cfg.Score != nil && r.hasLabels() {
		rep, table, err := r.cfg.Score(r.scoredDataset(), lists, rounds)
		if err != nil {
			return fmt.Errorf("score stage %d: %w", st, err)
		}
		if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "metrics", stageKey(st)+".json"), append(bytes.TrimSpace(rep), '\n')); err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "metrics", stageKey(st)+".txt"), []byte(table)); err != nil {
			return err
		}
		r.cfg.Log.Info("stage metrics", "stage", st, "metrics", string(compact(rep)))
		if err := r.writeMetrics(); err != nil {
			return err
		}
	}
	r.cfg.Log.Info("stage outputs written", "stage", st)
	return nil
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return b
	}
	return out.Bytes()
}

func (r *Runner) hasLabels() bool {
	for _, q := range r.cfg.Dataset.Queries {
		if len(q.Targets) > 0 {
			return true
		}
	}
	return false
}

// writeMetrics assembles metrics.json, metrics.txt and the plot from the
// per-stage files.
func (r *Runner) writeMetrics() error {
	var js bytes.Buffer
	var txt strings.Builder
	series := map[string]map[string]json.RawMessage{}
	js.WriteString("{")
	n := 0
	for _, st := range []int{1, 2, stageSoft, 3} {
		rep, err := os.ReadFile(filepath.Join(r.cfg.Dir, "metrics", stageKey(st)+".json"))
		if err != nil {
			continue
		}
		table, _ := os.ReadFile(filepath.Join(r.cfg.Dir, "metrics", stageKey(st)+".txt"))
		if n > 0 {
			js.WriteString(",")
		}
		n++
		fmt.Fprintf(&js, "\n%q: %s", stageKey(st), compact(rep))
		fmt.Fprintf(&txt, "== %s (%s) ==\n%s\n", strings.Replace(stageKey(st), "stage", "stage ", 1), stageTitle(st), strings.TrimRight(string(table), "\n"))
		txt.WriteString("\n")
		var m map[string]json.RawMessage
		if json.Unmarshal(rep, &m) == nil {
			series[stageKey(st)] = m
		}
	}
	js.WriteString("\n}\n")
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, js.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("metrics.json: %w", err)
	}
	pretty.WriteByte('\n')
	if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "metrics.json"), pretty.Bytes()); err != nil {
		return err
	}
	head := fmt.Sprintf("%s %s: %d queries\n\n", r.cfg.Dataset.Name, r.cfg.Dataset.Split, len(r.byQ))
	if r.interactive() {
		head = fmt.Sprintf("%s %s: %d queries, interactive (generated questions, simulated user)\n\n", r.cfg.Dataset.Name, r.cfg.Dataset.Split, len(r.byQ))
	}
	if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "metrics.txt"), []byte(head+txt.String())); err != nil {
		return err
	}
	if err := r.writeBeside(series); err != nil {
		return err
	}
	svg := plotSVG(r.cfg.Dataset.Name+" "+r.cfg.Dataset.Split, series)
	return atomicfile.Write(filepath.Join(r.cfg.Dir, "recall.svg"), []byte(svg))
}

func stageTitle(st int) string {
	switch st {
	case 1:
		return "reason + retrieve"
	case 2:
		return "verify + re-rank"
	case stageSoft:
		return "verify + re-rank by soft log-probability scores, for comparison; stage 3 uses the hard ranking"
	}
	return "evaluate"
}

// writeSubmissions writes the CIRR / CIRCO test-server files of a stage.
func (r *Runner) writeSubmissions(st int, lists map[string][]string) error {
	ds := r.cfg.Dataset
	if r.hasLabels() || lists == nil {
		return nil
	}
	name := strings.ToUpper(ds.Name)
	if name != "CIRR" && name != "CIRCO" {
		return nil
	}
	dir := filepath.Join(r.cfg.Dir, "submissions")
	write := func(file string, f func(*bytes.Buffer) error) error {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			return fmt.Errorf("submission %s: %w", file, err)
		}
		return atomicfile.Write(filepath.Join(dir, file), b.Bytes())
	}
	if name == "CIRCO" {
		if r.cfg.Submit.CIRCO == nil {
			r.cfg.Log.Warn("no CIRCO submission writer wired; submission skipped")
			return nil
		}
		return write(fmt.Sprintf("stage%d.circo.json", st), func(b *bytes.Buffer) error { return r.cfg.Submit.CIRCO(b, lists, submitTop) })
	}
	if r.cfg.Submit.CIRR == nil {
		r.cfg.Log.Warn("no CIRR submission writer wired; submission skipped")
		return nil
	}
	subset := map[string][]string{}
	for _, chain := range r.chains() {
		u := r.units[chain[0]]
		subset[r.cfg.Dataset.Queries[u.qi].ID] = r.subsetList(st, u)
	}
	if !r.cfg.Settings.Subset {
		full := map[string][]string{}
		for id, l := range lists {
			l = l[:min(len(l), r.cfg.Engine.Options().Depth)]
			full[id] = l
		}
		if err := write(fmt.Sprintf("stage%d.recall.json", st), func(b *bytes.Buffer) error { return r.cfg.Submit.CIRR(b, "recall", full, submitTop) }); err != nil {
			return err
		}
	}
	return write(fmt.Sprintf("stage%d.recall_subset.json", st), func(b *bytes.Buffer) error {
		return r.cfg.Submit.CIRR(b, "recall_subset", subset, submitSubsetTop)
	})
}

// writeFinal writes the trace and the report (and any stage outputs that
// became complete).
func (r *Runner) writeFinal() error {
	r.maybeWrite()
	r.outMu.Lock()
	werr := r.writeErr
	r.outMu.Unlock()
	if err := r.writeTrace(); err != nil {
		return err
	}
	if err := r.writeReport(); err != nil {
		return err
	}
	return werr
}

// TraceLine is one line of trace.jsonl (documented in docs/trace.md).
type TraceLine struct {
	ID          string   `json:"id"`
	Round       *int     `json:"round,omitempty"`
	Instruction string   `json:"instruction"`
	Reference   string   `json:"reference,omitempty"`
	Previous    string   `json:"previous,omitempty"`
	Targets     []string `json:"targets,omitempty"`
	// Rank is the 1-based rank of the first target after each stage
	// (0: not within the stored list).
	Rank map[string]int `json:"rank,omitempty"`
	// Calls are the requests sent to model servers, all stages;
	// CacheHits the answers the answer cache served instead.
	Calls      map[string]int `json:"calls"`
	CacheHits  map[string]int `json:"cache_hits,omitempty"`
	Fallbacks  []string       `json:"fallbacks,omitempty"`
	Unfinished string         `json:"unfinished,omitempty"`
	// Turn is, in an interactive run, how this round's turn was generated.
	Turn   *GeneratedTurn   `json:"turn,omitempty"`
	Stage1 *pipeline.Stage1 `json:"stage1,omitempty"`
	Stage2 *pipeline.Stage2 `json:"stage2,omitempty"`
	Stage3 *pipeline.Stage3 `json:"stage3,omitempty"`
}

func (r *Runner) writeTrace() error {
	var buf bytes.Buffer
	for _, chain := range r.chains() {
		for _, i := range chain {
			u := r.units[i]
			dq := r.cfg.Dataset.Queries[u.qi]
			q, _ := r.prepared(i)
			tl := TraceLine{ID: dq.ID, Instruction: q.Instruction, Reference: u.q.Reference, Previous: q.Previous, Targets: dq.Targets, Calls: map[string]int{}}
			if u.round >= 0 {
				rd := u.round
				tl.Round = &rd
			}
			tl.Stage1, tl.Stage2, tl.Stage3 = r.get1(u.key), r.get2(u.key), r.get3(u.key)
			add := func(c pipeline.Calls) {
				for k, v := range c.Calls {
					tl.Calls[k] += v
				}
				for k, v := range c.CacheHits {
					if tl.CacheHits == nil {
						tl.CacheHits = map[string]int{}
					}
					tl.CacheHits[k] += v
				}
				tl.Fallbacks = append(tl.Fallbacks, c.Fallbacks...)
			}
			if tl.Turn = r.getTurn(u.key); tl.Turn != nil {
				add(tl.Turn.Ask.Calls)
				add(tl.Turn.Calls)
			}
			if tl.Stage1 != nil {
				add(tl.Stage1.Calls)
			}
			if tl.Stage2 != nil {
				add(tl.Stage2.Calls)
			}
			if tl.Stage3 != nil {
				add(tl.Stage3.Calls)
			}
			if len(dq.Targets) > 0 {
				tl.Rank = map[string]int{}
				for st := 1; st <= 3; st++ {
					if l := r.stageList(st, u.key); l != nil {
						tl.Rank[fmt.Sprintf("stage%d", st)] = slices.Index(l, dq.Targets[0]) + 1
					}
				}
			}
			if v, ok := r.fail.Load(u.key); ok {
				tl.Unfinished = fmt.Sprint(v)
			}
			b, err := json.Marshal(tl)
			if err != nil {
				return fmt.Errorf("trace %s: %w", u.key, err)
			}
			buf.Write(b)
			buf.WriteByte('\n')
		}
	}
	return atomicfile.Write(filepath.Join(r.cfg.Dir, "trace.jsonl"), buf.Bytes())
}

// Report holds the run's counters (report.json).
type Report struct {
	Dataset string `json:"dataset"`
	Split   string `json:"split"`
	Queries int    `json:"queries"`
	Units   int    `json:"units"`
	// Finished counts units that finished each stage.
	Finished map[string]int `json:"finished"`
	// Calls, Failures, CacheHits: totals per role over every finished
	// stage of the run (from the checkpoints, so resumed runs count all;
	// calls of units left unfinished are not in them: ModelServers has
	// every call of this process). Calls are requests sent to model
	// servers; CacheHits are answers the answer cache served instead (not
	// in Calls).
	Calls     map[string]int `json:"calls"`
	Failures  map[string]int `json:"failures"`
	CacheHits map[string]int `json:"cache_hits"`
	// CallsPerQuery is Calls divided by the number of units.
	CallsPerQuery map[string]float64 `json:"calls_per_query"`
	// UpperBound is the method's per-query bound on verifier + evaluator
	// calls, K x propositions + alpha, averaged over units.
	UpperBound float64 `json:"upper_bound_per_query"`
	// VerifyEvaluatePerQuery is the verifier + evaluator answers per unit
	// (sent or from the cache), to compare with UpperBound.
	VerifyEvaluatePerQuery float64        `json:"verify_evaluate_per_query"`
	Fallbacks              map[string]int `json:"fallbacks"`
	// ThisProcess are the engine's counters in this process (tokens,
	// cache hits), and wall time per stage in seconds (first start to
	// last finish; busy = summed per-unit time).
	ThisProcess map[string]pipeline.RoleStats `json:"this_process"`
	StageWall   map[string]float64            `json:"stage_wall_s"`
	StageBusy   map[string]float64            `json:"stage_busy_s"`
	WallSeconds float64                       `json:"wall_s"`
	Down        []modelrole.Name              `json:"down,omitempty"`
	Unfinished  int                           `json:"unfinished"`
	// ModelServers are this process's model-client counters per role:
	// the same numbers as llm_stats.json.
	ModelServers map[string]ModelCounters `json:"model_servers,omitempty"`
}

// Report computes the run's counters.
func (r *Runner) Report() Report {
	rep := Report{Dataset: r.cfg.Dataset.Name, Split: r.cfg.Dataset.Split, Queries: len(r.byQ), Units: len(r.units),
		Finished: map[string]int{}, Calls: map[string]int{}, Failures: map[string]int{}, CacheHits: map[string]int{},
		CallsPerQuery: map[string]float64{}, Fallbacks: map[string]int{}, StageWall: map[string]float64{}, StageBusy: map[string]float64{},
		ThisProcess: r.cfg.Engine.Stats(), WallSeconds: time.Since(r.start).Seconds(), Down: r.cfg.Engine.Down()}
	if r.cfg.ModelStats != nil {
		rep.ModelServers = r.cfg.ModelStats()
	}
	add := func(c pipeline.Calls) {
		for k, v := range c.Calls {
			rep.Calls[k] += v
		}
		for k, v := range c.Failures {
			rep.Failures[k] += v
		}
		for k, v := range c.CacheHits {
			rep.CacheHits[k] += v
		}
		for _, f := range c.Fallbacks {
			kind, _, _ := strings.Cut(f, ":")
			rep.Fallbacks[kind]++
		}
	}
	opt := r.cfg.Engine.Options()
	var bound, actual float64
	for _, u := range r.units {
		if t := r.getTurn(u.key); t != nil {
			add(t.Ask.Calls)
			add(t.Calls)
		}
		s1, s2, s3 := r.get1(u.key), r.get2(u.key), r.get3(u.key)
		if s1 != nil {
			rep.Finished["stage1"]++
			add(s1.Calls)
		}
		if s2 != nil {
			rep.Finished["stage2"]++
			add(s2.Calls)
			bound += float64(s2.Depth * len(s2.Propositions))
			actual += float64(s2.Calls.Calls[string(modelrole.Verifier)] + s2.Calls.CacheHits[string(modelrole.Verifier)])
		}
		if s3 != nil {
			rep.Finished["stage3"]++
			add(s3.Calls)
			actual += float64(s3.Calls.Calls[string(modelrole.Evaluator)] + s3.Calls.CacheHits[string(modelrole.Evaluator)])
		}
		if r.cfg.Settings.Stages >= 3 && s2 != nil {
			bound += float64(min(opt.Alpha, len(s2.Ranking)))
		}
		missing := (s1 == nil) || (r.cfg.Settings.Stages >= 2 && s2 == nil) || (r.cfg.Settings.Stages >= 3 && s3 == nil)
		rep.Unfinished += b2i(missing)
	}
	if n := float64(len(r.units)); n > 0 {
		for k, v := range rep.Calls {
			rep.CallsPerQuery[k] = float64(v) / n
		}
		rep.UpperBound = bound / n
		rep.VerifyEvaluatePerQuery = actual / n
	}
	for st := 1; st <= 3; st++ {
		t := &r.times[st]
		t.mu.Lock()
		if !t.first.IsZero() {
			rep.StageWall[fmt.Sprintf("stage%d", st)] = t.last.Sub(t.first).Seconds()
			rep.StageBusy[fmt.Sprintf("stage%d", st)] = t.busy.Seconds()
		}
		t.mu.Unlock()
	}
	return rep
}

func (r *Runner) writeReport() error {
	rep := r.Report()
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(r.cfg.Dir, "report.json"), append(b, '\n')); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(r.cfg.Dir, "report.txt"), []byte(FormatReport(rep)))
}

// FormatReport renders the counters as text.
func FormatReport(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d queries (%d units), wall %.1fs\n", rep.Dataset, rep.Split, rep.Queries, rep.Units, rep.WallSeconds)
	fmt.Fprintf(&b, "finished: stage1 %d, stage2 %d, stage3 %d; unfinished %d\n", rep.Finished["stage1"], rep.Finished["stage2"], rep.Finished["stage3"], rep.Unfinished)
	var roles []string
	for _, m := range []map[string]int{rep.Calls, rep.CacheHits} {
		for k := range m {
			if !slices.Contains(roles, k) {
				roles = append(roles, k)
			}
		}
	}
	sort.Strings(roles)
	fmt.Fprintf(&b, "calls = requests sent to the model servers; cached = answers from the answer cache (not sent)\n")
	fmt.Fprintf(&b, "%-10s %8s %8s %8s %10s\n", "role", "calls", "failed", "cached", "per query")
	for _, k := range roles {
		fmt.Fprintf(&b, "%-10s %8d %8d %8d %10.2f\n", k, rep.Calls[k], rep.Failures[k], rep.CacheHits[k], rep.CallsPerQuery[k])
	}
	fmt.Fprintf(&b, "verifier+evaluator answers per query (sent + cached) %.2f (method's upper bound K x propositions + alpha: %.2f)\n", rep.VerifyEvaluatePerQuery, rep.UpperBound)
	if len(rep.Fallbacks) > 0 {
		b.WriteString("fallbacks:")
		for _, k := range slices.Sorted(maps.Keys(rep.Fallbacks)) {
			fmt.Fprintf(&b, " %s=%d", k, rep.Fallbacks[k])
		}
		b.WriteString("\n")
	}
	for st := 1; st <= 3; st++ {
		k := fmt.Sprintf("stage%d", st)
		if w, ok := rep.StageWall[k]; ok {
			fmt.Fprintf(&b, "%s wall %.2fs (busy %.2fs)\n", k, w, rep.StageBusy[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rep.ThisProcess)) {
		s := rep.ThisProcess[k]
		fmt.Fprintf(&b, "this process %s: %d calls, %d cache hits, %d failures, tokens %d prompt / %d completion", k, s.Calls, s.CacheHits, s.Failures, s.PromptTokens, s.CompletionTokens)
		if s.Down {
			b.WriteString(" (DOWN)")
		}
		b.WriteString("\n")
	}
	for _, k := range slices.Sorted(maps.Keys(rep.ModelServers)) {
		s := rep.ModelServers[k]
		fmt.Fprintf(&b, "model server %s: %d requests, %d retries (%d cut-off replies), %d failed calls, %d cache hits (%d shared in flight), %d replies at the token limit\n",
			k, s.Requests, s.Retries, s.CutOff, s.Failures, s.CacheHits, s.Shared, s.Truncated)
	}
	return b.String()
}
