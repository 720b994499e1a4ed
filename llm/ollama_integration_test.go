//go:build integration

package llm

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/modelrole"
)

// A real Ollama server (scripts/ollama.sh) with the tiny models it
// imports. Set by .ci/run:
//
//	IMAGESCOPE_OLLAMA_URL           base URL (http://127.0.0.1:11534)
//	IMAGESCOPE_OLLAMA_TEXT_MODEL    a text-only model
//	IMAGESCOPE_OLLAMA_VISION_MODEL  a vision model
func ollamaServer(t *testing.T) (url, text, vision string) {
	t.Helper()
	url = os.Getenv("IMAGESCOPE_OLLAMA_URL")
	text = os.Getenv("IMAGESCOPE_OLLAMA_TEXT_MODEL")
	vision = os.Getenv("IMAGESCOPE_OLLAMA_VISION_MODEL")
	if url == "" || text == "" || vision == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("IMAGESCOPE_OLLAMA_URL, _TEXT_MODEL and _VISION_MODEL must be set under CI (scripts/ollama.sh)")
		}
		t.Skip("IMAGESCOPE_OLLAMA_URL, _TEXT_MODEL or _VISION_MODEL not set")
	}
	return url + "/v1", text, vision
}

func ollamaRole(ep, model string) config.Role {
	zero, seed, retries := 0.0, 0, 1
	return config.Role{Endpoints: []string{ep}, Model: model, MaxInFlight: 1, Timeout: 60 * time.Second,
		Retries: &retries, Cooldown: time.Second, MaxTokens: 8, Temperature: &zero, Seed: &seed}
}

func testJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := range 48 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{uint8(4 * x), uint8(5 * y), 90, 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestIntegrationOllamaWire checks what the client assumes about a real
// Ollama: model listing, image parts, logprobs and its limit, error bodies.
func TestIntegrationOllamaWire(t *testing.T) {
	ep, textModel, visionModel := ollamaServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opt := Options{BackoffBase: 50 * time.Millisecond}

	// Vision model: an image part is answered; logprobs come back.
	vc, err := New(ctx, modelrole.Verifier, ollamaRole(ep, visionModel), nil, opt)
	if err != nil {
		t.Fatalf("vision model refused: %v", err)
	}
	img := testJPEG(t)
	resp, err := vc.Chat(ctx, ChatRequest{Messages: []Message{UserImages("Answer the question with Yes or No. Is it red?", ImageBytes(img, "image/jpeg"))},
		Logprobs: true, TopLogprobs: 5})
	if err != nil {
		t.Fatalf("image chat: %v", err)
	}
	if resp.Usage.PromptTokens == 0 || len(resp.Logprobs) == 0 {
		t.Errorf("reply without usage or logprobs: %+v", resp)
	}

	// top_logprobs above the server's limit is a 400: rejected, not an outage.
	_, err = vc.Chat(ctx, ChatRequest{Messages: []Message{UserImages("Is it red?", ImageBytes(img, "image/jpeg"))}, Logprobs: true, TopLogprobs: 25})
	var e *Error
	if !errors.Is(err, ErrRejected) || !errors.As(err, &e) || e.Status != 400 || !strings.Contains(err.Error(), "top_logprobs") {
		t.Errorf("top_logprobs 25: %v", err)
	}

	// A corrupt image (a JPEG cut short: its header reads, its scan data
	// does not) is sent as it is; the server's 500 fails this call only.
	bad := img[:len(img)-len(img)/4]
	_, err = vc.Chat(ctx, ChatRequest{Messages: []Message{UserImages("Is it red?", ImageBytes(bad, "image/jpeg"))}})
	t.Logf("corrupt image: %v", err)
	if !errors.Is(err, ErrRejected) || !errors.As(err, &e) || e.Attempts != 1 || e.Status != 500 {
		t.Errorf("corrupt image: %v, want the server's 500 as a rejected call after one attempt", err)
	}
	// Bytes without a readable header are refused before sending.
	garbage := append([]byte("\xff\xd8\xff\xe0"), bytes.Repeat([]byte{0x17}, 300)...)
	_, err = vc.Chat(ctx, ChatRequest{Messages: []Message{UserImages("Is it red?", ImageBytes(garbage, "image/jpeg"))}})
	t.Logf("garbage image: %v", err)
	if err == nil || errors.Is(err, ErrRoleDown) {
		t.Errorf("garbage image: %v, want a failure of this call", err)
	}
	if _, err := vc.Chat(ctx, ChatRequest{Messages: []Message{UserImages("Is it blue?", ImageBytes(img, "image/jpeg"))}}); err != nil {
		t.Errorf("the call after bad images: %v", err)
	}
	if st := vc.Stats(); st.Endpoints[0].CoolingDown {
		t.Errorf("bad images cooled the endpoint down: %+v", st)
	}

	// A text-only model for a role that takes images is refused at start.
	_, err = New(ctx, modelrole.Captioner, ollamaRole(ep, textModel), nil, opt)
	if err == nil || !strings.Contains(err.Error(), "cannot take images") || !strings.Contains(err.Error(), textModel) || !strings.Contains(err.Error(), ep) {
		t.Errorf("text model as captioner: %v", err)
	}
	// ... and accepted for a text role.
	tc, err := New(ctx, modelrole.Reasoner, ollamaRole(ep, textModel), nil, opt)
	if err != nil {
		t.Fatalf("text model as reasoner: %v", err)
	}
	if _, err := tc.Chat(ctx, ChatRequest{Messages: []Message{UserText("Say hello.")}}); err != nil {
		t.Errorf("text chat: %v", err)
	}

	// An unknown model: refused at start naming role, model and endpoint
	// and what the server has; mid-run (a model removed) a 404 naming them.
	_, err = New(ctx, modelrole.Reasoner, ollamaRole(ep, "no-such-model"), nil, opt)
	if err == nil || !strings.Contains(err.Error(), "reasoner") || !strings.Contains(err.Error(), "no-such-model") || !strings.Contains(err.Error(), ep) || !strings.Contains(err.Error(), textModel) {
		t.Errorf("unknown model at start: %v", err)
	}
	gc, err := New(ctx, modelrole.Reasoner, ollamaRole(ep, "no-such-model"), nil, Options{SkipModelCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = gc.Chat(ctx, ChatRequest{Messages: []Message{UserText("hi")}})
	if !errors.Is(err, ErrRejected) || !errors.As(err, &e) || e.Status != 404 {
		t.Fatalf("unknown model: %v", err)
	}
	for _, want := range []string{"reasoner", "no-such-model", ep} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("unknown model error %q does not name %q", err, want)
		}
	}
}
