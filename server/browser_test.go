package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imagescope/imagescope/internal/testutil"
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
		testutil.Unavailable(t, "browser test: no Chromium found (install it with: apt-get install -y chromium)")
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

// settle waits until cards that slide to a new place have arrived (a
// click aimed at a moving card could land on its neighbour).
func settle(t *testing.T, ctx context.Context) {
	t.Helper()
	waitJS(t, ctx, "animations to end", `document.getAnimations().filter(a => a.effect && a.effect.getTiming().iterations !== Infinity).length === 0 && !document.querySelector(".moved-now")`)
}

func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	settle(t, ctx)
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
	settle(t, ctx)
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
	for _, want := range []string{"Why it is #2", "Is there a dog?", "Verifier said", "Judged no: The candidate does not show dog beach.", "Rank after retrieval 1"} {
		if !strings.Contains(ex, want) {
			t.Fatalf("explanation lacks %q:\n%s", want, ex)
		}
	}
	// The explanation holds this image's facts, not the query's
	// descriptions again, and the evaluator's decision once.
	for _, unwanted := range []string{"a photo of dog beach", "ANSWER:"} {
		if strings.Contains(ex, unwanted) {
			t.Fatalf("explanation holds %q:\n%s", unwanted, ex)
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

	// Composed with a reference picked from the gallery (keyboard: the
	// picker's cards are buttons).
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("ref-pick")), chromedp.WaitVisible(chromedp.ID("picker"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "picker grid", `document.querySelectorAll('#picker-grid button.card').length === 8`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("picker-q"), "blue")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "picker filtered", `document.querySelectorAll('#picker-grid button.card').length === 1`)
	shoot(t, ctx, dir, "3b-picker.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#picker-grid button.card[data-name="blue_cat"]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "picked reference", `document.getElementById('ref-label').textContent === 'Gallery: blue_cat' && !document.getElementById('picker').open`)
	submitAndWait(t, ctx, "composed search with a gallery reference")
	qs = e.fake.queries()
	if last = qs[len(qs)-1]; last.Reference != "blue_cat" || last.ReferenceImage != nil {
		t.Fatalf("picked-reference query = %+v", last)
	}

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

// demoGallery returns real photos for the browser test's gallery when
// they are on the machine: $IMAGESCOPE_DEMO_PHOTOS, or the CC0 /
// public-domain sample photos of Debian's python3-skimage. Otherwise it
// generates images. The captions are ours.
func demoGallery(t *testing.T) []demoImage {
	t.Helper()
	photos := []demoImage{
		{"astronaut", "astronaut.png", "an astronaut in a white space suit in front of a flag"},
		{"chelsea", "chelsea.png", "a tabby cat looking to the side"},
		{"coffee", "coffee.png", "a cup of coffee on a saucer with a spoon"},
		{"rocket", "rocket.jpg", "a rocket on a launch pad under a blue sky"},
		{"camera", "camera.png", "a man holding a camera on a tripod in black and white"},
		{"motorcycle", "motorcycle_left.png", "a motorcycle parked in a garage"},
		{"hubble", "hubble_deep_field.jpg", "galaxies in deep space"},
		{"brick", "brick.png", "a grey brick wall"},
	}
	dirs := []string{os.Getenv("IMAGESCOPE_DEMO_PHOTOS"), "/usr/lib/python3/dist-packages/skimage/data"}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		var out []demoImage
		for _, p := range photos {
			if _, err := os.Stat(filepath.Join(d, p.path)); err == nil {
				out = append(out, demoImage{p.name, filepath.Join(d, p.path), p.caption})
			}
		}
		if len(out) == len(photos) {
			t.Logf("gallery: demo photos from %s", d)
			return out
		}
	}
	t.Logf("gallery: generated images (set IMAGESCOPE_DEMO_PHOTOS to a folder with python3-skimage's sample photos for real ones)")
	dir := t.TempDir()
	var out []demoImage
	for i, p := range photos {
		path := filepath.Join(dir, p.name+".png")
		writePNG(t, path, 200+20*i, 150)
		out = append(out, demoImage{p.name, path, p.caption})
	}
	return out
}

// TestBrowserRealPipeline drives the UI over the real pipeline: tiny CLIP
// over a photo gallery and scripted model roles (the verifier answers from
// the captions of the images it recognises).
func TestBrowserRealPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	gal := demoGallery(t)
	replies := map[string][2]string{
		"a cat looking to the side": {
			"```json\n{\"step1\": [[\"Addition\", \"a tabby cat\"]], \"step2\": [\"a cat\", \"a tabby cat\", \"a tabby cat looking to the side indoors\"]}\n```",
			`{"step1": ["There is a cat.", "There is no rocket."], "step2": [["Is there a cat?", "True"], ["Is there a rocket?", "False"]]}`},
		"make it a rocket launch": {
			"```json\n{\"step1\": [[\"Modification\", \"replace the astronaut with a rocket\"], [\"Retention\", \"the blue sky\"]], \"step2\": [\"a rocket\", \"a rocket under a blue sky\", \"a rocket on a launch pad under a blue sky\"]}\n```",
			`{"step1": ["There is a rocket.", "There is no astronaut."], "step2": [["Is there a rocket?", "True"], ["Is there an astronaut?", "False"]]}`},
		"something to drink": {
			"```json\n{\"step1\": [[\"Addition\", \"a drink\"]], \"step2\": [\"a cup with a drink\"]}\n```",
			`{"step1": ["There is a cup."], "step2": [["Is there a cup?", "True"]]}`},
		"is it hot? yes, coffee": {
			"```json\n{\"step1\": [[\"Addition\", \"hot coffee\"]], \"step2\": [\"a hot cup of coffee on a saucer\"]}\n```",
			`{"step1": ["There is a cup.", "It is coffee."], "step2": [["Is there a cup?", "True"], ["Is there coffee?", "True"]]}`},
	}
	e := newRealEnvWith(t, true, gal, len(gal), replies)
	dir := artifactDir(t)

	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(e.ts.URL),
		chromedp.WaitVisible(chromedp.ID("search-form")),
		chromedp.SendKeys(chromedp.ID("q"), "a cat looking to the side"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "info", `document.getElementById('desc').textContent.includes('8 images')`)
	submitAndWait(t, ctx, "real text search")
	waitJS(t, ctx, "stages done", `['reason','retrieve','verify','evaluate'].every(s => document.querySelector('#stages li[data-stage='+s+']').dataset.status === 'done')`)
	waitJS(t, ctx, "thumbnails", `Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)`)
	// Stage 2 put the one image with a cat (and no rocket) first among the
	// verified; stage 3 may have moved another to the front.
	names := evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result .name')).map(e => e.textContent).join(',')`)
	if !strings.Contains(strings.Join(strings.Split(names, ",")[:2], ","), "chelsea") {
		t.Fatalf("ranking %s: chelsea not in the top 2", names)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#results button.card[data-name="chelsea"]`)),
		chromedp.WaitVisible(chromedp.ID("detail")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "detail image", `document.getElementById('detail-img').complete && document.getElementById('detail-img').naturalWidth > 0`)
	ex := evalString(t, ctx, `document.getElementById('detail-explain').innerText`)
	for _, want := range []string{"Caption\na tabby cat looking to the side", "Image vs caption", "Retrieve: #", "Verify: #", "agreed with 2 of 2 propositions", "Is there a cat?", "Is there a rocket?", "Score 2 of 2", "Judged"} {
		if !strings.Contains(ex, want) {
			t.Fatalf("explanation lacks %q:\n%s", want, ex)
		}
	}
	if strings.Contains(ex, "ANSWER:") {
		t.Fatalf("the evaluator's decision line is repeated:\n%s", ex)
	}
	shoot(t, ctx, dir, "real-1-detail.png")
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\x1b")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dialog closed", `!document.getElementById('detail').open`)
	shoot(t, ctx, dir, "real-2-text.png")

	// Composed: upload a photo and say what to change.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-composed")),
		chromedp.SetUploadFiles(chromedp.ID("ref-file"), []string{gal[0].path}),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`),
		chromedp.SendKeys(chromedp.ID("q"), "make it a rocket launch"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "reference preview", `document.getElementById('ref-img').naturalWidth > 0`)
	submitAndWait(t, ctx, "real composed search")
	if got := evalString(t, ctx, `document.getElementById('summary-body').textContent`); !strings.Contains(got, "replace the astronaut with a rocket") {
		t.Fatalf("composed summary:\n%s", got)
	}
	shoot(t, ctx, dir, "real-3-composed.png")

	// Chat, two turns.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-chat")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`),
		chromedp.SendKeys(chromedp.ID("q"), "something to drink"),
	); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "real chat turn 1")
	waitJS(t, ctx, "chat log 1", `document.querySelectorAll('#chat-log li:not(.asked)').length === 2`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), "is it hot? yes, coffee")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "real chat turn 2")
	waitJS(t, ctx, "chat log 2", `document.querySelectorAll('#chat-log li:not(.asked)').length === 4`)
	if got := evalString(t, ctx, `document.getElementById('summary-body').textContent`); !strings.Contains(got, "a hot cup of coffee on a saucer") || !strings.Contains(got, "continuing from the kept state") {
		t.Fatalf("chat summary:\n%s", got)
	}
	names = evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result .name')).map(e => e.textContent).join(',')`)
	if !strings.Contains(strings.Join(strings.Split(names, ",")[:2], ","), "coffee") {
		t.Fatalf("chat ranking %s: coffee not in the top 2", names)
	}
	shoot(t, ctx, dir, "real-4-chat.png")

	// Progress while stages run, and Stop: the verifier hangs until the
	// search is stopped, which cancels its calls.
	e.models.blockVerif.Store(true)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-text")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`),
		chromedp.SendKeys(chromedp.ID("q"), "a cat looking to the side"),
		chromedp.Click(chromedp.ID("go")),
	); err != nil {
		t.Fatal(err)
	}
	<-e.models.verifIn
	waitJS(t, ctx, "verify running", `document.querySelector('#stages li[data-stage=verify]').dataset.status === 'running' && document.querySelector('#stages li[data-stage=retrieve]').dataset.status === 'done' && !document.getElementById('stop').hidden`)
	shoot(t, ctx, dir, "real-5-progress.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("stop"))); err != nil {
		t.Fatal(err)
	}
	<-e.models.canceled // the verifier call in flight was canceled
	waitJS(t, ctx, "stopped", `document.getElementById('status').textContent === 'Stopped.' && !document.getElementById('go').disabled`)
}

// firstRowVisible is true when the whole first result card (and its More
// like this button) lies inside the viewport.
const firstRowVisible = `(() => { const li = document.querySelector('#results li.result'); if (!li) return false; const r = li.getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; })()`

// TestBrowserProgressive drives the UI over the real pipeline with a
// verifier that holds its answers: the first results show before the
// verifier finishes, marked as being refined, and the same cards then move
// to their refined places. It then checks the query in the URL surviving a
// reload, More like this from a result and from a pasted image, each mode
// keeping its own query, and the first row above the fold on a desktop and
// a phone screen.
func TestBrowserProgressive(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	gal := demoGallery(t)
	replies := map[string][2]string{
		"a cat looking to the side": {
			"```json\n{\"step1\": [[\"Addition\", \"a tabby cat\"]], \"step2\": [\"a cat\", \"a tabby cat\", \"a tabby cat looking to the side indoors\"]}\n```",
			`{"step1": ["There is a cat.", "There is no rocket."], "step2": [["Is there a cat?", "True"], ["Is there a rocket?", "False"]]}`},
	}
	e := newRealEnvWith(t, true, gal, len(gal), replies)
	dir := artifactDir(t)
	gate := make(chan struct{})
	e.models.verifGate.Store(&gate)

	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(e.ts.URL),
		chromedp.WaitVisible(chromedp.ID("search-form")),
		chromedp.SendKeys(chromedp.ID("q"), "a cat looking to the side"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "info", `document.getElementById('desc').textContent.includes('8 images')`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("go"))); err != nil {
		t.Fatal(err)
	}
	// First results while the verifier is still held.
	waitJS(t, ctx, "first results", `document.querySelectorAll('#results li.result').length === 8 && document.getElementById('results').classList.contains('refining') && !document.getElementById('refining').hidden`)
	if got := evalString(t, ctx, `document.querySelector('#stages li[data-stage=verify]').dataset.status`); got != "running" {
		t.Fatalf("verify stage %q while the first results show", got)
	}
	waitJS(t, ctx, "first thumbnails", `Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)`)
	waitJS(t, ctx, "first row above the fold (1280x800)", firstRowVisible)
	first := evalString(t, ctx, `(window.firstCards = Array.from(document.querySelectorAll('#results li.result'))).map(li => li.dataset.name).join(',')`)
	shoot(t, ctx, dir, "prog-1-first-results.png")

	// The verifier answers: the same cards re-order in place.
	close(gate)
	waitJS(t, ctx, "refined", `!document.getElementById('results').classList.contains('refining') && document.getElementById('refining').hidden && ['verify','evaluate'].every(s => document.querySelector('#stages li[data-stage='+s+']').dataset.status === 'done')`)
	final := evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result')).map(li => li.dataset.name).join(',')`)
	if final == first {
		t.Fatalf("the ranking did not change after verification: %s", final)
	}
	if got := evalString(t, ctx, `String(Array.from(document.querySelectorAll('#results li.result')).every(li => window.firstCards.includes(li)))`); got != "true" {
		t.Fatalf("the refined results are new cards, not the first ones moved in place")
	}
	if got := evalString(t, ctx, `document.getElementById('results').innerText`); !strings.Contains(got, "was ") {
		t.Fatalf("no card says where it was: %s", got)
	}
	if !strings.HasPrefix(final, "chelsea,") && !strings.Contains(strings.Join(strings.Split(final, ",")[:2], ","), "chelsea") {
		t.Fatalf("refined ranking %s: chelsea not in the top 2", final)
	}
	if open := evalString(t, ctx, `String(document.getElementById('summary').open)`); open != "false" {
		t.Fatalf("the explanation panel starts open")
	}
	waitJS(t, ctx, "first row above the fold after refining", firstRowVisible)
	shoot(t, ctx, dir, "prog-2-refined.png")

	// The query is in the URL, and a reload restores it and searches again.
	if u := evalString(t, ctx, `location.search`); !strings.Contains(u, "q=a+cat+looking+to+the+side") {
		t.Fatalf("URL query %q", u)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "restored query", `document.getElementById('q').value === 'a cat looking to the side'`)
	waitJS(t, ctx, "results after reload", `document.querySelectorAll('#results li.result').length === 8 && !document.getElementById('go').disabled && !document.getElementById('results').classList.contains('refining')`)
	textNames := evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result')).map(li => li.dataset.name).join(',')`)
	if textNames != final {
		t.Fatalf("after reload %s, before %s", textNames, final)
	}

	// More like this from a result: no text, the image's neighbours, the
	// image itself left out, stages 2 and 3 skipped.
	top := strings.Split(final, ",")[0]
	settle(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#results li.result[data-name="`+top+`"] button.similar`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "similar results", `document.getElementById('mode-composed').getAttribute('aria-selected') === 'true' && document.querySelectorAll('#results li.result').length === 7 && !document.getElementById('go').disabled`)
	similar := evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result')).map(li => li.dataset.name).join(',')`)
	if strings.Contains(","+similar+",", ","+top+",") {
		t.Fatalf("more like %s lists it: %s", top, similar)
	}
	if got := evalString(t, ctx, `document.querySelector('#stages li[data-stage=verify]').textContent`); !strings.Contains(got, "no text to verify") {
		t.Fatalf("verify stage after more like this: %q", got)
	}
	if u := evalString(t, ctx, `location.search`); !strings.Contains(u, "ref="+top) || !strings.Contains(u, "m=composed") {
		t.Fatalf("URL after more like this %q", u)
	}
	shoot(t, ctx, dir, "prog-3-more-like-this.png")

	// Each mode keeps its own query and results.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("mode-text"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "text mode restored", `document.getElementById('q').value === 'a cat looking to the side' && Array.from(document.querySelectorAll('#results li.result')).map(li => li.dataset.name).join(',') === '`+final+`'`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("mode-composed"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "composed mode restored", `document.getElementById('q').value === '' && Array.from(document.querySelectorAll('#results li.result')).map(li => li.dataset.name).join(',') === '`+similar+`'`)

	// More like this from a pasted image: the coffee photo's file pasted
	// as a clipboard image; its gallery copy comes first.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(async () => {
		const b = await (await fetch('/api/images/coffee')).blob();
		const dt = new DataTransfer();
		dt.items.add(new File([b], 'clipboard.png', { type: b.type || 'image/png' }));
		document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
	})()`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "pasted reference", `document.getElementById('ref-label').textContent.startsWith('Pasted') && document.getElementById('ref-img').naturalWidth > 0 && !document.getElementById('ref-similar').hidden`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("ref-similar"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "results for the pasted image", `document.querySelectorAll('#results li.result').length === 8 && !document.getElementById('go').disabled && document.querySelector('#results li.result').dataset.name === 'coffee'`)
	if got := evalString(t, ctx, `document.querySelector('#stages li[data-stage=evaluate]').textContent`); !strings.Contains(got, "no text to verify") {
		t.Fatalf("evaluate stage after a pasted image: %q", got)
	}
	waitJS(t, ctx, "thumbnails", `Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)`)
	shoot(t, ctx, dir, "prog-4-pasted.png")

	// An image dropped on the page becomes the reference too.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(async () => {
		const b = await (await fetch('/api/images/camera')).blob();
		const dt = new DataTransfer();
		dt.items.add(new File([b], 'dropped.png', { type: b.type || 'image/png' }));
		document.body.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true }));
		document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
	})()`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dropped reference", `document.getElementById('ref-label').textContent === 'Dropped: dropped.png' && document.getElementById('drop-hint').hidden`)

	// A phone: the first row of results is above the fold, for a text
	// search and after three chat turns.
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(e.ts.URL+"/?q=a+cat+looking+to+the+side"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "phone results", `document.querySelectorAll('#results li.result').length === 8 && !document.getElementById('go').disabled`)
	waitJS(t, ctx, "phone thumbnails", `Array.from(document.querySelectorAll('#results img')).slice(0, 2).every(i => i.complete && i.naturalWidth > 0)`)
	waitJS(t, ctx, "first row above the fold (390x844)", firstRowVisible)
	if w := evalString(t, ctx, `String(document.documentElement.scrollWidth <= window.innerWidth)`); w != "true" {
		t.Errorf("page scrolls sideways on a phone")
	}
	shoot(t, ctx, dir, "prog-5-phone.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("mode-chat"))); err != nil {
		t.Fatal(err)
	}
	for i, turn := range []string{"something to drink", "is it hot? yes", "is there a saucer? yes"} {
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), turn)); err != nil {
			t.Fatal(err)
		}
		submitAndWait(t, ctx, fmt.Sprintf("phone chat turn %d", i+1))
		waitJS(t, ctx, "chat reply", fmt.Sprintf(`document.querySelectorAll('#chat-log li:not(.asked)').length === %d && document.getElementById('results').classList.contains('refining') === false`, 2*(i+1)))
	}
	waitJS(t, ctx, "chat reply thumbnail", `(() => { const i = document.querySelector('#chat-log li.system img'); return i && i.complete && i.naturalWidth > 0; })()`)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		t.Fatal(err)
	}
	shoot(t, ctx, dir, "prog-6-phone-chat.png")
	waitJS(t, ctx, "first row above the fold after 3 chat turns (390x844)", firstRowVisible)
}

// TestBrowserAskBack chats in German and answers two questions the engine
// asks back, with the quick-answer buttons; each answer re-ranks.
func TestBrowserAskBack(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	gal := demoGallery(t)
	e := newRealEnvWith(t, true, gal, len(gal), nil)
	dir := artifactDir(t)
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(e.ts.URL),
		chromedp.WaitVisible(chromedp.ID("search-form")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "info", `document.getElementById('desc').textContent.includes('8 images')`)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("mode-chat")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('opt-evaluate').checked = false`),
		chromedp.SendKeys(chromedp.ID("q"), "ein Foto, das ich einmal gemacht habe"),
	); err != nil {
		t.Fatal(err)
	}
	ranking := func() []string {
		return strings.Split(evalString(t, ctx, `Array.from(document.querySelectorAll('#results li.result .name')).map(e => e.textContent).join(',')`), ",")
	}
	question := func() string {
		waitJS(t, ctx, "a question asked back", `!!document.querySelector('#chat-log li.asked .asked-question') && !document.getElementById('go').disabled`)
		return evalString(t, ctx, `document.querySelector('#chat-log li.asked .asked-question').textContent`)
	}
	answer := func(button string, turns int) {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.Evaluate[chromedp.Void](`document.getElementById('results').textContent = ''`),
			chromedp.Click(chromedp.CSS("#chat-log li.asked button."+button)),
		); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "results after the answer", fmt.Sprintf(`document.querySelectorAll('#results li.result').length > 0 && document.querySelectorAll('#chat-log li.user').length === %d && !document.getElementById('go').disabled`, turns))
	}
	submitAndWait(t, ctx, "opening turn")
	r0, q1 := ranking(), question()
	if !strings.HasPrefix(q1, "Ist hier ") {
		t.Fatalf("first question %q is not in German", q1)
	}
	waitJS(t, ctx, "ask stage done", `document.querySelector('#stages li[data-stage=ask]').dataset.status === 'done'`)
	if got := evalString(t, ctx, `Array.from(document.querySelectorAll('#chat-log li.asked button')).map(b => b.textContent).join('|')`); got != "ja|nein|Answer in words…" {
		t.Fatalf("quick answers %q", got)
	}
	shoot(t, ctx, dir, "ask-1-question.png")

	// "nein": the thing asked about is not in the picture.
	answer("ask-no", 2)
	r1, q2 := ranking(), question()
	if q2 == q1 {
		t.Fatalf("asked %q twice", q1)
	}
	if slices.Equal(r0, r1) {
		t.Fatalf("answering %q did not change the ranking %v", q1, r0)
	}
	if log := evalString(t, ctx, `document.getElementById('chat-log').innerText`); !strings.Contains(log, strings.TrimSuffix(q1, "?")+"? nein") {
		t.Fatalf("the answer is not the second turn:\n%s", log)
	}
	shoot(t, ctx, dir, "ask-2-after-no.png")

	// "ja": it is.
	answer("ask-yes", 3)
	r2 := ranking()
	if slices.Equal(r1, r2) {
		t.Fatalf("answering %q did not change the ranking %v", q2, r1)
	}
	log := evalString(t, ctx, `document.getElementById('chat-log').innerText`)
	if !strings.Contains(log, strings.TrimSuffix(q2, "?")+"? ja") {
		t.Fatalf("the answer is not the third turn:\n%s", log)
	}
	t.Logf("rankings: %v -> (%s nein) %v -> (%s ja) %v", r0, q1, r1, q2, r2)
	shoot(t, ctx, dir, "ask-3-after-yes.png")
}
