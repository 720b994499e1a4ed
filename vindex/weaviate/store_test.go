package weaviate

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	wv "github.com/weaviate/weaviate-go-client/v5/weaviate"
)

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestObjectID(t *testing.T) {
	a, b := ObjectID("img1.jpg"), ObjectID("img1.jpg")
	if a != b {
		t.Fatalf("ObjectID not deterministic: %s %s", a, b)
	}
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 5 {
		t.Fatalf("ObjectID %s: err %v, version %d; want a UUIDv5", a, err, u.Version())
	}
	if ObjectID("img2.jpg") == a {
		t.Fatal("distinct names share an id")
	}
}

func TestCollectionName(t *testing.T) {
	tests := []struct{ gallery, model string }{
		{"folder:/home/me/photos", "openai/clip-vit-large-patch14"},
		{"CIRCO/test", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"},
		{"", "m"},
		{strings.Repeat("é", 300), strings.Repeat("x/", 200)},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		n := CollectionName(tt.gallery, tt.model)
		if !classRE.MatchString(n) {
			t.Errorf("CollectionName(%q, %q) = %q: not a valid class name", tt.gallery, tt.model, n)
		}
		if n != CollectionName(tt.gallery, tt.model) {
			t.Errorf("not deterministic: %q", n)
		}
		if seen[n] {
			t.Errorf("collision: %q", n)
		}
		seen[n] = true
	}
	if CollectionName("a_b", "c") == CollectionName("a", "b_c") {
		t.Error("different inputs that clean to the same text must still differ")
	}
}

func TestOpenUnreachableNamesURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Open(ctx, Config{URLs: []string{"http://127.0.0.1:1"}}, Meta{CLIPModel: "m", Dim: 4}, true)
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1") || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v; want an unavailable error naming the URL", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		cfg  Config
		meta Meta
		want string
	}{
		{Config{}, Meta{CLIPModel: "m", Dim: 4}, "no URL"},
		{Config{URLs: []string{"ftp://x"}}, Meta{CLIPModel: "m", Dim: 4}, "want http"},
		{Config{URLs: []string{"http://x:1"}, Collection: "lower"}, Meta{CLIPModel: "m", Dim: 4}, "upper-case"},
		{Config{URLs: []string{"http://x:1"}, ConsistencyLevel: "most"}, Meta{CLIPModel: "m", Dim: 4}, "consistency level"},
		{Config{URLs: []string{"http://x:1"}}, Meta{CLIPModel: "m"}, "dimension"},
		{Config{URLs: []string{"http://x:1"}}, Meta{Dim: 3}, "CLIP model"},
	}
	for _, tt := range tests {
		_, err := Open(ctx, tt.cfg, tt.meta, true)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%+v, %+v) = %v; want error containing %q", tt.cfg, tt.meta, err, tt.want)
		}
	}
}

// fakeSchema serves the REST calls Open makes before touching objects: a
// collection recorded with another model or dimension must be refused
// right there.
func fakeSchema(t *testing.T, class string, rec any) string {
	t.Helper()
	desc := "some other collection"
	if rec != nil {
		b, _ := json.Marshal(rec)
		desc = metaPrefix + string(b)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/.well-known/ready":
		case "/v1/meta":
			_, _ = w.Write([]byte(`{"version":"1.35.2"}`))
		case "/v1/schema/" + class:
			_ = json.NewEncoder(w).Encode(map[string]any{
				"class": class, "description": desc, "properties": []any{},
				"vectorConfig": map[string]any{"image": map[string]any{"vectorIndexType": "hnsw"}, "caption": map[string]any{}},
			})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestOpenRefusesMismatchedCollection(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		rec  any
		want []string
	}{
		{"model", Meta{CLIPModel: "openai/clip-vit-base-patch32", Dim: 8}, []string{`"openai/clip-vit-base-patch32"`, `"laion/big"`}},
		{"dim", Meta{CLIPModel: "laion/big", Dim: 512}, []string{"512-d", "8-d"}},
		{"foreign", nil, []string{"not created by imagescope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := fakeSchema(t, "Gal", tt.rec)
			_, err := Open(ctx, Config{URLs: []string{url}, Collection: "Gal", Retries: 1, RetryBase: time.Millisecond},
				Meta{CLIPModel: "laion/big", Dim: 8}, true)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("err = %v, want ErrMismatch", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestTransient(t *testing.T) {
	for _, e := range []error{errors.New("dial tcp 127.0.0.1:8080: connect: connection refused"), errors.New("rpc error: code = Unavailable desc = x")} {
		if !transient(e) {
			t.Errorf("transient(%v) = false", e)
		}
	}
	for _, e := range []error{errors.New("vector lengths don't match: 8 vs 4"), errors.New("class name Foo does not exist")} {
		if transient(e) {
			t.Errorf("transient(%v) = true", e)
		}
	}
}

// TestDoFailoverAndBackoff: an unreachable node is skipped for the next one;
// when every node stays unreachable the call gives up with ErrUnavailable
// after the configured retries; a rejected request is not retried.
func TestDoFailoverAndBackoff(t *testing.T) {
	ctx := context.Background()
	refused := errors.New("dial tcp 127.0.0.1:8091: connect: connection refused")
	s := &Store{cfg: Config{Retries: 3, RetryBase: time.Millisecond}, nodes: []*node{{url: "http://a"}, {url: "http://b"}}, log: slogDiscard()}

	var calls []int
	err := s.do(ctx, "op", func(c *wv.Client) error {
		calls = append(calls, int(s.cur.Load()))
		if s.cur.Load() == 0 {
			return refused
		}
		return nil
	})
	if err != nil || len(calls) != 2 || calls[1] != 1 {
		t.Fatalf("failover: err %v, calls on nodes %v", err, calls)
	}
	if s.cur.Load() != 1 {
		t.Fatal("the store should stay on the node that answered")
	}

	n := 0
	err = s.do(ctx, "write", func(c *wv.Client) error { n++; return refused })
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want ErrUnavailable with the cause", err)
	}
	if n != 2*(3+1) {
		t.Fatalf("%d attempts, want 8 (2 nodes x (1 + 3 retries))", n)
	}

	n = 0
	err = s.do(ctx, "write", func(c *wv.Client) error { n++; return errors.New("vector lengths don't match") })
	if err == nil || errors.Is(err, ErrUnavailable) || n != 1 {
		t.Fatalf("rejected request: err %v after %d attempts", err, n)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.do(cctx, "op", func(c *wv.Client) error { return refused }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
