package server

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/imagescope/imagescope/thumbs"
)

// Thumbnail sizes (longest side, pixels) the thumbnail endpoint serves.
var thumbSizes = thumbs.Sizes

const defaultThumbSize = 256

// openImage opens the file of a gallery entry. Only names in the gallery
// are served; the file must resolve (symlinks followed) inside the image
// root, and it is opened through an os.Root so a symlink swapped in later
// cannot lead outside either.
func (s *Server) openImage(name string) (*os.File, fs.FileInfo, error) {
	p, ok := s.cfg.Images[name]
	if !ok {
		return nil, nil, errorf(http.StatusNotFound, "no gallery image named %q", name)
	}
	if s.root == "" {
		return nil, nil, errorf(http.StatusNotFound, "no gallery image named %q", name)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, nil, errorf(http.StatusNotFound, "gallery image %q: bad path", name)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, nil, errorf(http.StatusNotFound, "gallery image %q: file missing", name)
	}
	if !within(s.root, real) {
		return nil, nil, errorf(http.StatusForbidden, "gallery image %q resolves outside the gallery folder", name)
	}
	rel, err := filepath.Rel(s.root, real)
	if err != nil {
		return nil, nil, errorf(http.StatusForbidden, "gallery image %q resolves outside the gallery folder", name)
	}
	root, err := os.OpenRoot(s.root)
	if err != nil {
		return nil, nil, fmt.Errorf("open gallery folder: %w", err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, nil, errorf(http.StatusForbidden, "gallery image %q: cannot open inside the gallery folder", name)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errorf(http.StatusNotFound, "gallery image %q is not a regular file", name)
	}
	return f, fi, nil
}

// etagFor names one version of an image file (and thumbnail size).
func etagFor(name string, fi fs.FileInfo, variant string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s", name, fi.Size(), fi.ModTime().UnixNano(), variant)
	return `"` + hex.EncodeToString(h.Sum(nil)[:12]) + `"`
}

func (s *Server) cacheControl() string {
	if s.cfg.Token != "" {
		return "private, max-age=3600"
	}
	return "public, max-age=3600"
}

func writeHTTPError(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		writeError(w, he.code, "%s", he.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, "%v", err)
}

// handleImage serves a gallery image's original file.
func (s *Server) handleImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f, fi, err := s.openImage(name)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	ctype := http.DetectContentType(head[:n])
	if !strings.HasPrefix(ctype, "image/") || ctype == "image/svg+xml" {
		writeError(w, http.StatusUnsupportedMediaType, "gallery image %q is not a raster image (%s)", name, ctype)
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		writeHTTPError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("ETag", etagFor(name, fi, "original"))
	h.Set("Cache-Control", s.cacheControl())
	h.Set("Content-Disposition", "inline")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// handleThumb serves a JPEG thumbnail (?size=128|256|512, longest side).
func (s *Server) handleThumb(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	size := defaultThumbSize
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || !contains(intStrings(thumbSizes), v) {
			writeError(w, http.StatusBadRequest, "size %q: want one of %v", v, thumbSizes)
			return
		}
		size = n
	}
	f, fi, err := s.openImage(name)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	defer f.Close()
	etag := etagFor(name, fi, "thumb"+strconv.Itoa(size))
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", s.cacheControl())
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatch(match, etag) {
		s.metrics.thumbHits.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	var data []byte
	hit := false
	if s.cfg.Thumbs != nil {
		// Made when the gallery was indexed (or on an earlier request).
		data, hit = s.cfg.Thumbs.Get(name, fi, size)
	}
	if !hit {
		data, hit, err = s.thumbs.get(r.Context(), etag, func() ([]byte, error) {
			b, err := s.makeThumb(f, size)
			if err == nil && s.cfg.Thumbs != nil {
				// First sight of this image (or size): keep it on disk.
				if perr := s.cfg.Thumbs.Put(name, fi, size, b); perr != nil {
					s.log.Warn("thumbnail not stored", "image", name, "err", perr)
				}
			}
			return b, err
		})
	}
	if hit {
		s.metrics.thumbHits.Add(1)
	} else {
		s.metrics.thumbMisses.Add(1)
	}
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			writeError(w, he.code, "thumbnail of %q: %s", name, he.msg)
			return
		}
		writeError(w, http.StatusUnprocessableEntity, "thumbnail of %q: %v", name, err)
		return
	}
	h.Set("Content-Type", "image/jpeg")
	http.ServeContent(w, r, "", fi.ModTime(), bytes.NewReader(data))
}

func intStrings(v []int) []string {
	out := make([]string, len(v))
	for i, n := range v {
		out[i] = strconv.Itoa(n)
	}
	return out
}

func etagMatch(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		part = strings.TrimPrefix(part, "W/")
		if part == etag || part == "*" {
			return true
		}
	}
	return false
}

// makeThumb decodes (pixel limit first) and scales an image to fit
// size x size, encoded as JPEG.
func (s *Server) makeThumb(f *os.File, size int) ([]byte, error) {
	img, err := s.decode(f, s.cfg.MaxPixels)
	if err != nil {
		return nil, err
	}
	return thumbs.Make(img, size)
}

// thumbCache is a byte-bounded LRU of encoded thumbnails that also merges
// concurrent requests for the same thumbnail into one computation.
type thumbCache struct {
	mu       sync.Mutex
	limit    int64
	size     int64
	order    *list.List // front = most recent; values are *thumbEntry
	entries  map[string]*list.Element
	inflight map[string]*thumbCall
	sem      chan struct{}
}

type thumbEntry struct {
	key  string
	data []byte
}

type thumbCall struct {
	done chan struct{}
	data []byte
	err  error
}

func newThumbCache(limit int64) *thumbCache {
	return &thumbCache{
		limit:    limit,
		order:    list.New(),
		entries:  map[string]*list.Element{},
		inflight: map[string]*thumbCall{},
		sem:      make(chan struct{}, 2),
	}
}

// get returns the cached thumbnail for key or computes it with compute (at
// most 2 computations at once, which bounds decode memory; concurrent callers for one key share it).
// hit reports whether compute was not called by this caller.
func (c *thumbCache) get(ctx context.Context, key string, compute func() ([]byte, error)) (data []byte, hit bool, err error) {
	c.mu.Lock()
	if el, ok := c.entries[key]; ok {
		c.order.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*thumbEntry).data, true, nil
	}
	if call, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.data, true, call.err
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
	call := &thumbCall{done: make(chan struct{})}
	c.inflight[key] = call
	c.mu.Unlock()

	select {
	case c.sem <- struct{}{}:
		call.data, call.err = compute()
		<-c.sem
	case <-ctx.Done():
		call.err = ctx.Err()
	}
	c.mu.Lock()
	delete(c.inflight, key)
	if call.err == nil && int64(len(call.data)) <= c.limit {
		c.entries[key] = c.order.PushFront(&thumbEntry{key: key, data: call.data})
		c.size += int64(len(call.data))
		for c.size > c.limit {
			el := c.order.Back()
			e := el.Value.(*thumbEntry)
			c.order.Remove(el)
			delete(c.entries, e.key)
			c.size -= int64(len(e.data))
		}
	}
	c.mu.Unlock()
	close(call.done)
	return call.data, false, call.err
}

func (c *thumbCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
