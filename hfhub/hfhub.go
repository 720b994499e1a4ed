// Package hfhub downloads files of HuggingFace hub model repositories into
// the hub's standard cache layout, shared with the Python huggingface_hub
// library:
//
//	$HF_HOME/hub/models--ORG--NAME/
//	    blobs/<etag>                      file contents, named by their etag
//	    refs/<revision>                   commit hash the revision pointed at
//	    snapshots/<commit>/<file>         relative symlink to ../../blobs/<etag>
//	    .no_exist/<commit>/<file>         marks a file the repo does not have
//
// It honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and
// HF_HUB_OFFLINE. Downloads resume from a partial blobs/<etag>.incomplete
// with an HTTP Range request and are checked against the announced size and,
// for LFS files, the sha256 the etag carries.
package hfhub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/internal/backoff"
)

// DefaultEndpoint is the public hub.
const DefaultEndpoint = "https://huggingface.co"

// Errors; test with errors.Is.
var (
	ErrNotFound     = errors.New("not found on the hub")
	ErrUnauthorized = errors.New("hub access denied")
	ErrGated        = errors.New("gated repository")
	ErrOffline      = errors.New("not in the local hub cache and offline mode is on")
	// ErrUnreachable marks a failure to reach the hub at all (name
	// lookup, connection, TLS, a dropped transfer).
	ErrUnreachable = errors.New("hub unreachable")
	ErrCorrupt     = errors.New("downloaded file does not match the hub's size or checksum")
)

// Options configure a Client. Zero fields are filled from the environment
// (Getenv, default os.Getenv).
type Options struct {
	Getenv func(string) string
	// Endpoint is the hub's base URL (HF_ENDPOINT; default huggingface.co).
	Endpoint string
	// Token is the bearer token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, or the
	// file $HF_HOME/token).
	Token string
	// CacheDir is the hub cache (HF_HUB_CACHE, else $HF_HOME/hub, HF_HOME
	// defaulting to ~/.cache/huggingface).
	CacheDir string
	// Offline uses only the local cache (also set by HF_HUB_OFFLINE=1).
	Offline    bool
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// File is one file of a repository to fetch.
type File struct {
	Name string
	// Optional files may be missing from the repository.
	Optional bool
}

// Client downloads from the hub. It is safe for concurrent use.
type Client struct {
	endpoint string
	token    string
	cacheDir string
	offline  bool
	http     *http.Client
	log      *slog.Logger
}

// NewClient builds a client from opt and the environment.
func NewClient(opt Options) *Client {
	getenv := opt.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	hfHome := getenv("HF_HOME")
	if hfHome == "" {
		if x := getenv("XDG_CACHE_HOME"); x != "" {
			hfHome = filepath.Join(x, "huggingface")
		} else if h := getenv("HOME"); h != "" {
			hfHome = filepath.Join(h, ".cache", "huggingface")
		} else if d, err := os.UserCacheDir(); err == nil {
			hfHome = filepath.Join(d, "huggingface")
		} else {
			hfHome = filepath.Join(os.TempDir(), "huggingface")
		}
	}
	c := &Client{endpoint: opt.Endpoint, token: opt.Token, cacheDir: opt.CacheDir, offline: opt.Offline, http: opt.HTTPClient, log: opt.Logger}
	if c.endpoint == "" {
		c.endpoint = getenv("HF_ENDPOINT")
	}
	if c.endpoint == "" {
		c.endpoint = DefaultEndpoint
	}
	c.endpoint = strings.TrimRight(c.endpoint, "/")
	if c.token == "" {
		c.token = getenv("HF_TOKEN")
	}
	if c.token == "" {
		c.token = getenv("HUGGING_FACE_HUB_TOKEN")
	}
	if c.token == "" {
		p := getenv("HF_TOKEN_PATH")
		if p == "" {
			p = filepath.Join(hfHome, "token")
		}
		if b, err := os.ReadFile(p); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	if c.cacheDir == "" {
		c.cacheDir = getenv("HF_HUB_CACHE")
	}
	if c.cacheDir == "" {
		c.cacheDir = filepath.Join(hfHome, "hub")
	}
	if !c.offline {
		switch strings.ToLower(getenv("HF_HUB_OFFLINE")) {
		case "1", "true", "yes", "on":
			c.offline = true
		}
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// CacheDir is the hub cache directory.
func (c *Client) CacheDir() string { return c.cacheDir }

// Offline reports whether the client only reads the cache.
func (c *Client) Offline() bool { return c.offline }

var (
	repoIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$`)
	commitPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// RepoDir is the cache folder of a model repository.
func (c *Client) RepoDir(repoID string) string {
	return filepath.Join(c.cacheDir, "models--"+strings.ReplaceAll(repoID, "/", "--"))
}

// Snapshot makes the files of repoID at revision ("" = "main") available
// locally and returns the snapshot directory holding them. Missing files
// are downloaded (resuming partial downloads); in offline mode, or when the
// hub cannot be reached, the cached snapshot is used if it is complete.
// progress, if not nil, is called as bytes arrive.
func (c *Client) Snapshot(ctx context.Context, repoID, revision string, files []File, progress func(name string, done, total int64)) (string, error) {
	if !repoIDPattern.MatchString(repoID) || strings.Contains(repoID, "..") {
		return "", fmt.Errorf("hub: %q is not a model id like org/name", repoID)
	}
	if revision == "" {
		revision = "main"
	}
	if len(files) == 0 {
		return "", fmt.Errorf("hub %s: no files requested", repoID)
	}
	for _, f := range files {
		if !validFileName(f.Name) {
			return "", fmt.Errorf("hub %s: bad file name %q", repoID, f.Name)
		}
	}
	if c.offline {
		dir, err := c.cached(repoID, revision, files)
		if err != nil {
			return "", fmt.Errorf("hub %s@%s (HF_HUB_OFFLINE=1; download the model once with network, or unset HF_HUB_OFFLINE): %w", repoID, revision, err)
		}
		return dir, nil
	}
	dir, err := c.download(ctx, repoID, revision, files, progress)
	if err != nil {
		var te *transportError
		if errors.As(err, &te) && ctx.Err() == nil {
			if d, cerr := c.cached(repoID, revision, files); cerr == nil {
				c.log.Warn("hub unreachable; using the cached snapshot", "repo", repoID, "revision", revision, "err", err)
				return d, nil
			}
			cause := err
			var ue *url.Error
			if errors.As(err, &ue) {
				cause = ue.Err
			}
			return "", &transportError{fmt.Errorf("hub %s@%s: cannot reach %s (%v), and the model is not in the HF cache %s; set HF_ENDPOINT to use a mirror, or HF_HUB_OFFLINE=1 once the model is in the cache",
				repoID, revision, c.endpoint, cause, c.cacheDir)}
		}
		return "", err
	}
	return dir, nil
}

func validFileName(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return false
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// cached resolves a snapshot from the cache only.
func (c *Client) cached(repoID, revision string, files []File) (string, error) {
	repo := c.RepoDir(repoID)
	commit := revision
	if !commitPattern.MatchString(revision) {
		b, err := os.ReadFile(filepath.Join(repo, "refs", filepath.FromSlash(revision)))
		if err != nil {
			return "", fmt.Errorf("revision %q of %s is not in the cache %s: %w", revision, repoID, c.cacheDir, ErrOffline)
		}
		commit = strings.TrimSpace(string(b))
	}
	snap := filepath.Join(repo, "snapshots", commit)
	for _, f := range files {
		p := filepath.Join(snap, filepath.FromSlash(f.Name))
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if f.Optional {
			continue
		}
		return "", fmt.Errorf("%s is not in the cached snapshot %s: %w", f.Name, snap, ErrOffline)
	}
	return snap, nil
}

// transportError marks a failure to reach the hub at all.
type transportError struct{ err error }

func (e *transportError) Error() string        { return e.err.Error() }
func (e *transportError) Unwrap() error        { return e.err }
func (e *transportError) Is(target error) bool { return target == ErrUnreachable }

// meta is what a HEAD on the resolve URL tells about a file.
type meta struct {
	commit string
	etag   string
	size   int64 // -1 unknown
}

func (c *Client) resolveURL(repoID, revision, name string) string {
	return c.endpoint + "/" + repoID + "/resolve/" + url.PathEscape(revision) + "/" + escapePath(name)
}

func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

func (c *Client) download(ctx context.Context, repoID, revision string, files []File, progress func(string, int64, int64)) (string, error) {
	repo := c.RepoDir(repoID)
	commit := ""
	if commitPattern.MatchString(revision) {
		commit = revision
	}
	var snap string
	for _, f := range files {
		rev := revision
		if commit != "" {
			rev = commit // every file from the same commit
		}
		m, err := c.head(ctx, repoID, rev, f.Name)
		if m.commit != "" && commit == "" {
			commit = m.commit
		}
		if err != nil {
			if errors.Is(err, errEntryNotFound) && f.Optional {
				if commit != "" {
					c.markMissing(repo, commit, f.Name)
				}
				continue
			}
			if errors.Is(err, errEntryNotFound) {
				return "", fmt.Errorf("hub %s@%s: file %s: %w", repoID, revision, f.Name, ErrNotFound)
			}
			return "", fmt.Errorf("hub %s@%s: file %s: %w", repoID, revision, f.Name, err)
		}
		if commit == "" {
			return "", fmt.Errorf("hub %s@%s: file %s: the server sent no X-Repo-Commit header (is HF_ENDPOINT=%s a hub?)", repoID, revision, f.Name, c.endpoint)
		}
		if m.etag == "" {
			return "", fmt.Errorf("hub %s@%s: file %s: the server sent no ETag", repoID, revision, f.Name)
		}
		snap = filepath.Join(repo, "snapshots", commit)
		blob := filepath.Join(repo, "blobs", m.etag)
		if err := c.fetchBlob(ctx, repoID, commit, f.Name, m, blob, progress); err != nil {
			return "", fmt.Errorf("hub %s@%s: file %s: %w", repoID, revision, f.Name, err)
		}
		if err := linkSnapshot(blob, filepath.Join(snap, filepath.FromSlash(f.Name))); err != nil {
			return "", fmt.Errorf("hub %s: file %s: %w", repoID, f.Name, err)
		}
	}
	if commit == "" {
		return "", fmt.Errorf("hub %s@%s: no file could be resolved: %w", repoID, revision, ErrNotFound)
	}
	snap = filepath.Join(repo, "snapshots", commit)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		return "", err
	}
	if revision != commit {
		ref := filepath.Join(repo, "refs", filepath.FromSlash(revision))
		if err := atomicfile.Write(ref, []byte(commit)); err != nil {
			return "", fmt.Errorf("hub %s: write ref %s: %w", repoID, revision, err)
		}
	}
	return snap, nil
}

var errEntryNotFound = errors.New("entry not found")

// head asks the resolve endpoint about a file, following only same-host
// (relative) redirects, as a renamed repository produces; a redirect to
// another host is the LFS CDN and carries the metadata already.
func (c *Client) head(ctx context.Context, repoID, revision, name string) (meta, error) {
	u := c.resolveURL(repoID, revision, name)
	hc := *c.http
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for hops := 0; ; hops++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return meta{}, err
		}
		c.auth(req)
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := hc.Do(req)
		if err != nil {
			return meta{}, &transportError{fmt.Errorf("HEAD %s: %w", u, err)}
		}
		resp.Body.Close()
		m := meta{commit: resp.Header.Get("X-Repo-Commit"), size: -1}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && m.commit == "" && hops < 5 {
			loc, err := resp.Location()
			if err != nil {
				return m, fmt.Errorf("HEAD %s: redirect without Location", u)
			}
			u = loc.String()
			continue
		}
		if resp.StatusCode >= 400 {
			return m, c.statusError(resp, repoID, revision)
		}
		m.etag = normalizeEtag(resp.Header.Get("X-Linked-Etag"))
		if m.etag == "" {
			m.etag = normalizeEtag(resp.Header.Get("ETag"))
		}
		sz := resp.Header.Get("X-Linked-Size")
		if sz == "" {
			sz = resp.Header.Get("Content-Length")
		}
		if n, err := strconv.ParseInt(sz, 10, 64); err == nil && n >= 0 {
			m.size = n
		}
		return m, nil
	}
}

// normalizeEtag strips quotes and the weak-validator prefix.
func normalizeEtag(e string) string {
	e = strings.TrimPrefix(strings.TrimSpace(e), "W/")
	e = strings.Trim(e, `"`)
	if strings.ContainsAny(e, `/\`) || e == "." || e == ".." {
		return ""
	}
	return e
}

func (c *Client) auth(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "imagescope-hfhub/1")
}

// statusError turns an error status into a message that says what to do.
func (c *Client) statusError(resp *http.Response, repoID, revision string) error {
	code := resp.Header.Get("X-Error-Code")
	msg := resp.Header.Get("X-Error-Message")
	if msg != "" {
		msg = " (" + msg + ")"
	}
	switch {
	case code == "EntryNotFound":
		return errEntryNotFound
	case code == "RevisionNotFound":
		return fmt.Errorf("revision %q does not exist%s: %w", revision, msg, ErrNotFound)
	case code == "GatedRepo" || (resp.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(msg), "gated")):
		return fmt.Errorf("%s is gated: accept its licence at %s/%s while logged in, then set HF_TOKEN to a token of that account%s: %w",
			repoID, c.endpoint, repoID, msg, ErrGated)
	case resp.StatusCode == http.StatusUnauthorized || code == "RepoNotFound":
		hint := "set HF_TOKEN to a token with access if it is private or gated"
		if c.token != "" {
			hint = "the token in HF_TOKEN was refused or has no access"
		}
		return fmt.Errorf("repository %s not found or needs authentication (%s)%s: %w", repoID, hint, msg, ErrUnauthorized)
	case resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("access to %s forbidden (check HF_TOKEN's permissions)%s: %w", repoID, msg, ErrUnauthorized)
	case resp.StatusCode == http.StatusNotFound:
		return errEntryNotFound
	}
	return fmt.Errorf("HTTP %d from %s%s", resp.StatusCode, resp.Request.URL.Redacted(), msg)
}

// markMissing records that a file is absent at a commit (as huggingface_hub
// does), so offline runs do not look for it.
func (c *Client) markMissing(repo, commit, name string) {
	p := filepath.Join(repo, ".no_exist", commit, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
		_ = os.WriteFile(p, nil, 0o644)
	}
}

// fetchBlob makes sure blob holds the file, downloading it into
// blob.incomplete (resuming what is there) and renaming when complete.
func (c *Client) fetchBlob(ctx context.Context, repoID, commit, name string, m meta, blob string, progress func(string, int64, int64)) error {
	if fi, err := os.Stat(blob); err == nil && (m.size < 0 || fi.Size() == m.size) {
		if progress != nil {
			progress(name, fi.Size(), fi.Size())
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, blob+".lock")
	if err != nil {
		return fmt.Errorf("lock %s: %w", blob, err)
	}
	defer unlock()
	// Another process may have finished it while we waited for the lock.
	if fi, err := os.Stat(blob); err == nil && (m.size < 0 || fi.Size() == m.size) {
		return nil
	}
	part := blob + ".incomplete"
	for tries := 0; ; tries++ {
		err := c.get(ctx, repoID, c.resolveURL(repoID, commit, name), part, name, m.size, progress)
		if err == nil {
			break
		}
		var te *transportError
		if !errors.As(err, &te) || tries >= 3 || ctx.Err() != nil {
			return err
		}
		// A dropped connection: resume from what arrived.
		c.log.Warn("hub download interrupted; resuming", "file", name, "err", err)
		wait := backoff.Policy{Base: 500 * time.Millisecond, Max: 4 * time.Second}.Delay(tries + 1)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
	if err := verify(part, m); err != nil {
		os.Remove(part)
		return err
	}
	return os.Rename(part, blob)
}

// get downloads url into part, appending with a Range request when part
// already holds a prefix.
func (c *Client) get(ctx context.Context, repoID, u, part, name string, size int64, progress func(string, int64, int64)) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if size >= 0 && have > size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		have, _ = f.Seek(0, io.SeekStart)
	}
	if size >= 0 && have == size {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	c.auth(req)
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &transportError{fmt.Errorf("GET %s: %w", u, err)}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		// Appending at have; check the server agrees.
		if cr := resp.Header.Get("Content-Range"); cr != "" && !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", have)) {
			return fmt.Errorf("GET %s: unexpected Content-Range %q for a resume at %d", u, cr, have)
		}
	case http.StatusOK:
		if have > 0 { // server ignored the range: start over
			if err := f.Truncate(0); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			have = 0
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return nil // already complete; verify decides
	default:
		return fmt.Errorf("GET %s: %w", resp.Request.URL.Redacted(), c.statusError(resp, repoID, ""))
	}
	total := size
	if total < 0 && resp.ContentLength >= 0 {
		total = have + resp.ContentLength
	}
	done := have
	if progress != nil {
		progress(name, done, total)
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			if progress != nil {
				progress(name, done, total)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &transportError{fmt.Errorf("GET %s after %d bytes: %w", u, done, rerr)}
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if size >= 0 && done < size {
		return &transportError{fmt.Errorf("GET %s: connection closed after %d of %d bytes", u, done, size)}
	}
	return nil
}

// verify checks the size and, for LFS files (64-hex etag), the sha256.
func verify(p string, m meta) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if m.size >= 0 && fi.Size() != m.size {
		return fmt.Errorf("size %d, the hub announced %d: %w", fi.Size(), m.size, ErrCorrupt)
	}
	if sha256Pattern.MatchString(m.etag) {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != m.etag {
			return fmt.Errorf("sha256 %s, the hub announced %s: %w", got, m.etag, ErrCorrupt)
		}
	}
	return nil
}

// linkSnapshot points snapshots/<commit>/<file> at the blob with a relative
// symlink, or copies the blob where symlinks are not available.
func linkSnapshot(blob, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(dst), blob)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(dst); err == nil && cur == rel {
		return nil
	}
	tmp := fmt.Sprintf("%s.tmp-%d-%x", dst, os.Getpid(), rand.Uint64())
	if err := os.Symlink(rel, tmp); err == nil {
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
	// No symlinks (some Windows setups): copy.
	in, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.WriteFunc(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
