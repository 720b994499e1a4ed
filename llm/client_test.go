package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x), uint8(y), 100, 255})
		}
	}
	return img
}

func TestChatImageMessageWellFormed(t *testing.T) {
	f := newFake(t)
	cfg := testRole(baseURL(f))
	cfg.Image = resizeTo(cfg.Image, 32, 16)
	cfg.Extra = map[string]any{"repetition_penalty": 1.05}
	cfg.Stop = []string{"<|im_end|>"}
	seed := 7
	cfg.Seed = &seed
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	var pngBuf bytes.Buffer
	png.Encode(&pngBuf, testImage(64, 64))
	resp, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{
		{Role: "system", Parts: []Part{TextPart("be brief")}},
		UserImages("Describe the image.", ImageOf(testImage(100, 50)), ImageBytes(pngBuf.Bytes(), "image/png")),
	}, MaxTokens: 77})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "ok" || resp.FinishReason != "stop" || resp.Usage.TotalTokens != 12 || resp.Cached {
		t.Errorf("resp = %+v", resp)
	}
	b := f.lastBody()
	if b["model"] != "m" || b["temperature"] != 0.0 || b["max_tokens"] != 77.0 || b["seed"] != 7.0 || b["repetition_penalty"] != 1.05 {
		t.Errorf("body fields: %v", b)
	}
	if s, _ := b["stop"].([]any); len(s) != 1 || s[0] != "<|im_end|>" {
		t.Errorf("stop = %v", b["stop"])
	}
	msgs := b["messages"].([]any)
	if sys := msgs[0].(map[string]any); sys["role"] != "system" || sys["content"] != "be brief" {
		t.Errorf("system message = %v", sys)
	}
	parts := msgs[1].(map[string]any)["content"].([]any)
	if len(parts) != 3 {
		t.Fatalf("parts = %d", len(parts))
	}
	for i := 0; i < 2; i++ {
		p := parts[i].(map[string]any)
		if p["type"] != "image_url" {
			t.Fatalf("part %d type %v: images must come first", i, p["type"])
		}
		url := p["image_url"].(map[string]any)["url"].(string)
		const prefix = "data:image/jpeg;base64,"
		if !strings.HasPrefix(url, prefix) {
			t.Fatalf("part %d url prefix %.40q", i, url)
		}
		raw, err := base64.StdEncoding.DecodeString(url[len(prefix):])
		if err != nil {
			t.Fatalf("part %d: base64: %v", i, err)
		}
		img, format, err := image.Decode(bytes.NewReader(raw))
		if err != nil || format != "jpeg" {
			t.Fatalf("part %d: decode %v %s", i, err, format)
		}
		if img.Bounds().Dx() != 32 || img.Bounds().Dy() != 16 {
			t.Errorf("part %d: size %v, want the role's 32x16", i, img.Bounds())
		}
	}
	if p := parts[2].(map[string]any); p["type"] != "text" || p["text"] != "Describe the image." {
		t.Errorf("text part = %v", p)
	}
	st := c.Stats()
	if st.Calls != 1 || st.CacheMisses != 1 || st.PromptTokens != 10 || st.CompletionTokens != 2 || st.Requests != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestImagePassThroughAndMaxSide(t *testing.T) {
	var buf bytes.Buffer
	png.Encode(&buf, testImage(40, 20))
	d := ImageBytes(buf.Bytes(), "")
	e, err := d.encode(imageOptions{format: "png", quality: 95})
	if err != nil {
		t.Fatal(err)
	}
	if e.dataURL != "data:image/png;base64,"+base64.StdEncoding.EncodeToString(buf.Bytes()) {
		t.Error("PNG bytes needing no change were re-encoded")
	}
	for _, tc := range []struct{ w, h, max, ww, wh int }{
		{2000, 1000, 1000, 1000, 500}, {1000, 3000, 300, 100, 300}, {10, 10, 100, 10, 10}, {5000, 1, 100, 100, 1},
	} {
		if got := targetSize(tc.w, tc.h, imageOptions{maxSide: tc.max}); got != [2]int{tc.ww, tc.wh} {
			t.Errorf("targetSize(%d,%d,max %d) = %v", tc.w, tc.h, tc.max, got)
		}
	}
	if _, err := ImageBytes([]byte("not an image"), "").encode(imageOptions{format: "jpeg"}); err == nil {
		t.Error("garbage bytes: no error")
	}
}

func TestLogprobsAndYesNo(t *testing.T) {
	f := newFake(t)
	cfg := testRole(baseURL(f))
	cfg.Logprobs = true
	cfg.TopLogprobs = 5
	c, err := New(context.Background(), modelrole.Verifier, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("Answer the question with Yes or No. Is it red?")}})
	if err != nil {
		t.Fatal(err)
	}
	if b := f.lastBody(); b["logprobs"] != true || b["top_logprobs"] != 5.0 {
		t.Errorf("body: logprobs=%v top=%v", b["logprobs"], b["top_logprobs"])
	}
	if len(resp.Logprobs) != 2 || resp.Logprobs[1].Token != "Yes" || len(resp.Logprobs[1].Top) != 4 {
		t.Fatalf("logprobs = %+v", resp.Logprobs)
	}
	p, ok := resp.YesNo()
	sy := math.Log(math.Exp(-0.2) + math.Exp(-3.0))
	want := math.Exp(sy) / (math.Exp(sy) + math.Exp(-2.0))
	if !ok || math.Abs(p-want) > 1e-12 {
		t.Errorf("YesNo = %v %v, want %v", p, ok, want)
	}
}

func TestYesNoCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lp      []TokenLogprob
		want    float64
		ok      bool
		bounded bool
	}{
		{"none", nil, 0, false, false},
		{"no yes/no", []TokenLogprob{{Token: "maybe", Logprob: -0.1}}, 0, false, false},
		{"only yes bounded", []TokenLogprob{{Token: "Ġyes.", Logprob: math.Log(0.5), Top: []TopLogprob{{"Ġyes.", math.Log(0.5)}, {"x", math.Log(0.25)}}}}, 2.0 / 3, true, true},
		{"no wins", []TokenLogprob{{Token: " No", Logprob: math.Log(0.75), Top: []TopLogprob{{" No", math.Log(0.75)}, {"YES", math.Log(0.25)}}}}, 0.25, true, false},
	} {
		r := &ChatResponse{Logprobs: tc.lp}
		s, ok := r.YesNoDetail()
		if ok != tc.ok || math.Abs(s.P-tc.want) > 1e-9 || s.Bounded != tc.bounded {
			t.Errorf("%s: %+v %v, want %v %v bounded=%v", tc.name, s, ok, tc.want, tc.ok, tc.bounded)
		}
	}
}

func TestWrongModelFailsFast(t *testing.T) {
	f := newFake(t)
	f.models = []string{"captioner", "other"}
	cfg := testRole(baseURL(f))
	cfg.Model = "captoiner"
	_, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err == nil || !contains(err.Error(), `"captoiner" is not served`) || !contains(err.Error(), "captioner, other") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnreachableAtStartStillStarts(t *testing.T) {
	f := newFake(t)
	url := baseURL(f)
	f.Close()
	cfg := testRole(url)
	r0 := 1
	cfg.Retries = &r0
	cfg.DownAfter = 200 * time.Millisecond
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("hi")}})
	if !errors.Is(err, ErrRoleDown) {
		t.Fatalf("err = %v, want ErrRoleDown", err)
	}
	if !contains(err.Error(), "captioner") || !contains(err.Error(), "model m") {
		t.Errorf("error does not name role and model: %v", err)
	}
	opt := testOptions()
	opt.RequireReachable = true
	if _, err := New(context.Background(), modelrole.Captioner, cfg, nil, opt); !errors.Is(err, ErrRoleDown) {
		t.Errorf("RequireReachable: err = %v", err)
	}
}

func TestModelCheckAuthAndPath(t *testing.T) {
	f := newFake(t)
	srv := f.Config.Handler
	f.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k3y" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":{"message":"Unauthorized"}}`))
			return
		}
		srv.ServeHTTP(w, r)
	})
	cfg := testRole(baseURL(f))
	cfg.APIKeyEnv = "VLLM_KEY"
	_, err := New(context.Background(), modelrole.Reasoner, cfg, nil, testOptions())
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "$VLLM_KEY") {
		t.Errorf("no key: %v", err)
	}
	cfg.APIKey = "k3y"
	c, err := New(context.Background(), modelrole.Reasoner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("x")}}); err != nil {
		t.Errorf("with key: %v", err)
	}
	cfg.Endpoints = []string{f.URL + "/api"}
	if _, err := New(context.Background(), modelrole.Reasoner, cfg, nil, testOptions()); err == nil || !strings.Contains(err.Error(), "/v1") {
		t.Errorf("wrong path: %v", err)
	}
}

func TestMarshalChatMatchesEncoder(t *testing.T) {
	body := map[string]any{"model": "m", "temperature": 0.0, "stop": []string{"<|im_end|>"}, "extra": map[string]any{"a": "x\"y"}}
	msgs := []wireMessage{
		{Role: "system", Content: "be <brief> \"now\"\n"},
		{Role: "user", Content: []wirePart{
			{Type: "image_url", ImageURL: &wireImageURL{URL: "data:image/png;base64,iVBORw0KGgo+/="}},
			{Type: "image_url", ImageURL: &wireImageURL{URL: "https://example.com/a.png?x=\"1\""}},
			{Type: "text", Text: "Is it red? \u2603"},
		}},
	}
	got, err := marshalChat(body, msgs)
	if err != nil {
		t.Fatal(err)
	}
	full := map[string]any{}
	for k, v := range body {
		full[k] = v
	}
	full["messages"] = msgs
	want, _ := json.Marshal(full)
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("invalid JSON %s: %v", got, err)
	}
	json.Unmarshal(want, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("marshalChat\n%s\nwant\n%s", got, want)
	}
	if got, _ := marshalChat(map[string]any{}, msgs[:1]); !json.Valid(got) {
		t.Errorf("empty body: %s", got)
	}
}
