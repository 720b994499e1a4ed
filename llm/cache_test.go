package llm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

func TestChatCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "answers.db")
	cache, err := OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	f := newFake(t)
	f.answer = echo
	cfg := testRole(baseURL(f))
	cfg.ModelID = "org/model@abc"
	c, err := New(context.Background(), modelrole.Captioner, cfg, cache, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	img := testImage(20, 20)
	req := func(text string) ChatRequest {
		return ChatRequest{Messages: []Message{UserImages(text, ImageOf(img))}}
	}
	r1, err := c.Chat(context.Background(), req("hello"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Chat(context.Background(), req("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Cached || !r2.Cached || r1.Text != r2.Text || r1.Usage != r2.Usage || r1.FinishReason != r2.FinishReason {
		t.Errorf("r1 %+v r2 %+v", r1, r2)
	}
	if n := f.requests.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1 (the hit must not touch the network)", n)
	}
	// Different text, different image, different max_tokens: misses.
	c.Chat(context.Background(), req("other"))
	c.Chat(context.Background(), ChatRequest{Messages: []Message{UserImages("hello", ImageOf(testImage(21, 20)))}})
	c.Chat(context.Background(), ChatRequest{Messages: []Message{UserImages("hello", ImageOf(img))}, MaxTokens: 9})
	if n := f.requests.Load(); n != 4 {
		t.Errorf("server saw %d requests, want 4", n)
	}
	// Another server (other URL and served name), same model id: the key
	// depends on neither.
	g := newFake(t)
	g.answer = func(map[string]any) string { return "different server" }
	g.models = []string{"other-served-name"}
	cfg2 := cfg
	cfg2.Endpoints = []string{baseURL(g)}
	cfg2.Model = "other-served-name"
	c2, err := New(context.Background(), modelrole.Captioner, cfg2, cache, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	r3, err := c2.Chat(context.Background(), req("hello"))
	if err != nil || !r3.Cached || r3.Text != r1.Text || g.requests.Load() != 0 {
		t.Errorf("other endpoint: %+v %v (requests %d)", r3, err, g.requests.Load())
	}
	st := c.Stats()
	if st.CacheHits != 1 || st.CacheMisses != 4 || st.Calls != 5 {
		t.Errorf("stats = %+v", st)
	}
	// Opting out bypasses the cache.
	opt := testOptions()
	opt.NoCache = true
	c3, _ := New(context.Background(), modelrole.Captioner, cfg2, cache, opt)
	if r, _ := c3.Chat(context.Background(), req("hello")); r == nil || r.Cached || r.Text != "different server" {
		t.Errorf("NoCache: %+v", r)
	}
	cs, err := cache.Stats(context.Background())
	if err != nil || cs.Entries != 4 || len(cs.Groups) != 1 || cs.Groups[0].Model != "org/model@abc" || cs.Groups[0].Role != "captioner" {
		t.Errorf("cache stats = %+v %v", cs, err)
	}
	if n, err := cache.Clear(context.Background(), ""); err != nil || n != 4 {
		t.Errorf("Clear = %d %v", n, err)
	}
	if r, _ := c.Chat(context.Background(), req("hello")); r == nil || r.Cached {
		t.Error("hit after Clear")
	}
}

func TestEmbedCache(t *testing.T) {
	cache, err := OpenCache(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	f := newFake(t)
	c, _ := New(context.Background(), modelrole.Embedder, testRole(baseURL(f)), cache, testOptions())
	for i := 0; i < 2; i++ {
		if v, err := c.EmbedText(context.Background(), "t"); err != nil || len(v) != 3 {
			t.Fatal(v, err)
		}
		if v, err := c.EmbedImage(context.Background(), testImage(5, 5)); err != nil || len(v) != 4 {
			t.Fatal(v, err)
		}
	}
	if n := f.requests.Load(); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
}

// cacheValue is the value the writers store under key i.
func cacheValue(i int) []byte {
	h := sha256.Sum256([]byte(strconv.Itoa(i)))
	return bytes.Repeat(h[:], 1000) // 32 KB
}

func TestCacheConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	var caches []*Cache
	for i := 0; i < 3; i++ { // three handles, as three processes would have
		c, err := OpenCache(path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		caches = append(caches, c)
	}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := caches[w%3]
			for i := 0; i < 40; i++ {
				k := (i*7 + w) % 100
				if err := c.Put(context.Background(), fmt.Sprint(k), "r", "m", "chat", cacheValue(k)); err != nil {
					t.Error(err)
					return
				}
				if v, ok, err := c.Get(context.Background(), fmt.Sprint((k+3)%100)); err != nil || (ok && !bytes.Equal(v, cacheValue((k+3)%100))) {
					t.Errorf("read %d: ok=%v err=%v", k, ok, err)
				}
			}
		}()
	}
	wg.Wait()
	if n, err := caches[0].Check(context.Background()); err != nil || n == 0 {
		t.Errorf("check: %d %v", n, err)
	}
}

// TestCacheKillSafety writes from a child process that is killed with
// SIGKILL mid-write, several times, then checks that the database is
// consistent and every entry holds exactly what was written.
func TestCacheKillSafety(t *testing.T) {
	if p := os.Getenv("IMAGESCOPE_TEST_CACHE_WRITER"); p != "" {
		cacheWriterChild(p)
		return
	}
	path := filepath.Join(t.TempDir(), "answers.db")
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCacheKillSafety$", "-test.count=1")
		cmd.Env = append(os.Environ(), "IMAGESCOPE_TEST_CACHE_WRITER="+path, fmt.Sprintf("IMAGESCOPE_TEST_CACHE_BASE=%d", round*100000))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		written := 0
		for sc.Scan() && written < 30+round*10 {
			if strings.HasPrefix(sc.Text(), "wrote ") {
				written++
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if written == 0 {
			t.Fatalf("round %d: the writer wrote nothing", round)
		}
	}
	c, err := OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, err := c.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n < 90 {
		t.Errorf("only %d entries survived", n)
	}
	rows, err := c.db.Query(`SELECT key, value FROM answers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v []byte
		rows.Scan(&k, &v)
		i, _ := strconv.Atoi(k)
		if !bytes.Equal(v, cacheValue(i)) {
			t.Errorf("entry %s does not hold what was written", k)
		}
	}
	// Still writable after the crashes.
	if err := c.Put(context.Background(), "after", "r", "m", "chat", []byte("x")); err != nil {
		t.Error(err)
	}
}

func cacheWriterChild(path string) {
	base, _ := strconv.Atoi(os.Getenv("IMAGESCOPE_TEST_CACHE_BASE"))
	c, err := OpenCache(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		go func() {
			for i := w; ; i += 4 {
				k := base + i
				if err := c.Put(context.Background(), strconv.Itoa(k), "r", "m", "chat", cacheValue(k)); err != nil {
					fmt.Println("error", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Println("wrote", k)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Minute) // killed long before
	os.Exit(0)
}
