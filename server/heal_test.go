package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imagescope/imagescope/internal/breaker"
	"github.com/imagescope/imagescope/pipeline"
)

// TestReadyAndRoleStates: /healthz stays a liveness check while /readyz
// and /api/info report each role's breaker state, last error and next
// probe.
func TestReadyAndRoleStates(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	eps := map[string][]EndpointState{
		"reasoner": {{URL: "http://a/v1", Status: breaker.Status{State: breaker.Closed}}},
		"verifier": {
			{URL: "http://b/v1", Status: breaker.Status{State: breaker.Open, LastError: "connection refused", LastErrorAt: now, NextProbe: now.Add(9 * time.Second)}},
			{URL: "http://c/v1", Status: breaker.Status{State: breaker.Open, LastError: "HTTP 500: boom", LastErrorAt: now.Add(-time.Second), NextProbe: now.Add(5 * time.Second)}},
		},
	}
	e := newEnv(t, func(c *Config) { c.RoleEndpoints = func() map[string][]EndpointState { return eps } })
	if r := e.do("GET", "/healthz", nil, nil); r.StatusCode != 200 {
		t.Errorf("healthz %d", r.StatusCode)
	}
	r := e.do("GET", "/readyz", nil, nil)
	body := readBody(t, r)
	var ready readyResponse
	if err := json.Unmarshal(body, &ready); err != nil || r.StatusCode != 503 || ready.Status != "degraded" || len(ready.Roles) != 2 ||
		ready.Roles[1].State != "open" || !ready.Roles[1].NextProbe.Equal(now.Add(5*time.Second)) {
		t.Fatalf("readyz %d %s", r.StatusCode, body)
	}
	if bytes.Contains(body, []byte("refused")) || bytes.Contains(body, []byte("http://")) {
		t.Errorf("readyz reveals errors or endpoints: %s", body)
	}
	var info struct {
		Roles []RoleState `json:"roles"`
	}
	if err := json.Unmarshal(readBody(t, e.do("GET", "/api/info", nil, nil)), &info); err != nil {
		t.Fatal(err)
	}
	v := info.Roles[1]
	if v.Role != "verifier" || v.State != "open" || v.LastError != "http://b/v1: connection refused" || len(v.Endpoints) != 2 || v.Endpoints[0].State != breaker.Open {
		t.Errorf("info roles %+v", info.Roles)
	}
	// A probe in flight: half-open; one endpoint back: closed and ready.
	eps["verifier"][0].State = breaker.HalfOpen
	if err := json.Unmarshal(readBody(t, e.do("GET", "/readyz", nil, nil)), &ready); err != nil || ready.Status != "ready" || ready.Roles[1].State != "half-open" {
		t.Errorf("half-open: %+v %v", ready, err)
	}
	eps["verifier"][1].State = breaker.Closed
	if r := e.do("GET", "/readyz", nil, nil); r.StatusCode != 200 {
		t.Errorf("readyz with the roles back: %d", r.StatusCode)
	}
}

// TestProbes: a declared oversize body is refused at once with 413, and
// an empty image part with 400.
func TestProbes(t *testing.T) {
	e := newEnv(t, nil)
	// Declare 10 GiB, send nothing more: the answer must come at once.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{\"text\":"))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer to a declared oversize body: %v", err)
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "HTTP/1.1 413") || !strings.Contains(got, "larger than") {
		t.Errorf("declared oversize body: %s", got)
	}

	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("text", "make it red")
	mw.CreateFormFile("image", "photo.jpg") // no content
	mw.Close()
	wantError(t, e.do("POST", "/api/search", &b, map[string]string{"Content-Type": mw.FormDataContentType()}), 400, `is empty: upload the image file`)
	if n := len(e.fake.queries()); n != 0 {
		t.Errorf("an empty upload ran %d searches", n)
	}
}

// TestDegradedResult: a partial answer from the pipeline carries its
// degradations, and the reason stage says it was skipped and why.
func TestDegradedResult(t *testing.T) {
	why := "reasoner unavailable, CLIP ranked the raw query text: reasoner (model m): model role unavailable: connection refused"
	res := &pipeline.Result{
		Stages: []pipeline.StageTrace{{Stage: 1, Round: -1, Stage1: &pipeline.Stage1{Error: "x", Degraded: why, Embedded: []string{"dog"},
			Ranking: []pipeline.Scored{{Name: "red_dog", Score: 0.5}}}}},
		Degraded: []pipeline.Degradation{{Stage: 1, Round: -1, Reason: why}, {Stage: 2, Round: -1, Reason: "skipped: verifier unavailable"}},
		Skipped:  map[string]string{},
	}
	out := convertResult(res, false, 0, 0)
	if len(out.Degraded) != 2 || out.Degraded[0].Stage != StageReason || out.Degraded[1].Stage != StageVerify || out.Degraded[0].Reason != why {
		t.Errorf("degraded = %+v", out.Degraded)
	}
	if st := out.Stages[0]; st.Status != StatusSkipped || st.Reason != why {
		t.Errorf("reason stage = %+v", st)
	}
	if len(out.Descriptions) != 1 || out.Descriptions[0] != "dog" {
		t.Errorf("descriptions = %v (want the raw text that was embedded)", out.Descriptions)
	}
}

// TestBrowserDegradedAndError: a partial answer shows a banner naming the
// skipped stage and why; a failed search clears the previous results.
func TestBrowserDegradedAndError(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx := browser(t)
	e := newEnv(t, nil)
	dir := artifactDir(t)
	e.fake.degraded.Store(&[]Degradation{{Stage: StageReason, Round: -1, Reason: "reasoner unavailable, CLIP ranked the raw query text: connection refused"}})
	if err := chromedp.Do(ctx, chromedp.Navigate(e.ts.URL), chromedp.WaitVisible(chromedp.ID("search-form")),
		chromedp.SendKeys(chromedp.ID("q"), "dog beach")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "degraded search")
	waitJS(t, ctx, "banner", `!document.getElementById('degraded').hidden`)
	if got := evalString(t, ctx, `document.getElementById('degraded').innerText`); !strings.Contains(got, "Partial answer") || !strings.Contains(got, "Reason: reasoner unavailable, CLIP ranked the raw query text") {
		t.Errorf("banner %q", got)
	}
	shoot(t, ctx, dir, "degraded-banner.png")

	e.fake.degraded.Store(nil)
	e.fake.fail = errors.New("the search engine broke")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("go"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "error shown", `document.getElementById('status').classList.contains('error')`)
	if n := evalString(t, ctx, `String(document.querySelectorAll('#results li.result').length)`); n != "0" {
		t.Errorf("%s results still on screen under the error", n)
	}
	if !strings.Contains(evalString(t, ctx, `String(document.getElementById('degraded').hidden)`), "true") {
		t.Error("the banner of the previous search stayed")
	}
	shoot(t, ctx, dir, "error-clears-results.png")
}
