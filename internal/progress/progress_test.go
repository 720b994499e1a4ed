package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTerminalBar(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(0, 0)}
	yes := true
	b := New(&buf, "index", 100, Options{TTY: &yes, Now: c.now, Unit: "images"})
	c.t = c.t.Add(10 * time.Second)
	b.Add(50)
	out := buf.String()
	if !strings.HasPrefix(out, "\rindex [===============               ] 50/100  50%  5.0 images/s  ETA 10s") {
		t.Fatalf("bar %q", out)
	}
	b.Add(1) // too soon to redraw
	if buf.String() != out {
		t.Fatalf("redrew too soon: %q", buf.String())
	}
	c.t = c.t.Add(10 * time.Second)
	b.Finish()
	if !strings.HasSuffix(buf.String(), "51/100  51%  2.5 images/s  20s    \n") { // padded over the longer line
		t.Fatalf("final %q", buf.String())
	}
}

func TestLogLines(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(0, 0)}
	no := false
	b := New(&buf, "index", 0, Options{TTY: &no, Now: c.now, Interval: time.Second})
	b.Add(3)
	if buf.Len() != 0 {
		t.Fatalf("logged before the interval: %q", buf.String())
	}
	b.SetTotal(12)
	c.t = c.t.Add(2 * time.Second)
	b.Add(3)
	if s := buf.String(); !strings.Contains(s, "msg=index done=6 total=12 percent=50.0") || !strings.Contains(s, "eta=2s") {
		t.Fatalf("log %q", s)
	}
	b.Finish()
	if s := buf.String(); !strings.Contains(s, `msg="index finished" done=6`) {
		t.Fatalf("final log %q", s)
	}
	if isTerminal(&buf) {
		t.Fatal("a buffer is not a terminal")
	}
}

// TestConsoleKeepsBarWhole: a line written through the console while a bar
// is drawn clears the bar's line, appears on a line of its own, and the bar
// is drawn again below it; after the bar finishes, writes pass through.
func TestConsoleKeepsBarWhole(t *testing.T) {
	var buf bytes.Buffer
	con := NewConsole(&buf)
	c := &clock{t: time.Unix(0, 0)}
	yes := true
	b := New(con, "index", 10, Options{TTY: &yes, Now: c.now, Unit: "images"})
	c.t = c.t.Add(time.Second)
	b.Add(4)
	bar := buf.String()
	buf.Reset()
	con.Write([]byte("level=WARN msg=\"slow server\"\n"))
	got := buf.String()
	blank := "\r" + strings.Repeat(" ", len(bar)-1) + "\r"
	if want := blank + "level=WARN msg=\"slow server\"\n" + bar; got != want {
		t.Fatalf("log line over a bar:\n got %q\nwant %q", got, want)
	}
	buf.Reset()
	con.Write([]byte("no newline"))
	if !strings.HasPrefix(buf.String(), blank+"no newline\n\r") {
		t.Fatalf("a line without newline: %q", buf.String())
	}
	b.Finish()
	buf.Reset()
	con.Write([]byte("after\n"))
	if buf.String() != "after\n" {
		t.Fatalf("after the bar: %q", buf.String())
	}
}
