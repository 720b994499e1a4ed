package llm

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/modelrole"
)

// TestVisionCapabilityChecked: a role that takes images refuses, at start,
// a model that Ollama's /api/show says cannot see; text roles and servers
// without /api/show are not affected.
func TestVisionCapabilityChecked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		role    modelrole.Name
		show    string // /api/show reply; "" answers 404 (not Ollama)
		wantErr bool
	}{
		{"text-only model for the captioner", modelrole.Captioner, `{"capabilities":["completion"]}`, true},
		{"text-only model for the verifier", modelrole.Verifier, `{"capabilities":["completion","tools"]}`, true},
		{"vision model", modelrole.Evaluator, `{"capabilities":["completion","vision"]}`, false},
		{"text role", modelrole.Reasoner, `{"capabilities":["completion"]}`, false},
		{"not Ollama", modelrole.Captioner, "", false},
		{"old Ollama without capabilities", modelrole.Captioner, `{"modelfile":"FROM x"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.show = tc.show
			_, err := New(context.Background(), tc.role, testRole(baseURL(f)), nil, testOptions())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				for _, want := range []string{string(tc.role), `"m"`, baseURL(f), "cannot take images", "roles." + string(tc.role) + ".model"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
			}
			if asked := f.showHits.Load() > 0; asked != tc.role.TakesImages() {
				t.Errorf("/api/show asked = %v for role %s", asked, tc.role)
			}
		})
	}
}

// TestCorruptImage500IsPerItem: a 5xx whose message blames the image is
// the item's failure: not retried, not counted against the endpoint, and
// the next call goes through.
func TestCorruptImage500IsPerItem(t *testing.T) {
	f := newFake(t)
	chats := 0
	f.fault = func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if chats++; chats == 1 {
			w.WriteHeader(500)
			w.Write([]byte(`{"error":{"message":"failed to process inputs: image: unknown format","type":"api_error"}}`))
			return true
		}
		return false
	}
	cfg := testRole(baseURL(f))
	cfg.MaxInFlight = 1
	c, err := New(context.Background(), modelrole.Captioner, cfg, nil, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("x")}})
	var e *Error
	if !errors.Is(err, ErrRejected) || !errors.As(err, &e) || e.Status != 500 || e.Attempts != 1 {
		t.Fatalf("err = %v, want a rejected call after one attempt", err)
	}
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{UserText("y")}}); err != nil {
		t.Fatalf("next call: %v", err)
	}
	if st := c.Stats(); st.Retries != 0 || st.Endpoints[0].Failures != 0 {
		t.Errorf("stats %+v: a bad input counted as a server failure", st)
	}
}
