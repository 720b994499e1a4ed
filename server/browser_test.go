package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium/Chrome binary ("" when none is installed).
func chromiumPath() string {
	for _, p := range []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is where screenshots go: $IMAGESCOPE_TEST_ARTIFACTS (created
// if needed) or a test temp dir.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("IMAGESCOPE_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("artifact dir: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// browser starts headless Chromium and returns a tab context.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := chromiumPath()
	if exe == "" {
		t.Skip("browser test skipped: no Chromium found (install it with: apt-get install -y chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	tctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return tctx
}

// waitJS polls a JavaScript condition until it is true (bounded by the
// browser context's deadline).
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s (%s): %v (last error %v)", what, expr, ctx.Err(), err)
		case <-time.After(40 * time.Millisecond):
		}
	}
}

func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// submitAndWait clears the results, submits the form and waits until the
// new results are shown.
func submitAndWait(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.getElementById('results').textContent = ''`),
		chromedp.Click(chromedp.ID("go")),
	); err != nil {
		t.Fatalf("%s: submit: %v", what, err)
	}
	waitJS(t, ctx, what+" results", `document.querySelectorAll('#results li.result').length > 0 && !document.getElementById('go').disabled`)
}

func TestBrowserUI(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	e := newEnv(t, nil)
	dir := artifactDir(t)
	upload := filepath.Join(t.TempDir(), "my reference.png")
	writePNG(t, upload, 160, 120)

	// 1. Text search.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.ts.URL),
		chromedp.WaitVisible(chromedp.ID("search-form")),
	); err != nil {
		t.Fatalf("open UI: %v", err)
	}
	waitJS(t, ctx, "info", `document.getElementById('desc').textContent.includes('8 images')`)
	// Unconfigured stages show as skipped with the reason before any search.
	if got := evalString(t, ctx, `document.querySelector('#stages li[data-stage=evaluate]').textContent`); !strings.Contains(got, "evaluator role not configured") {
		t.Fatalf("evaluate stage shows %q", got)
	}
	e.fake.evaluate.Store(true)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), "dog beach")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "text search")
	names := evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result .name')).map(e => e.textContent).join(',')`)
	if !strings.HasPrefix(names, "red_dog,dog_on_beach") { // the fake's evaluator promoted its 2nd candidate
		t.Fatalf("result names %q", names)
	}
	waitJS(t, ctx, "stages done", `['reason','retrieve','verify','evaluate'].every(s => document.querySelector('#stages li[data-stage='+s+']').dataset.status === 'done')`)
	waitJS(t, ctx, "thumbnails", `Array.from(document.querySelectorAll('#results img')).slice(0, 3).every(i => i.complete && i.naturalWidth > 0)`)
	if got := evalString(t, ctx, `document.getElementById('summary-body').textContent`); !strings.Contains(got, "a photo of dog beach") || !strings.Contains(got, "Is there a dog?") {
		t.Fatalf("summary %q", got)
	}
	shoot(t, ctx, dir, "1-text-results.png")

	// Detail view with the explanation: descriptions, propositions with the
	// verifier's answer, the evaluator's verdict.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#results li.result:nth-child(2) button`)),
		chromedp.WaitVisible(chromedp.ID("detail")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "detail image", `document.getElementById('detail-img').complete && document.getElementById('detail-img').naturalWidth > 0`)
	ex := evalString(t, ctx, `document.getElementById('detail-explain').innerText`)
	for _, want := range []string{"a photo of dog beach", "Is there a dog?", "Verifier said", "No — does not satisfy", "Final rank 2; rank after retrieval 1"} {
		if !strings.Contains(ex, want) {
			t.Fatalf("explanation lacks %q:\n%s", want, ex)
		}
	}
	shoot(t, ctx, dir, "2-detail.png")
	// Keyboard: Escape closes the dialog and focus returns to the card.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\x1b")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dialog closed", `!document.getElementById('detail').open && document.activeElement.classList.contains('card')`)

	// 2. Composed search with an uploaded image.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-composed")),
		chromedp.WaitVisible(chromedp.ID("ref-panel")),
		chromedp.SetUploadFiles(chromedp.ID("ref-file"), []string{upload}),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "reference preview", `!document.getElementById('ref-img').hidden && document.getElementById('ref-img').naturalWidth === 160`)
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`),
		chromedp.SendKeys(chromedp.ID("q"), "make the cat blue"),
	); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "composed search")
	qs := e.fake.queries()
	last := qs[len(qs)-1]
	if last.ReferenceImage == nil || last.ReferenceImage.Bounds().Dx() != 160 || last.Text != "make the cat blue" {
		t.Fatalf("composed query = %+v", last)
	}
	if got := evalString(t, ctx, `document.getElementById('summary-body').textContent`); !strings.Contains(got, "Retention") {
		t.Fatalf("composed summary %q", got)
	}
	shoot(t, ctx, dir, "3-composed.png")

	// 3. Two-turn chat (stage 3 skipped this time).
	e.fake.evaluate.Store(false)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-chat")),
		chromedp.WaitVisible(chromedp.ID("chat-panel")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`),
		chromedp.SendKeys(chromedp.ID("q"), "a red dog"),
	); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "chat turn 1")
	waitJS(t, ctx, "chat log 1", `document.querySelectorAll('#chat-log li').length === 2`)
	qs = e.fake.queries()
	if last = qs[len(qs)-1]; last.Mode() != "chat" || last.Text != "a red dog" || len(last.Dialogue) != 0 {
		t.Fatalf("chat turn 1 query = %+v", last)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), "is it on a beach? yes")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "chat turn 2")
	waitJS(t, ctx, "chat log 2", `document.querySelectorAll('#chat-log li').length === 4`)
	qs = e.fake.queries()
	last = qs[len(qs)-1]
	if last.Mode() != "chat" || last.Text != "is it on a beach? yes" || fmt.Sprint(last.Dialogue) != "[a red dog]" || last.ReferenceImage != nil {
		t.Fatalf("chat turn 2 query = %+v", last)
	}
	log := evalString(t, ctx, `document.getElementById('chat-log').innerText`)
	if !strings.Contains(log, "a red dog") || !strings.Contains(log, "Best match now:") {
		t.Fatalf("chat log %q", log)
	}
	if got := evalString(t, ctx, `document.querySelector('#stages li[data-stage=evaluate]').dataset.status`); got != "skipped" {
		t.Fatalf("evaluate stage status %q", got)
	}
	// The explanation says why there is no verdict.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#results li.result:first-child button`)),
		chromedp.WaitVisible(chromedp.ID("detail")),
	); err != nil {
		t.Fatal(err)
	}
	if ex := evalString(t, ctx, `document.getElementById('detail-explain').innerText`); !strings.Contains(ex, "stage skipped: evaluator role not configured") {
		t.Fatalf("chat explanation:\n%s", ex)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("detail-close"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dialog closed", `!document.getElementById('detail').open`)
	shoot(t, ctx, dir, "4-chat.png")

	// 4. A phone-sized screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	if w := evalString(t, ctx, `String(document.documentElement.scrollWidth <= window.innerWidth)`); w != "true" {
		t.Errorf("page scrolls sideways on a phone")
	}
	shoot(t, ctx, dir, "5-phone.png")
}

// TestBrowserToken checks the UI against a server that wants a token: it
// asks for it, then loads protected thumbnails through authorised fetches.
func TestBrowserToken(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	e := newEnv(t, func(c *Config) { c.Token = "browser-token" })
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.ts.URL),
		chromedp.WaitVisible(chromedp.ID("auth-token")),
		chromedp.SendKeys(chromedp.ID("auth-token"), "browser-token"),
		chromedp.Click(chromedp.ID("auth-ok")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "info", `document.getElementById('desc').textContent.includes('8 images')`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), "cat")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "token search")
	waitJS(t, ctx, "blob thumbnails", `Array.from(document.querySelectorAll('#results img')).slice(0, 2).every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)`)
	shoot(t, ctx, artifactDir(t), "6-token.png")
}
