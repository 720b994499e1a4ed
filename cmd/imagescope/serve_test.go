package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

func writeServeTestPNG(t *testing.T, path string, c color.NRGBA) {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 40, 30))
	for y := range 30 {
		for x := range 40 {
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestServeCommand(t *testing.T) {
	model := testutil.CLIP(t, "tiny-clip-quickgelu")
	dir := t.TempDir()
	for i, n := range []string{"red.png", "green.png", "sub/blue.png"} {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeServeTestPNG(t, p, color.NRGBA{uint8(200 * (i % 2)), uint8(80 * i), 50, 255})
	}
	home := t.TempDir()
	getenv := func(k string) string {
		switch k {
		case "IMAGESCOPE_HOME":
			return home
		case "IMAGESCOPE_TOKEN":
			return "tok-123"
		}
		return ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, startup, stop := startServe(t, ctx, getenv, []string{"serve", "--gallery", dir, "--clip", model, "--threads", "1", "--addr", "127.0.0.1:0"})
	if strings.Contains(startup, "tok-123") {
		t.Fatal("token printed")
	}

	// The token from the environment guards the API.
	resp, err := http.Post(base+"api/search", "application/json", strings.NewReader(`{"text":"a red square"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("without token: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"api/search", strings.NewReader(`{"text":"a red square","limit":2}`))
	req.Header.Set("Authorization", "Bearer tok-123")
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Results []struct{ Name string } `json:"results"`
		Stages  []struct{ Name, Status, Reason string }
	}
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(res.Results) != 2 {
		t.Fatalf("search: %d %v %+v", resp.StatusCode, err, res)
	}
	for _, st := range res.Stages {
		if st.Name != "retrieve" && (st.Status != "skipped" || st.Reason == "") {
			t.Errorf("stage %+v: want skipped with a reason (no roles configured)", st)
		}
	}
	req, _ = http.NewRequest("GET", base+"api/images/sub/blue.png", nil)
	req.Header.Set("Authorization", "Bearer tok-123")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("image: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	stop()
	// The folder's DB lives under the home directory.
	if m, _ := filepath.Glob(filepath.Join(home, "db", "folder_*.db")); len(m) != 1 {
		t.Fatalf("folder DB: %v", m)
	}
}

func TestServeUsage(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{"serve"},
		{"serve", "--db", "a.db", "--gallery", "dir"},
		{"serve", "--db", "a.db", "--addr", "0.0.0.0:8080"},
		{"serve", "--db", "a.db", "--addr", "nonsense"},
		{"serve", "--db", "a.db", "--max-stage", "4"},
		{"serve", "--db", "a.db", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, strings.NewReader(""), &out, &errb, none); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	run(context.Background(), []string{"serve", "--db", "a.db", "--addr", "0.0.0.0:8080"}, strings.NewReader(""), &out, &errb, none)
	if !strings.Contains(errb.String(), "--token") {
		t.Errorf("non-loopback error does not mention the token: %s", errb.String())
	}
}
