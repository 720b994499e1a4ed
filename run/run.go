// Package run executes a benchmark run of the pipeline: it schedules every
// query through the stages (streaming or stage by stage), checkpoints each
// finished stage of each query, and writes the run folder: rankings,
// metrics, submissions, trace, reports and a plot.
package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
)

// Scorer turns rankings into the same report `imagescope score` prints.
// lists maps query id -> ranked names; rounds (VisDial) maps dialogue id ->
// one list per round. The report must marshal deterministically.
type Scorer func(ds *dataset.Dataset, lists map[string][]string, rounds map[string][][]string) (report json.RawMessage, table string, err error)

// Submitter writes the evaluation servers' submission files.
type Submitter struct {
	// CIRR writes a CIRR test submission (metric "recall" or "recall_subset").
	CIRR func(w io.Writer, metric string, lists map[string][]string, n int) error
	// CIRCO writes a CIRCO test submission.
	CIRCO func(w io.Writer, lists map[string][]string, n int) error
}

// Settings are the run's parameters (saved in config.json; a resumed run
// reads them back).
type Settings struct {
	Dataset string `json:"dataset"`
	Split   string `json:"split"`
	Data    string `json:"data"`
	// Stages is the last stage to run (1..3).
	Stages int `json:"stages"`
	// Subset ranks only the CIRR img_set members (reference excluded).
	Subset bool `json:"subset"`
	// KeepReference keeps the reference image in CIRR rankings (the
	// reference code's behaviour); by default it is removed.
	KeepReference bool `json:"keep_reference"`
	// Barrier finishes each stage for every query before the next starts.
	Barrier bool `json:"barrier"`
	// Active bounds the queries in progress at once (streaming).
	Active int `json:"active"`
	// Limit runs only the first Limit queries (0 = all).
	Limit int `json:"limit,omitempty"`
	// Interactive (chat datasets) replaces the given turns after the
	// caption by generated ones: the engine asks back and the verifier,
	// looking at the target, answers (see interactive.go).
	Interactive bool `json:"interactive,omitempty"`
	// Beside (interactive runs) is a finished run of the same dataset over
	// its own dialogues; its Hits@K per round are written beside this
	// run's (beside.json, beside.txt).
	Beside string `json:"beside,omitempty"`
}

// Config wires a run.
type Config struct {
	Engine   *pipeline.Engine
	Dataset  *dataset.Dataset
	Dir      string
	Settings Settings
	Score    Scorer
	Submit   Submitter
	Log      *slog.Logger
	// Extra is merged into config.json (model ids, endpoints, CLIP model...).
	Extra map[string]any
	// Progress, if set, is called as units finish stages.
	Progress func(stage, done, total int)
	// ModelStats, if set, reports the model clients' counters of this
	// process per role (the numbers llm_stats.json holds); report.json
	// carries them as model_servers.
	ModelStats func() map[string]ModelCounters
}

// ModelCounters are one role's model-client counters in this process.
type ModelCounters struct {
	// Calls made, of which CacheHits needed no request of their own
	// (from the answer cache, or Shared with an identical request in
	// flight) and CacheMisses went to a server.
	Calls       int64 `json:"calls"`
	CacheHits   int64 `json:"cache_hits"`
	Shared      int64 `json:"shared_in_flight"`
	CacheMisses int64 `json:"cache_misses"`
	// Failures are calls that ended in an error (including those of units
	// left unfinished); Requests are HTTP attempts, Retries the extra
	// ones, CutOff the replies cut off mid-body (retried) and Truncated the
	// replies that stopped at the token limit.
	Failures  int64 `json:"failures"`
	Requests  int64 `json:"requests"`
	Retries   int64 `json:"retries"`
	CutOff    int64 `json:"cut_off"`
	Truncated int64 `json:"truncated"`
}

// unit is one query, or one round of a chat query.
type unit struct {
	key   string
	qi    int // index into the dataset's queries
	round int // -1 for non-chat
	q     pipeline.Query
}

// state holds the finished stages of every unit.
type state struct {
	mu sync.Mutex
	s1 map[string]*pipeline.Stage1
	s2 map[string]*pipeline.Stage2
	s3 map[string]*pipeline.Stage3
	// turns are the generated turns of an interactive run.
	turns map[string]*GeneratedTurn
}

// Runner executes one run.
type Runner struct {
	cfg   Config
	units []unit
	byQ   map[int][]int // query index -> unit indexes (rounds in order)
	st    state
	ck    [4]*checkpoint
	// turnCk holds the generated turns of an interactive run.
	turnCk *checkpoint
	done   [4]atomic.Int64
	wrote  [4]bool
	outMu  sync.Mutex
	// writeErr is the first failure to write a stage's outputs.
	writeErr error
	times    [4]stageTime
	fail     sync.Map // unit key -> error
	start    time.Time
	// domain is the prompt domain of the run's queries.
	domain string
}

type stageTime struct {
	mu          sync.Mutex
	first, last time.Time
	busy        time.Duration
}

func (t *stageTime) add(begin, end time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.first.IsZero() || begin.Before(t.first) {
		t.first = begin
	}
	if end.After(t.last) {
		t.last = end
	}
	t.busy += end.Sub(begin)
}

// ErrIncomplete is returned when some queries could not finish (a role was
// down, a query failed); the run folder can be resumed.
var ErrIncomplete = errors.New("run incomplete")

// New prepares a run in cfg.Dir: it writes config.json and the prompts on
// a fresh folder and opens the checkpoints (reading finished stages back on
// a resumed one).
func New(cfg Config) (*Runner, error) {
	if cfg.Engine == nil || cfg.Dataset == nil || cfg.Dir == "" {
		return nil, errors.New("run: engine, dataset and folder are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &cfg.Settings
	if s.Stages < 1 || s.Stages > 3 {
		return nil, fmt.Errorf("run: stages %d: want 1, 2 or 3", s.Stages)
	}
	if s.Active <= 0 {
		s.Active = 64
	}
	if len(cfg.Dataset.Queries) == 0 {
		return nil, fmt.Errorf("run: dataset %s %s has no queries", cfg.Dataset.Name, cfg.Dataset.Split)
	}
	for st := 2; st <= s.Stages; st++ {
		if r := cfg.Engine.SkipReason(st); r != "" {
			return nil, fmt.Errorf("stage %d requested but %s", st, r)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	domain, err := cfg.Engine.Prompts().DatasetDomain(cfg.Dataset.Name, cfg.Dataset.Domain)
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, byQ: map[int][]int{}, start: time.Now(), domain: domain}
	r.st.s1, r.st.s2, r.st.s3 = map[string]*pipeline.Stage1{}, map[string]*pipeline.Stage2{}, map[string]*pipeline.Stage3{}
	r.st.turns = map[string]*GeneratedTurn{}
	if err := r.checkInteractive(); err != nil {
		return nil, err
	}
	if err := r.checkBeside(); err != nil {
		return nil, err
	}
	r.buildUnits()
	if err := r.writeConfig(); err != nil {
		return nil, err
	}
	// The prompts are recorded once, by the run that created the folder: a
	// resumed run reads them back from there, and rewriting them would make
	// SOURCES.txt point at the run folder instead of where they came from.
	promptDir := filepath.Join(cfg.Dir, "prompts")
	if _, err := os.Stat(filepath.Join(promptDir, "SOURCES.txt")); errors.Is(err, fs.ErrNotExist) {
		if err := cfg.Engine.Prompts().WriteDir(promptDir); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("run prompts: %w", err)
	}
	for st := 1; st <= 3; st++ {
		ck, recs, err := openCheckpoint(filepath.Join(cfg.Dir, "checkpoints", fmt.Sprintf("stage%d.jsonl", st)))
		if err != nil {
			r.closeCheckpoints()
			return nil, err
		}
		r.ck[st] = ck
		for k, raw := range recs {
			if err := r.restore(st, k, raw); err != nil {
				r.closeCheckpoints()
				return nil, fmt.Errorf("checkpoint stage %d, %s: %w", st, k, err)
			}
		}
	}
	if r.interactive() {
		if err := r.openTurns(); err != nil {
			r.closeCheckpoints()
			return nil, err
		}
	}
	return r, nil
}

func (r *Runner) restore(st int, key string, raw json.RawMessage) error {
	switch st {
	case 1:
		var v pipeline.Stage1
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		r.st.s1[key] = &v
	case 2:
		var v pipeline.Stage2
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		r.st.s2[key] = &v
	case 3:
		var v pipeline.Stage3
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		r.st.s3[key] = &v
	}
	return nil
}

func (r *Runner) closeCheckpoints() {
	for _, c := range append(r.ck[:], r.turnCk) {
		if c != nil {
			c.close()
		}
	}
}

func (r *Runner) chat() bool { return r.cfg.Dataset.Task == dataset.Chat }

// Dir returns the run folder.
func (r *Runner) Dir() string { return r.cfg.Dir }

func (r *Runner) buildUnits() {
	ds := r.cfg.Dataset
	s := r.cfg.Settings
	queries := ds.Queries
	if s.Limit > 0 && s.Limit < len(queries) {
		queries = queries[:s.Limit]
	}
	exclude := strings.EqualFold(ds.Name, "CIRR") && !s.KeepReference
	for qi, dq := range queries {
		base := pipeline.Query{ID: dq.ID, Round: -1, Domain: r.domain, Instruction: dq.Instruction, Reference: dq.Reference, ExcludeReference: exclude}
		if dq.Subset != nil {
			if s.Subset {
				base.Subset = dq.Subset
			} else {
				// Full-gallery run: also rank the subset on its own, so
				// subset lists and metrics are exact beyond the top 100.
				base.RankSubset = dq.Subset
			}
		}
		if ds.Task == dataset.Chat {
			base.Chat, base.Reference, base.ExcludeReference = true, "", false
			if base.Domain == "" {
				base.Domain = "chat"
			}
			for rd, turn := range dq.Turns {
				u := base
				u.Round, u.Instruction = rd, turn
				if s.Interactive && rd > 0 {
					u.Instruction = "" // generated when the round starts
				}
				r.byQ[qi] = append(r.byQ[qi], len(r.units))
				r.units = append(r.units, unit{key: fmt.Sprintf("%s#%d", dq.ID, rd), qi: qi, round: rd, q: u})
			}
			continue
		}
		r.byQ[qi] = append(r.byQ[qi], len(r.units))
		r.units = append(r.units, unit{key: dq.ID, qi: qi, round: -1, q: base})
	}
}

func (r *Runner) writeConfig() error {
	return writeConfig(r.cfg.Dir, r.cfg.Settings, r.cfg.Engine.Options(), r.roleNames(), r.cfg.Extra)
}

func writeConfig(dir string, s Settings, opt pipeline.Options, roles []string, extra map[string]any) error {
	doc := map[string]any{"settings": s, "options": opt, "roles": roles}
	for k, v := range extra {
		doc[k] = v
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "config.json"), append(b, '\n')); err != nil {
		return fmt.Errorf("write run config: %w", err)
	}
	return nil
}

// Prepare makes a fresh run folder resumable from its first moment: it
// writes config.json (settings, options, the configured roles and extra)
// and the prompts before anything slow, such as indexing the gallery,
// starts. New rewrites config.json with the complete details.
func Prepare(dir string, s Settings, opt pipeline.Options, roles []string, prompts *prompt.Library, extra map[string]any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create run folder: %w", err)
	}
	if err := writeConfig(dir, s, opt, roles, extra); err != nil {
		return err
	}
	if prompts != nil {
		if err := prompts.WriteDir(filepath.Join(dir, "prompts")); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) roleNames() []string {
	var out []string
	for _, n := range modelrole.Chat() {
		if r.cfg.Engine.Has(n) {
			out = append(out, string(n))
		}
	}
	return out
}

// ReadSettings reads the settings saved in a run folder's config.json.
func ReadSettings(dir string) (Settings, map[string]any, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return Settings{}, nil, fmt.Errorf("resume %s: %w", dir, err)
	}
	var doc struct {
		Settings Settings `json:"settings"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Settings{}, nil, fmt.Errorf("resume %s: config.json: %w", dir, err)
	}
	var all map[string]any
	_ = json.Unmarshal(b, &all)
	return doc.Settings, all, nil
}

// ReadOptions reads the pipeline options saved in a run folder's config.json.
func ReadOptions(dir string) (pipeline.Options, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return pipeline.Options{}, fmt.Errorf("resume %s: %w", dir, err)
	}
	var doc struct {
		Options pipeline.Options `json:"options"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return pipeline.Options{}, fmt.Errorf("resume %s: config.json: %w", dir, err)
	}
	return doc.Options, nil
}

// Run executes every unfinished stage of every unit and writes the
// outputs. It returns ErrIncomplete (wrapped) when some units could not
// finish; everything finished is kept and the folder can be resumed.
func (r *Runner) Run(ctx context.Context) error {
	defer r.closeCheckpoints()
	r.cfg.Log.Info("run started", "dir", r.cfg.Dir, "dataset", r.cfg.Dataset.Name, "split", r.cfg.Dataset.Split,
		"queries", len(r.byQ), "units", len(r.units), "stages", r.cfg.Settings.Stages, "barrier", r.cfg.Settings.Barrier)
	for st := 1; st <= 3; st++ {
		r.done[st].Store(int64(r.countDone(st)))
	}
	r.maybeWrite()
	var err error
	if r.cfg.Settings.Barrier {
		err = r.runBarrier(ctx)
	} else {
		err = r.runStreaming(ctx)
	}
	if werr := r.writeFinal(); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	var failed []string
	for _, u := range r.units {
		if r.get1(u.key) != nil && (r.cfg.Settings.Stages < 2 || r.get2(u.key) != nil) && (r.cfg.Settings.Stages < 3 || r.get3(u.key) != nil) {
			continue
		}
		why := "not reached"
		if v, ok := r.fail.Load(u.key); ok {
			why = fmt.Sprint(v)
		}
		failed = append(failed, fmt.Sprintf("%s: %s", u.key, why))
	}
	if len(failed) > 0 {
		show := failed
		if len(show) > 5 {
			show = show[:5]
		}
		return fmt.Errorf("%w: %d of %d units unfinished (first: %s); resume with --resume %s", ErrIncomplete, len(failed), len(r.units), strings.Join(show, "; "), r.cfg.Dir)
	}
	r.cfg.Log.Info("run finished", "dir", r.cfg.Dir, "elapsed", time.Since(r.start).Round(time.Millisecond))
	return nil
}

func (r *Runner) countDone(st int) int {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	n := 0
	for _, u := range r.units {
		switch st {
		case 1:
			_, ok := r.st.s1[u.key]
			n += b2i(ok)
		case 2:
			_, ok := r.st.s2[u.key]
			n += b2i(ok)
		case 3:
			_, ok := r.st.s3[u.key]
			n += b2i(ok)
		}
	}
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// prepared returns unit i's query with the chat carry filled in (from the
// finished stage 1 of the previous rounds). ok is false when a previous
// round's stage 1 is not finished.
func (r *Runner) prepared(i int) (pipeline.Query, bool) {
	u := r.units[i]
	q := u.q
	if !q.Chat {
		return q, true
	}
	dq := r.cfg.Dataset.Queries[u.qi]
	carry := ""
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	if r.interactive() && u.round > 0 {
		t, ok := r.st.turns[u.key]
		if !ok {
			return q, false
		}
		q.Instruction = t.Turn
	}
	for rd := 1; rd < u.round; rd++ {
		prev := r.units[r.byQ[u.qi][rd]]
		s1, ok := r.st.s1[prev.key]
		if !ok {
			return q, false
		}
		carry = pipeline.NextCarry(rd, dq.Turns, carry, s1)
	}
	q.Previous = pipeline.ChatPrevious(u.round, dq.Turns, carry)
	return q, true
}

func (r *Runner) get1(k string) *pipeline.Stage1 {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	return r.st.s1[k]
}

func (r *Runner) get2(k string) *pipeline.Stage2 {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	return r.st.s2[k]
}

func (r *Runner) get3(k string) *pipeline.Stage3 {
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	return r.st.s3[k]
}

// step runs stage st of unit i unless it is already finished. It reports
// false when the unit cannot continue (failure recorded, or cancelled).
func (r *Runner) step(ctx context.Context, st, i int) bool {
	u := r.units[i]
	if ctx.Err() != nil {
		return false
	}
	if _, failed := r.fail.Load(u.key); failed {
		return false
	}
	switch st {
	case 1:
		if r.get1(u.key) != nil {
			return true
		}
	case 2:
		if r.get2(u.key) != nil {
			return true
		}
	case 3:
		if r.get3(u.key) != nil {
			return true
		}
	}
	if (st == 2 && r.get1(u.key) == nil) || (st == 3 && r.get2(u.key) == nil) {
		r.fail.Store(u.key, fmt.Errorf("stage %d unfinished", st-1))
		return false
	}
	if st == 1 && r.interactive() {
		if err := r.ensureTurn(ctx, i); err != nil {
			if ctx.Err() != nil {
				return false
			}
			r.fail.Store(u.key, fmt.Errorf("generate the turn: %w", err))
			r.cfg.Log.Error("generating a turn failed; left for resume", "unit", u.key, "err", err)
			return false
		}
	}
	q, ok := r.prepared(i)
	if !ok {
		r.fail.Store(u.key, errors.New("previous round unfinished"))
		return false
	}
	begin := time.Now()
	out := &pipeline.Outcome{S1: r.get1(u.key), S2: r.get2(u.key)}
	var rec any
	err := r.cfg.Engine.Step(ctx, q, st, out)
	if err == nil {
		switch st {
		case 1:
			rec = out.S1
		case 2:
			rec = out.S2
		case 3:
			rec = out.S3
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		r.fail.Store(u.key, err)
		r.cfg.Log.Error("query stage failed; left for resume", "unit", u.key, "stage", st, "err", err)
		return false
	}
	if err := r.ck[st].append(u.key, rec); err != nil {
		r.fail.Store(u.key, err)
		r.cfg.Log.Error("checkpoint failed", "unit", u.key, "stage", st, "err", err)
		return false
	}
	r.st.mu.Lock()
	switch v := rec.(type) {
	case *pipeline.Stage1:
		r.st.s1[u.key] = v
	case *pipeline.Stage2:
		r.st.s2[u.key] = v
	case *pipeline.Stage3:
		r.st.s3[u.key] = v
	}
	r.st.mu.Unlock()
	r.times[st].add(begin, time.Now())
	n := r.done[st].Add(1)
	if r.cfg.Progress != nil {
		r.cfg.Progress(st, int(n), len(r.units))
	}
	if n == int64(len(r.units)) {
		r.maybeWrite()
	}
	return true
}

// chains groups units that must run in order (the rounds of a dialogue);
// other queries are chains of one.
func (r *Runner) chains() [][]int {
	qis := make([]int, 0, len(r.byQ))
	for qi := range r.byQ {
		qis = append(qis, qi)
	}
	sort.Ints(qis)
	out := make([][]int, len(qis))
	for i, qi := range qis {
		out[i] = r.byQ[qi]
	}
	return out
}

// runStreaming moves each unit to its next stage as soon as its inputs are
// ready; chat rounds start stage 1 as soon as the previous round's stage 1
// is done, while their stages 2-3 proceed alongside.
func (r *Runner) runStreaming(ctx context.Context) error {
	last := r.cfg.Settings.Stages
	return r.eachChain(ctx, func(chain []int) {
		if r.interactive() {
			// Each round's question comes from the previous
			// round's final ranking: rounds run one after another.
			for _, i := range chain {
				if !r.step(ctx, 1, i) || (last >= 2 && !r.step(ctx, 2, i)) || (last >= 3 && !r.step(ctx, 3, i)) {
					break
				}
			}
			return
		}
		var inner sync.WaitGroup
		for _, i := range chain {
			if !r.step(ctx, 1, i) {
				break
			}
			if last < 2 {
				continue
			}
			inner.Add(1)
			go func(i int) {
				defer inner.Done()
				if r.step(ctx, 2, i) && last >= 3 {
					r.step(ctx, 3, i)
				}
			}(i)
		}
		inner.Wait()
	})
}

// runBarrier finishes each stage for every unit before the next begins.
func (r *Runner) runBarrier(ctx context.Context) error {
	for st := 1; st <= r.cfg.Settings.Stages; st++ {
		err := r.eachChain(ctx, func(chain []int) {
			if st == 1 {
				for _, i := range chain {
					if !r.step(ctx, 1, i) {
						return
					}
				}
				return
			}
			parallel.For(len(chain), len(chain), func(_, k int) { r.step(ctx, st, chain[k]) })
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eachChain calls fn for every chain, in order, with at most
// Settings.Active chains in progress at once; once ctx is done no further
// chain starts. It returns when the started ones are done.
func (r *Runner) eachChain(ctx context.Context, fn func(chain []int)) error {
	chains := r.chains()
	return parallel.ForCtx(ctx, r.cfg.Settings.Active, len(chains), func(_, c int) { fn(chains[c]) })
}
