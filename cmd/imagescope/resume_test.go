package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperEvalProcess is not a test: it runs the command line given in
// IMAGESCOPE_HELPER_ARGS (a JSON array) in a child process for the
// kill-and-resume test.
func TestHelperEvalProcess(t *testing.T) {
	raw := os.Getenv("IMAGESCOPE_HELPER_ARGS")
	if raw == "" {
		t.Skip("helper process only")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		os.Exit(3)
	}
	code := run(context.Background(), args, strings.NewReader(""), os.Stdout, os.Stderr, os.Getenv)
	os.Exit(code)
}

// traceTurns lists the instructions of every trace line.
func traceTurns(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var tl struct {
			ID          string `json:"id"`
			Instruction string `json:"instruction"`
		}
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatal(err)
		}
		out = append(out, tl.ID+": "+tl.Instruction)
	}
	return strings.Join(out, "\n")
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// TestEvalKillAndResume kills a run (SIGKILL) in the middle of stage 2 and
// resumes it: rankings, metrics and submissions must be byte-identical to an
// uninterrupted run's, and no finished model call may be repeated.
func TestEvalKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	for _, tc := range []struct {
		name, dataset, split string
		files                []string
		extra                []string
		// killAt is the checkpoint whose second line triggers the kill.
		killAt string
	}{
		{"VisDial", "VisDial", "val", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}, nil, "stage2.jsonl"},
		{"CIRR", "CIRR", "test", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json",
			"submissions/stage1.recall.json", "submissions/stage2.recall_subset.json", "submissions/stage3.recall.json", "submissions/stage3.recall_subset.json"}, nil, "stage2.jsonl"},
		// Killed after two generated turns: the resumed run continues the
		// same dialogues.
		{"VisDial-interactive", "VisDial", "val", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}, []string{"--interactive"}, "turns.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			common := append([]string{"--dataset", tc.dataset, "--data", "", "--split", tc.split, "--active", "2", "--alpha", "2"}, tc.extra...)

			// Uninterrupted reference run (own home and cache).
			ref := newEvalFixture(t, true)
			common[3] = ref.data
			refRuns := filepath.Join(ref.root, "runs")
			if out, errs, code := ref.eval(t, append(common, "--runs", refRuns)...); code != 0 {
				t.Fatalf("reference run: exit %d\n%s\n%s", code, out, errs)
			}
			refDir := runDir(t, refRuns)

			// The same run in a child process, killed during stage 2.
			f := newEvalFixture(t, true)
			f.srv.latency = 25 * time.Millisecond
			runs := filepath.Join(f.root, "runs")
			args, _ := json.Marshal(append([]string{"eval", "--config", f.cfgPath}, append(common, "--runs", runs)...))
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEvalProcess$")
			cmd.Env = append(os.Environ(), "IMAGESCOPE_HELPER_ARGS="+string(args), "IMAGESCOPE_HOME="+f.home)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			deadline := time.Now().Add(120 * time.Second)
			for time.Now().Before(deadline) {
				m, _ := filepath.Glob(filepath.Join(runs, "*", "*", "checkpoints", tc.killAt))
				if len(m) == 1 && countLines(m[0]) >= 2 {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			err := cmd.Wait()
			if !killed {
				t.Fatalf("the run ended before it could be killed (%v)\n%s", err, stderr.String())
			}
			dir := runDir(t, runs)
			if _, err := os.Stat(filepath.Join(dir, "rankings.stage3.json")); err == nil {
				t.Fatal("killed run already finished stage 3; kill earlier")
			}
			before := map[string]int{}
			f.srv.mu.Lock()
			for k, v := range f.srv.bodies {
				before[k] = v
			}
			f.srv.mu.Unlock()

			// Resume in-process.
			f.srv.latency = 0
			if out, errs, code := f.eval(t, "--resume", dir); code != 0 {
				t.Fatalf("resume: exit %d\n%s\n%s", code, out, errs)
			}
			for _, name := range tc.files {
				want, err := os.ReadFile(filepath.Join(refDir, name))
				if err != nil {
					t.Fatalf("reference %s: %v", name, err)
				}
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("resumed %s: %v", name, err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs after resume:\n got %s\nwant %s", name, got, want)
				}
			}
			if tc.extra != nil {
				// The generated dialogues are the same.
				if a, b := traceTurns(t, refDir), traceTurns(t, dir); a != b {
					t.Errorf("generated turns differ after resume:\n got %s\nwant %s", b, a)
				}
			}
			// Finished calls are not repeated: a request sent before the kill
			// may be sent again only if it was in flight when the process died
			// (at most the per-role in-flight limit of 4, for 4 roles).
			repeated := 0
			f.srv.mu.Lock()
			for k, v := range f.srv.bodies {
				if before[k] > 0 && v > before[k] {
					repeated += v - before[k]
				}
			}
			f.srv.mu.Unlock()
			if repeated > 16 {
				t.Errorf("resume repeated %d model calls", repeated)
			}
			t.Logf("repeated calls after kill: %d", repeated)
		})
	}
}

// TestEvalRoleDownResumable: with the verifier down, the run stops calling
// it, keeps stage 1 and reports the run unfinished; once the verifier is
// back, --resume completes it without redoing stage 1.
func TestEvalRoleDownResumable(t *testing.T) {
	f := newEvalFixture(t, true)
	f.srv.mu.Lock()
	f.srv.down["verifier"] = true
	f.srv.mu.Unlock()
	runs := filepath.Join(f.root, "runs")
	out, errs, code := f.eval(t, "--dataset", "CIRR", "--data", f.data, "--split", "val", "--runs", runs)
	if code == 0 {
		t.Fatalf("run with the verifier down succeeded:\n%s", out)
	}
	if !strings.Contains(errs, "resume") {
		t.Errorf("error does not say how to resume:\n%s", errs)
	}
	dir := runDir(t, runs)
	if _, err := os.Stat(filepath.Join(dir, "rankings.stage1.json")); err != nil {
		t.Errorf("stage 1 outputs lost: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rankings.stage2.json")); err == nil {
		t.Error("stage 2 written although the verifier was down")
	}
	verifierCalls := f.srv.count("verifier")
	if verifierCalls > 12 {
		t.Errorf("%d calls to a verifier that was down", verifierCalls)
	}
	reasonerCalls := f.srv.count("reasoner")
	f.srv.mu.Lock()
	f.srv.down["verifier"] = false
	f.srv.mu.Unlock()
	if out, errs, code := f.eval(t, "--resume", dir); code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "rankings.stage3.json")); err != nil {
		t.Errorf("resumed run incomplete: %v", err)
	}
	// Stage 1 is not redone: only the proposer calls (3) reach the reasoner.
	if got := f.srv.count("reasoner") - reasonerCalls; got > 3 {
		t.Errorf("resume made %d reasoner calls, want at most 3 (propositions only)", got)
	}
}

// TestEvalExtendStages: a stage-1 run resumed with --stages s1,s2,s3 ends
// with the same outputs as a run of all stages, without redoing stage 1.
func TestEvalExtendStages(t *testing.T) {
	f := newEvalFixture(t, false)
	full := filepath.Join(f.root, "full")
	if out, errs, code := f.eval(t, "--dataset", "CIRCO", "--data", f.data, "--split", "val", "--runs", full); code != 0 {
		t.Fatalf("full run: %d\n%s\n%s", code, out, errs)
	}
	staged := filepath.Join(f.root, "staged")
	if out, errs, code := f.eval(t, "--dataset", "CIRCO", "--data", f.data, "--split", "val", "--runs", staged, "--stages", "s1"); code != 0 {
		t.Fatalf("stage-1 run: %d\n%s\n%s", code, out, errs)
	}
	dir := runDir(t, staged)
	if _, err := os.Stat(filepath.Join(dir, "rankings.stage2.json")); err == nil {
		t.Fatal("stage 2 ran although only s1 was asked for")
	}
	reasoner := f.srv.count("reasoner")
	if _, _, code := f.eval(t, "--resume", dir, "--stages", "s1"); code != 0 {
		t.Fatal("resume of a finished run failed")
	}
	if _, errs, code := f.eval(t, "--resume", dir, "--tau", "0.3"); code != 2 || !strings.Contains(errs, "--tau cannot change") {
		t.Errorf("changing tau on resume: exit %d %s", code, errs)
	}
	if out, errs, code := f.eval(t, "--resume", dir, "--stages", "s1,s2,s3"); code != 0 {
		t.Fatalf("extend: %d\n%s\n%s", code, out, errs)
	}
	if got := f.srv.count("reasoner") - reasoner; got != 3 {
		t.Errorf("extending made %d reasoner calls, want 3 (propositions only; the cache is off)", got)
	}
	for _, name := range []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"} {
		a, _ := os.ReadFile(filepath.Join(runDir(t, full), name))
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between the full and the extended run", name)
		}
	}
}

// TestEvalRidesOutFaults: VisDial, CIRR and CIRCO fixture runs against a
// server that fails 35% of attempts (20% HTTP 500, 10% 429 with
// Retry-After, 5% cut-off bodies) finish in one pass with every unit done
// and outputs byte-identical to a clean run's, and the counters of
// report.json and llm_stats.json agree.
func TestEvalRidesOutFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("three fixture runs twice")
	}
	for _, tc := range []struct {
		dataset string
		files   []string
	}{
		{"VisDial", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}},
		{"CIRR", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}},
		{"CIRCO", []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}},
	} {
		t.Run(tc.dataset, func(t *testing.T) {
			args := []string{"--dataset", tc.dataset, "--data", "", "--split", "val", "--alpha", "2"}
			clean := newEvalFixture(t, false)
			args[3] = clean.data
			if out, errs, code := clean.eval(t, append(args, "--runs", filepath.Join(clean.root, "runs"))...); code != 0 {
				t.Fatalf("clean run: exit %d\n%s\n%s", code, out, errs)
			}
			cleanDir := runDir(t, filepath.Join(clean.root, "runs"))

			f := newEvalFixture(t, false)
			f.srv.mu.Lock()
			f.srv.faulty = true
			f.srv.mu.Unlock()
			f.srv.downAfter = 3 * time.Minute
			// The configuration was written before the window changed.
			if err := os.WriteFile(f.cfgPath, []byte(f.srv.configYAML(f.home, f.clipDir, false)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, errs, code := f.eval(t, append(args, "--runs", filepath.Join(f.root, "runs"))...)
			if code != 0 {
				t.Fatalf("faulty run: exit %d\n%s\n%s", code, out, errs)
			}
			dir := runDir(t, filepath.Join(f.root, "runs"))
			for _, name := range tc.files {
				want, err := os.ReadFile(filepath.Join(cleanDir, name))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from the clean run's", name)
				}
			}
			f.srv.mu.Lock()
			faults := map[string]int{}
			for k, v := range f.srv.faults {
				faults[k] = v
			}
			f.srv.mu.Unlock()
			if faults["500"] == 0 || faults["429"] == 0 || faults["cut"] == 0 {
				t.Errorf("faults injected: %v", faults)
			}
			type counters struct {
				Failures  int64 `json:"failures"`
				Retries   int64 `json:"retries"`
				CutOff    int64 `json:"cut_off"`
				CacheHits int64 `json:"cache_hits"`
				Shared    int64 `json:"shared_in_flight"`
				Truncated int64 `json:"truncated"`
			}
			var stats map[string]counters
			b, err := os.ReadFile(filepath.Join(dir, "llm_stats.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &stats); err != nil {
				t.Fatal(err)
			}
			var retries, cut, failures int64
			for _, s := range stats {
				retries, cut, failures = retries+s.Retries, cut+s.CutOff, failures+s.Failures
			}
			if failures != 0 || cut != int64(faults["cut"]) || retries != int64(faults["500"]+faults["429"]+faults["cut"]) {
				t.Errorf("llm_stats: retries %d cut-off %d failures %d; injected %v", retries, cut, failures, faults)
			}
			var rep struct {
				ModelServers map[string]counters `json:"model_servers"`
				Unfinished   int                 `json:"unfinished"`
			}
			if b, err = os.ReadFile(filepath.Join(dir, "report.json")); err == nil {
				err = json.Unmarshal(b, &rep)
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Unfinished != 0 || len(rep.ModelServers) != len(stats) {
				t.Errorf("report: %d unfinished, model servers %v", rep.Unfinished, rep.ModelServers)
			}
			for role, s := range stats {
				if rep.ModelServers[role] != s {
					t.Errorf("%s: report.json says %+v, llm_stats.json %+v", role, rep.ModelServers[role], s)
				}
			}
			t.Logf("%s: injected %v, retried %d", tc.dataset, faults, retries)
		})
	}
}

// TestEvalKillEarlyResumes kills eval (SIGKILL) right after its run folder
// appears and while the gallery is being captioned, before any query ran:
// the folder already holds config.json and the prompts, and --resume ends
// with the outputs of an uninterrupted run.
func TestEvalKillEarlyResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	common := []string{"--dataset", "CIRCO", "--data", "", "--split", "val", "--active", "2", "--alpha", "2"}
	ref := newEvalFixture(t, true)
	common[3] = ref.data
	refRuns := filepath.Join(ref.root, "runs")
	if out, errs, code := ref.eval(t, append(common, "--runs", refRuns)...); code != 0 {
		t.Fatalf("reference run: exit %d\n%s\n%s", code, out, errs)
	}
	refDir := runDir(t, refRuns)
	files := []string{"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "metrics.json"}
	for _, tc := range []struct {
		name   string
		killed func(f *evalFixture, runs string) bool
	}{
		{"folder-created", func(f *evalFixture, runs string) bool {
			m, _ := filepath.Glob(filepath.Join(runs, "*", "*", "config.json"))
			return len(m) == 1
		}},
		{"indexing", func(f *evalFixture, runs string) bool { return f.srv.count("captioner") >= 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newEvalFixture(t, true)
			f.srv.latency = 60 * time.Millisecond
			runs := filepath.Join(f.root, "runs")
			args, _ := json.Marshal(append([]string{"eval", "--config", f.cfgPath}, append(common, "--runs", runs)...))
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEvalProcess$")
			cmd.Env = append(os.Environ(), "IMAGESCOPE_HELPER_ARGS="+string(args), "IMAGESCOPE_HOME="+f.home)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
				if tc.killed(f, runs) {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
					break
				}
			}
			err := cmd.Wait()
			if !killed {
				t.Fatalf("the run ended before it could be killed (%v)\n%s", err, stderr.String())
			}
			if n := f.srv.count("reasoner"); n > 0 {
				t.Fatalf("killed too late: %d reasoner calls (queries had started)", n)
			}
			dir := runDir(t, runs)
			for _, p := range []string{"config.json", "prompts"} {
				if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
					t.Fatalf("killed run folder lacks %s: %v", p, err)
				}
			}
			f.srv.latency = 0
			if out, errs, code := f.eval(t, "--resume", dir); code != 0 {
				t.Fatalf("resume: exit %d\n%s\n%s", code, out, errs)
			}
			for _, name := range files {
				want, err := os.ReadFile(filepath.Join(refDir, name))
				if err != nil {
					t.Fatalf("reference %s: %v", name, err)
				}
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("resumed %s: %v", name, err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs after resume", name)
				}
			}
		})
	}
}
