package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/internal/testutil"
)

// die closes the scripted model server: every connection is refused.
func (s *scriptedServer) die() {
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// revive starts the scripted model server again on its old address.
func (s *scriptedServer) revive(t *testing.T) {
	t.Helper()
	addr := strings.TrimPrefix(s.URL, "http://")
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("revive the model server on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(s.Config.Handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s.Server = srv
	t.Cleanup(srv.Close)
}

type serveAnswer struct {
	Results []struct{ Name string } `json:"results"`
	Stages  []struct {
		Name, Status, Reason string
	} `json:"stages"`
	Degraded []struct{ Stage, Reason string } `json:"degraded"`
}

// TestServeHealsAfterModelServerRestart: with the model server killed
// under a running serve, searches answer degraded with the reason, cached
// queries answer fully, /readyz and /api/info show the open breakers, and
// once the server is back full answers resume within one cool-down.
func TestServeHealsAfterModelServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("serve with a model server that dies")
	}
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	dir := t.TempDir()
	for i, c := range []color.NRGBA{{220, 30, 30, 255}, {30, 60, 220, 255}, {30, 170, 50, 255}} {
		writeServeTestPNG(t, filepath.Join(dir, fmt.Sprintf("shape%d.png", i)), c)
	}
	home := t.TempDir()
	srv := newScriptedServer(t)
	const cooldown = 400 * time.Millisecond
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "home: %s\nclip:\n  model: %s\n  threads: 1\nroles:\n", home, model)
	for _, r := range []string{"captioner", "reasoner", "verifier", "evaluator"} {
		fmt.Fprintf(&cfg, "  %s:\n    endpoints: [%s/v1]\n    model: %s\n    retries: 1\n    timeout: 10s\n    cooldown: %v\n    backoff: 5ms\n", r, srv.URL, r, cooldown)
	}
	cfgPath := filepath.Join(home, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "IMAGESCOPE_HOME" {
			return home
		}
		return ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, _, stop := startServe(t, ctx, getenv, []string{"serve", "--config", cfgPath, "--gallery", dir, "--addr", "127.0.0.1:0"})

	search := func(text string) serveAnswer {
		t.Helper()
		resp, err := http.Post(base+"api/search", "application/json", strings.NewReader(`{"text":"`+text+`","limit":3}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var a serveAnswer
		if resp.StatusCode != 200 || json.Unmarshal(b, &a) != nil || len(a.Results) == 0 {
			t.Fatalf("search %q: %d %s", text, resp.StatusCode, b)
		}
		return a
	}
	ready := func() (int, string) {
		resp, err := http.Get(base + "readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	full := search("a red shape")
	if len(full.Degraded) != 0 {
		t.Fatalf("degraded with the server up: %+v", full.Degraded)
	}
	if code, body := ready(); code != 200 {
		t.Fatalf("readyz with the server up: %d %s", code, body)
	}

	srv.die()
	t0 := time.Now()
	deg := search("a blue shape")
	if len(deg.Degraded) == 0 || deg.Stages[0].Status != "skipped" || !strings.Contains(deg.Stages[0].Reason, "raw query text") {
		t.Fatalf("no degraded answer during the outage: %+v", deg)
	}
	t.Logf("degraded answer in %v: %+v", time.Since(t0), deg.Degraded)
	// The breakers open: the next uncached search fails over at once.
	search("a green shape")
	if code, body := ready(); code != 503 || !strings.Contains(body, `"open"`) {
		t.Errorf("readyz during the outage: %d %s", code, body)
	}
	resp, err := http.Get(base + "api/info")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(info, []byte(`"state":"open"`)) || !bytes.Contains(info, []byte("refused")) || !bytes.Contains(info, []byte("next_probe")) {
		t.Errorf("info does not show the open breaker: %s", info)
	}
	// A cached query answers fully.
	if again := search("a red shape"); len(again.Degraded) != 0 || fmt.Sprint(again.Results) != fmt.Sprint(full.Results) {
		t.Errorf("cached query during the outage: %+v (want %+v)", again, full)
	}

	srv.revive(t)
	back := time.Now()
	for {
		a := search("a blue shape")
		if len(a.Degraded) == 0 {
			t.Logf("full answers again %v after the restart (cool-down %v)", time.Since(back), cooldown)
			break
		}
		if time.Since(back) > cooldown+2*time.Second {
			t.Fatalf("still degraded %v after the server came back: %+v", time.Since(back), a.Degraded)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := ready(); code != 200 {
		t.Errorf("readyz after the restart: %d %s", code, body)
	}
	stop()
}
