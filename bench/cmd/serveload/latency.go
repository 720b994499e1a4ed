package main

// Subcommands for bench/serve-latency: "simmodels" is an OpenAI-compatible
// model server that answers every role after a fixed delay with bounded
// capacity, and "latency" sends a mix of searches through the streaming API
// and reports time to first results against the server's own stage-1 time.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imagescope/imagescope/bench/internal/benchstat"
)

// simmodels serves /v1/models and /v1/chat/completions: each call holds one
// of capacity slots for latency (calls beyond capacity wait for a slot, as
// on a real server with a fixed batch), then answers as the role named by
// the request's model would.
func simmodels(args []string) error {
	fs := flag.NewFlagSet("simmodels", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	latency := fs.Duration("latency", 300*time.Millisecond, "time one call takes")
	capacity := fs.Int("capacity", 8, "calls served at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// The address goes to stdout so the script can read it.
	fmt.Println(ln.Addr().String())
	slots := make(chan struct{}, *capacity)
	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"reasoner"},{"id":"proposer"},{"id":"verifier"},{"id":"evaluator"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Model    string `json:"model"`
			Messages []struct {
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case slots <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		select {
		case <-time.After(*latency):
		case <-r.Context().Done():
			<-slots
			return
		}
		<-slots
		calls.Add(1)
		var text strings.Builder
		for _, m := range body.Messages {
			text.Write(m.Content)
		}
		h := fnv.New32a()
		h.Write([]byte(text.String()))
		v := h.Sum32()
		var reply string
		switch body.Model {
		case "reasoner":
			c, o, p := colors[v%10], objects[(v/10)%20], places[(v/200)%8]
			reply = fmt.Sprintf("```json\n{\"step1\": [[\"Addition\", \"a %s %s\"]], \"step2\": [\"a %s\", \"a %s %s\", \"a %s %s %s\"]}\n```", c, o, o, c, o, c, o, p)
		case "proposer":
			reply = `{"step1": ["There is the object.", "It is not night."], "step2": [["Is the main object there?", "True"], ["Is it night?", "False"]]}`
		case "verifier":
			reply = []string{"Yes", "No"}[v%2]
		case "evaluator":
			reply = "ANSWER: No\nThe candidate does not show the requested change."
			if v%3 == 0 {
				reply = "ANSWER: Yes\nThe candidate shows what was asked."
			}
		default:
			http.Error(w, "unknown model "+body.Model, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": "sim", "object": "chat.completion", "model": body.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": reply}}},
			"usage":   map[string]any{"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
		})
	})
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		fmt.Fprintf(os.Stderr, "simmodels: %d calls answered\n", calls.Load())
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// timing is one streamed search as the client saw it.
type timing struct {
	kind    string
	turn    int           // chat turn (1-based; 0 otherwise)
	ttfr    time.Duration // request sent -> first results (a partial or the final result)
	final   time.Duration // request sent -> final result
	stage1  time.Duration // the server's stage-1 time (reason + retrieve)
	results int
	thumbs  []string // thumbnail URLs of the first results
	err     error
}

// firstScreen fetches the thumbnails of a results page the way a browser
// does (6 connections) and returns how long the page took to fill.
func firstScreen(ctx context.Context, client *http.Client, url string, thumbs []string) (time.Duration, error) {
	start := time.Now()
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	errs := make([]error, len(thumbs))
	for i, u := range thumbs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, err := http.NewRequestWithContext(ctx, "GET", url+u, nil)
			if err != nil {
				errs[i] = err
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("thumbnail %s: status %d", u, resp.StatusCode)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// stream runs one search on /api/search/stream.
func stream(ctx context.Context, client *http.Client, url, ctype string, body []byte) (t timing, conv string) {
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/api/search/stream", bytes.NewReader(body))
	if err != nil {
		t.err = err
		return t, ""
	}
	req.Header.Set("Content-Type", ctype)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.err = err
		return t, ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		return t, ""
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			name = v
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		switch name {
		case "partial", "result":
			if t.ttfr == 0 {
				t.ttfr = time.Since(start)
			}
			if name == "result" {
				t.final = time.Since(start)
				var r struct {
					Results []struct {
						ThumbURL string `json:"thumb_url"`
					} `json:"results"`
					Conversation string `json:"conversation"`
				}
				if err := json.Unmarshal([]byte(data), &r); err != nil {
					t.err = err
				}
				t.results, conv = len(r.Results), r.Conversation
				for _, h := range r.Results {
					t.thumbs = append(t.thumbs, h.ThumbURL)
				}
			}
		case "stage":
			var ev struct {
				Stage      string  `json:"stage"`
				Status     string  `json:"status"`
				DurationMS float64 `json:"duration_ms"`
			}
			if json.Unmarshal([]byte(data), &ev) == nil && ev.Stage == "retrieve" && ev.Status == "done" {
				t.stage1 = time.Duration(ev.DurationMS * float64(time.Millisecond))
			}
		case "error":
			t.err = fmt.Errorf("error event: %s", data)
		}
	}
	if t.final == 0 && t.err == nil {
		t.err = errors.New("stream ended without a result")
	}
	return t, conv
}

func latencyLoad(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	url := fs.String("url", "", "imagescope server base URL")
	n := fs.Int("queries", 50, "queries (a 3-turn chat counts as one)")
	clients := fs.Int("clients", 4, "queries run at once")
	images := fs.Int("images", 10000, "gallery size (names img00000..)")
	upload := fs.String("upload", "", "an image file to upload for composed and more-like-this queries (every other one; the rest use gallery names)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("latency needs --url")
	}
	var up []byte
	if *upload != "" {
		b, err := os.ReadFile(*upload)
		if err != nil {
			return err
		}
		up = b
	}
	client := &http.Client{Timeout: 10 * time.Minute}
	ctx := context.Background()
	kinds := []string{"text", "composed", "similar", "chat"}
	var mu sync.Mutex
	var all []timing
	var screens []time.Duration
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				kind := kinds[i%len(kinds)]
				text := synthCaption(i * 7)
				ref := fmt.Sprintf("img%05d", (i*7919)%*images)
				jsonBody := func(v map[string]any) (string, []byte) {
					b, _ := json.Marshal(v)
					return "application/json", b
				}
				var got []timing
				switch kind {
				case "text":
					ct, b := jsonBody(map[string]any{"text": text, "limit": 24})
					t, _ := stream(ctx, client, *url, ct, b)
					got = append(got, t)
				case "composed", "similar":
					req := map[string]any{"limit": 24}
					if kind == "composed" {
						req["text"] = "make it " + colors[i%len(colors)]
					}
					var ct string
					var b []byte
					if up != nil && (i/len(kinds))%2 == 1 {
						ct, b = multipartRequest(req, up)
					} else {
						req["reference"] = ref
						ct, b = jsonBody(req)
					}
					t, _ := stream(ctx, client, *url, ct, b)
					got = append(got, t)
				case "chat":
					turns := []string{text, "is it outdoors? yes", "is it " + colors[(i+3)%len(colors)] + "? no"}
					conv := ""
					for k, turn := range turns {
						req := map[string]any{"text": turn, "chat": true, "limit": 24}
						if k > 0 {
							req["dialogue"] = turns[:k]
							req["conversation"] = conv
						}
						ct, b := jsonBody(req)
						t, c := stream(ctx, client, *url, ct, b)
						t.turn = k + 1
						conv = c
						got = append(got, t)
					}
				}
				for j := range got {
					got[j].kind = kind
					if got[j].err == nil && len(got[j].thumbs) > 0 {
						// Each page's thumbnails fetched once, as a browser
						// opening the results would.
						d, err := firstScreen(ctx, client, *url, got[j].thumbs)
						if err != nil {
							got[j].err = err
						}
						mu.Lock()
						screens = append(screens, d)
						mu.Unlock()
					}
				}
				mu.Lock()
				all = append(all, got...)
				mu.Unlock()
			}
		}()
	}
	for i := range *n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)

	var ttfr, final, stage1, over []time.Duration
	byKind := map[string][]time.Duration{}
	turnFinal := map[int][]time.Duration{}
	turnTTFR := map[int][]time.Duration{}
	errs := 0
	for _, t := range all {
		if t.err != nil {
			errs++
			fmt.Fprintf(os.Stderr, "%s query failed: %v\n", t.kind, t.err)
			continue
		}
		ttfr, final, stage1 = append(ttfr, t.ttfr), append(final, t.final), append(stage1, t.stage1)
		over = append(over, t.ttfr-t.stage1)
		byKind[t.kind] = append(byKind[t.kind], t.final)
		if t.turn > 0 {
			turnFinal[t.turn] = append(turnFinal[t.turn], t.final)
			turnTTFR[t.turn] = append(turnTTFR[t.turn], t.ttfr)
		}
	}
	for _, s := range [][]time.Duration{ttfr, final, stage1, over} {
		slices.Sort(s)
	}
	p := func(s []time.Duration, q float64) float64 {
		if len(s) == 0 {
			return 0
		}
		return msOf(benchstat.Percentile(s, q*100))
	}
	fmt.Printf("%d searches (%d queries, %d clients) in %s, %d errors\n", len(all), *n, *clients, wall.Round(time.Millisecond), errs)
	for _, k := range kinds {
		s := byKind[k]
		slices.Sort(s)
		fmt.Printf("  %-9s final p50 %8.1f ms  p95 %8.1f ms  (%d searches)\n", k, p(s, 0.5), p(s, 0.95), len(s))
	}
	for turn := 1; turn <= 3; turn++ {
		f, r := turnFinal[turn], turnTTFR[turn]
		slices.Sort(f)
		slices.Sort(r)
		fmt.Printf("  chat turn %d: first results p50 %8.1f ms, final p50 %8.1f ms (%d)\n", turn, p(r, 0.5), p(f, 0.5), len(f))
	}
	fmt.Printf("  time to first results minus stage 1: p50 %.1f ms, p95 %.1f ms, max %.1f ms\n", p(over, 0.5), p(over, 0.95), p(over, 1))
	slices.Sort(screens)
	fmt.Printf("  first screen (a page's thumbnails, 6 connections): p50 %.1f ms, p95 %.1f ms, max %.1f ms (%d pages)\n", p(screens, 0.5), p(screens, 0.95), p(screens, 1), len(screens))
	t1, t3 := turnFinal[1], turnFinal[3]
	slices.Sort(t1)
	slices.Sort(t3)
	fmt.Printf("serve-latency ttfr_p50_ms=%.1f ttfr_p95_ms=%.1f final_p50_ms=%.1f stage1_p50_ms=%.1f stage1_p95_ms=%.1f overhead_p95_ms=%.1f chat_turn1_final_p50_ms=%.1f chat_turn3_final_p50_ms=%.1f first_screen_p95_ms=%.1f first_vs_final_p50=%.3f chat_turn3_vs_turn1=%.2f errors=%d\n",
		p(ttfr, 0.5), p(ttfr, 0.95), p(final, 0.5), p(stage1, 0.5), p(stage1, 0.95), p(over, 0.95), p(t1, 0.5), p(t3, 0.5), p(screens, 0.95),
		ratio(p(ttfr, 0.5), p(final, 0.5)), ratio(p(t3, 0.5), p(t1, 0.5)), errs)
	if errs > 0 {
		return fmt.Errorf("%d searches failed", errs)
	}
	return nil
}

func multipartRequest(req map[string]any, image []byte) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	b, _ := json.Marshal(req)
	mw.WriteField("request", string(b))
	w, _ := mw.CreateFormFile("image", "upload.png")
	w.Write(image)
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
