package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/modelrole"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrRoleDown: the role has no working endpoint: every endpoint's
	// circuit breaker is open (interactive clients), or no reply succeeded
	// for the role's down_after window (batch clients).
	ErrRoleDown = errors.New("model role unavailable")
	// ErrFailed: this request kept failing through its retries while the
	// role answered others (one bad input); the item fails, the run goes on.
	ErrFailed = errors.New("model call failed")
	// ErrRejected: the server refused the request (a 4xx other than 408,
	// 409 and 429); retrying would not help.
	ErrRejected = errors.New("request rejected by the model server")
	// ErrNotConfigured: the role has no endpoints.
	ErrNotConfigured = errors.New("model role not configured")
)

// Error describes a failed call: which role and model, which endpoint,
// the HTTP status and the server's own message.
type Error struct {
	Role     modelrole.Name
	Model    string
	Endpoint string
	Status   int    // 0 when no HTTP response
	Message  string // server's message, or the transport error
	Attempts int
	Err      error // ErrRoleDown, ErrRejected, or a context error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (model %s)", e.Role, e.Model)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Endpoint != "" {
		fmt.Fprintf(&b, " at %s", e.Endpoint)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// serverMessage extracts the message from an error body: OpenAI's
// {"error":{"message":...}}, vLLM's {"object":"error","message":...},
// Ollama's {"error":"..."}, or the raw text.
func serverMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		if len(v.Error) > 0 {
			var inner struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Code    any    `json:"code"`
			}
			if json.Unmarshal(v.Error, &inner) == nil && inner.Message != "" {
				return inner.Message
			}
			var s string
			if json.Unmarshal(v.Error, &s) == nil && s != "" {
				return s
			}
		}
		if v.Message != "" {
			return v.Message
		}
		if v.Detail != nil {
			if b, err := json.Marshal(v.Detail); err == nil {
				return string(b)
			}
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}
