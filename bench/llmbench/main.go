// Command llmbench measures how well the llm client keeps a model server
// busy. It starts a latency-simulating OpenAI-compatible server that runs
// at most C requests at once, each taking a fixed service time (further
// requests queue, as vLLM queues them), sends N chat requests through
// llm.Client, and prints the achieved utilisation
//
//	N x service / (C x wall)
//
// next to a baseline: the same N requests sent by C goroutines with a bare
// net/http client (no pool, retries, or body building) sending the same
// request bodies the client sent. The headline is the client at exactly C
// in flight; the last line is "llm utilisation=X.XX in_flight=C baseline=Y.YY".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
)

// lane is one of the server's C execution slots. Its clock is virtual: a
// request that was already queued when the lane finished its previous one
// starts exactly then, so the simulator's own timer and scheduling jitter
// on a busy host do not count as server idle time (a GPU does not stop
// because the host was slow to wake a goroutine).
type lane struct{ freeAt time.Time }

type server struct {
	slots   chan *lane
	service time.Duration
	peak    atomic.Int64
	cur     atomic.Int64
	served  atomic.Int64
	checked atomic.Int64
	// sample is the body of the client's first request with content
	// "-1 ..." (a warm-up call), kept so the baseline sends the same bytes.
	sample atomic.Pointer[[]byte]
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/models" {
		io.WriteString(w, `{"object":"list","data":[{"id":"bench","object":"model"}]}`)
		return
	}
	arrival := time.Now()
	// Read the whole request; parse only the first few for a sanity check.
	// A real server parses on its own machine, so parsing every body here
	// would bill the server's work to the client's CPU.
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	if bytes.Contains(raw, []byte(`"-1 `)) && s.sample.Load() == nil {
		b := bytes.Clone(raw)
		s.sample.CompareAndSwap(nil, &b)
	}
	if s.checked.Add(1) <= 100 {
		var body struct {
			Model    string `json:"model"`
			Messages []any  `json:"messages"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Model == "" || len(body.Messages) == 0 {
			http.Error(w, fmt.Sprintf("bad request body: %v", err), 400)
			return
		}
	}
	l := <-s.slots // queue until a lane frees, like a busy engine (FIFO)
	n := s.cur.Add(1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	start := arrival
	if l.freeAt.After(start) {
		start = l.freeAt
	}
	end := start.Add(s.service)
	l.freeAt = end
	time.Sleep(time.Until(end))
	s.cur.Add(-1)
	s.slots <- l
	s.served.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"x","object":"chat.completion","model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"a photo of a dog on a sofa"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":8,"total_tokens":128}}`)
}

func main() {
	c := flag.Int("c", 64, "server capacity: concurrent requests")
	n := flag.Int("n", 3200, "requests")
	service := flag.Duration("service", 100*time.Millisecond, "service time per request")
	replicas := flag.Int("replicas", 1, "server replicas (capacity c each)")
	withImage := flag.Bool("image", false, "send a 224x224 image with every request")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the llm.Client phase at C in flight")
	headroom := flag.Int("headroom", -1, "extra requests kept queued at the server in the reference run beyond C (default C/4; 0 skips it)")
	flag.Parse()

	var urls []string
	var servers []*server
	for i := 0; i < *replicas; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		s := &server{slots: make(chan *lane, *c), service: *service}
		for j := 0; j < *c; j++ {
			s.slots <- &lane{}
		}
		servers = append(servers, s)
		go (&http.Server{Handler: s}).Serve(ln)
		urls = append(urls, "http://"+ln.Addr().String()+"/v1")
	}
	capacity := *c * *replicas
	ideal := time.Duration(float64(*n) * float64(*service) / float64(capacity))
	fmt.Printf("server: %d replica(s) x capacity %d, service %v; %d requests; ideal wall %v\n", *replicas, *c, *service, *n, ideal.Round(time.Millisecond))

	// The headline: llm.Client with exactly C in flight per endpoint, as
	// many callers as that, against the bare net/http baseline sending the
	// very bytes the client sent (recorded by the server) from C goroutines.
	exact := runClient(urls, servers, *c, *n, *service, capacity, *withImage, *cpuprofile)
	fmt.Printf("llm.Client, max_in_flight = C = %d: %s\n", *c, exact.line)
	sample := servers[0].sample.Load()
	if sample == nil {
		log.Fatal("the server recorded no request body from the client")
	}
	base := baseline(urls, capacity, *n, *sample)
	baseU := util(*n, *service, capacity, base)
	fmt.Printf("baseline (bare net/http, %d goroutines, the client's request body, %d bytes): wall %v utilisation=%.3f\n", capacity, len(*sample), base.Round(time.Millisecond), baseU)
	hr := *headroom
	if hr < 0 {
		hr = max(1, *c/4)
	}
	if hr > 0 {
		q := runClient(urls, servers, *c+hr, *n, *service, capacity, *withImage, "")
		fmt.Printf("for reference, llm.Client with max_in_flight = C + %d queued = %d (the recommended setting for continuous-batching servers; not the headline): %s\n", hr, *c+hr, q.line)
	}
	fmt.Printf("ratio to baseline at C in flight: %.3f\n", exact.util/baseU)
	fmt.Printf("llm utilisation=%.2f in_flight=%d baseline=%.2f\n", exact.util, *c, baseU)
}

type result struct {
	util float64
	line string
}

// runClient sends n requests at once through an llm.Client whose
// per-endpoint limit is inFlight; the pool bounds what is in flight.
func runClient(urls []string, servers []*server, inFlight, n int, service time.Duration, capacity int, withImage bool, cpuprofile string) result {
	zero := 0.0
	role := config.Role{Endpoints: urls, Model: "bench", MaxInFlight: inFlight, Timeout: 30 * time.Second, Temperature: &zero, MaxTokens: 16,
		Image: config.Image{Width: 224, Height: 224, Format: "jpeg", Quality: 95}, Cooldown: 10 * time.Second}
	client, err := llm.New(context.Background(), modelrole.Verifier, role, nil, llm.Options{})
	if err != nil {
		log.Fatal(err)
	}
	var img *llm.ImageData
	if withImage {
		m := image.NewNRGBA(image.Rect(0, 0, 224, 224))
		for y := 0; y < 224; y++ {
			for x := 0; x < 224; x++ {
				m.Set(x, y, color.NRGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
			}
		}
		img = llm.ImageOf(m)
	}
	prompt := "Answer the question with Yes or No. " + strings.Repeat("Is there a dog on the sofa? ", 20)
	call := func(i int) error {
		msg := llm.UserText(fmt.Sprintf("%d %s", i, prompt))
		if img != nil {
			msg = llm.UserImages(fmt.Sprintf("%d %s", i, prompt), img)
		}
		_, err := client.Chat(context.Background(), llm.ChatRequest{Messages: []llm.Message{msg}})
		return err
	}
	// Warm up connections (not timed), as a long run would have them.
	var wg sync.WaitGroup
	for i := 0; i < inFlight*len(urls); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); call(-1 - i) }()
	}
	wg.Wait()
	for _, s := range servers {
		s.peak.Store(0)
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	// As many callers as the role accepts in flight, the way the pipeline
	// bounds its concurrency per role (max_in_flight x endpoints).
	var failed atomic.Int64
	var next atomic.Int64
	start := time.Now()
	for w := 0; w < inFlight*len(urls); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := call(i); err != nil {
					failed.Add(1)
					fmt.Fprintln(os.Stderr, err)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	st := client.Stats()
	var peak int64
	for _, s := range servers {
		peak = max(peak, s.peak.Load())
	}
	u := util(n, service, capacity, wall)
	return result{u, fmt.Sprintf("wall %v, failed %d, retries %d, server peak running %d; utilisation=%.3f",
		wall.Round(time.Millisecond), failed.Load(), st.Retries, peak, u)}
}

func util(n int, service time.Duration, c int, wall time.Duration) float64 {
	return float64(n) * float64(service) / (float64(c) * float64(wall))
}

// baseline sends n requests from workers goroutines with a bare net/http
// client; each body is sample with its request number in place of -1.
func baseline(urls []string, workers, n int, sample []byte) time.Duration {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = workers
	hc := &http.Client{Transport: tr}
	do := func(i int) {
		body := bytes.Replace(sample, []byte(`"-1 `), []byte(fmt.Sprintf(`"%d `, i)), 1)
		resp, err := hc.Post(urls[i%len(urls)]+"/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ { // warm-up
		wg.Add(1)
		go func() { defer wg.Done(); do(i) }()
	}
	wg.Wait()
	var next atomic.Int64
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				do(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}
