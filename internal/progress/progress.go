// Package progress reports the progress of long jobs: on a terminal a bar
// with count, rate and ETA redrawn in place; otherwise a log line every
// few seconds.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Options tune a Bar; the zero value is fine.
type Options struct {
	// TTY forces terminal (true) or log (false) output; nil detects it
	// from the writer.
	TTY *bool
	// Interval between log lines (default 10s) when not on a terminal.
	Interval time.Duration
	// Logger for non-terminal output (default: a text logger on the writer).
	Logger *slog.Logger
	// Unit names what is counted (default "items").
	Unit string
	// Now is the clock (tests).
	Now func() time.Time
}

// Bar is a progress reporter; safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	opt      Options
	tty      bool
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	finished bool
	width    int // last drawn line length
	console  *Console
}

// Console is a terminal shared by bars and other output (log lines,
// messages): everything written through it while a bar is drawn clears the
// bar's line first and redraws the bar after, so nothing breaks a bar. Bars
// made with New on a Console draw through it. Safe for concurrent use.
type Console struct {
	mu    sync.Mutex
	w     io.Writer
	line  string // the bar line on screen ("" when none)
	width int
}

// NewConsole wraps w (usually stderr).
func NewConsole(w io.Writer) *Console { return &Console{w: w} }

// Write writes p above the bar being drawn, if any.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.line == "" {
		return c.w.Write(p)
	}
	fmt.Fprintf(c.w, "\r%s\r", strings.Repeat(" ", c.width))
	n, err := c.w.Write(p)
	if len(p) > 0 && p[len(p)-1] != '\n' {
		fmt.Fprint(c.w, "\n")
	}
	fmt.Fprintf(c.w, "%s", c.line)
	return n, err
}

// draw puts a bar line on screen; final ends it.
func (c *Console) draw(line string, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pad := ""
	if n := c.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	if final {
		fmt.Fprintf(c.w, "\r%s%s\n", line, pad)
		c.line, c.width = "", 0
		return
	}
	fmt.Fprintf(c.w, "\r%s%s", line, pad)
	c.line, c.width = "\r"+line, len(line)
}

// New starts a bar; total <= 0 means unknown.
func New(w io.Writer, label string, total int64, opt Options) *Bar {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Interval <= 0 {
		opt.Interval = 10 * time.Second
	}
	if opt.Unit == "" {
		opt.Unit = "items"
	}
	tty := false
	console, _ := w.(*Console)
	switch {
	case opt.TTY != nil:
		tty = *opt.TTY
	case console != nil:
		tty = isTerminal(console.w)
	default:
		tty = isTerminal(w)
	}
	if !tty && opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(w, nil))
	}
	now := opt.Now()
	return &Bar{w: w, label: label, opt: opt, tty: tty, total: total, start: now, last: now, console: console}
}

// SetTotal changes the expected total.
func (b *Bar) SetTotal(total int64) {
	b.mu.Lock()
	b.total = total
	b.mu.Unlock()
}

// Add records n more finished units.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if b.finished {
		return
	}
	now := b.opt.Now()
	every := b.opt.Interval
	if b.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(b.last) >= every || (b.total > 0 && b.done >= b.total && b.tty) {
		b.last = now
		b.render(now, false)
	}
}

// Done returns the count so far.
func (b *Bar) Done() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// Finish draws the final state (and ends the terminal line).
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	b.render(b.opt.Now(), true)
}

func (b *Bar) render(now time.Time, final bool) {
	el := now.Sub(b.start)
	rate := 0.0
	if el > 0 {
		rate = float64(b.done) / el.Seconds()
	}
	eta := time.Duration(-1)
	if b.total > 0 && rate > 0 && b.done <= b.total {
		eta = time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
	}
	if !b.tty {
		args := []any{"done", b.done}
		if b.total > 0 {
			args = append(args, "total", b.total, "percent", fmt.Sprintf("%.1f", 100*float64(b.done)/float64(b.total)))
		}
		args = append(args, "rate", fmt.Sprintf("%.2f %s/s", rate, b.opt.Unit), "elapsed", el.Round(time.Second).String())
		if eta >= 0 && !final {
			args = append(args, "eta", eta.Round(time.Second).String())
		}
		msg := b.label
		if final {
			msg += " finished"
		}
		b.opt.Logger.Info(msg, args...)
		return
	}
	var sb strings.Builder
	sb.WriteString(b.label)
	sb.WriteString(" ")
	if b.total > 0 {
		const cells = 30
		frac := min(1, float64(b.done)/float64(b.total))
		full := int(frac * cells)
		sb.WriteString("[" + strings.Repeat("=", full) + strings.Repeat(" ", cells-full) + "] ")
		fmt.Fprintf(&sb, "%d/%d %3.0f%%", b.done, b.total, 100*frac)
	} else {
		fmt.Fprintf(&sb, "%d", b.done)
	}
	fmt.Fprintf(&sb, "  %.1f %s/s", rate, b.opt.Unit)
	if final {
		fmt.Fprintf(&sb, "  %s", el.Round(time.Second))
	} else if eta >= 0 {
		fmt.Fprintf(&sb, "  ETA %s", eta.Round(time.Second))
	}
	line := sb.String()
	if b.console != nil {
		b.console.draw(line, final)
		return
	}
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.width = len(line)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(b.w, "\r%s%s%s", line, pad, end)
}

// IsTerminal reports whether w is a terminal (output meant for a person
// watching, where interim lines help).
func IsTerminal(w io.Writer) bool {
	if c, ok := w.(*Console); ok {
		w = c.w
	}
	return isTerminal(w)
}
