package clip

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The CLIP tokenizer: OpenAI's byte-level BPE with `</w>` word ends.
//
// Two conventions are supported; they agree on plain text and differ only on
// HTML entities and on literal special-token text:
//
//   - ConventionOpenCLIP (the default, and what the reference ids follow):
//     text is HTML-unescaped twice (Python's html.unescape, HTML5 rules),
//     whitespace is collapsed (Python's str.isspace set), the text is
//     lower-cased with Python's str.lower rules, and the literal strings
//     "<start_of_text>" / "<end_of_text>" inside the text become the start /
//     end ids.
//   - ConventionHF (transformers' slow CLIPTokenizer without ftfy): no HTML
//     unescaping; the literal strings "<|startoftext|>" / "<|endoftext|>"
//     become the start / end ids; control characters are dropped,
//     whitespace is collapsed and CJK ideographs are split off before
//     lower-casing.
//
// ftfy.fix_text, which open_clip runs first, is reproduced only in its
// model-free part (fixTextLite: terminal escapes, C1 controls, ligatures,
// full-width forms, curly quotes, control characters, NFC); its mojibake
// repair and its own HTML step are not. All of it is the identity on plain
// ASCII, the setting the reference ids were produced in.

// Default token ids of CLIP's vocabulary and its context length.
const (
	DefaultContextLength = 77
	defaultSOT           = 49406
	defaultEOT           = 49407
	// clipMergeCount is the number of merges CLIP uses from
	// bpe_simple_vocab_16e6.txt.gz: 49152 - 256 - 2.
	clipMergeCount = 49152 - 256 - 2
	// tokenCacheMax bounds the per-word BPE cache; it is cleared when full.
	tokenCacheMax = 1 << 16
	// maxCachedWord is the longest pre-token kept in the cache.
	maxCachedWord = 256
	// maxBPEWord bounds the bytes of one pre-token that Encode merges: the
	// merge loop is quadratic in the word length, and a word this long
	// yields far more tokens than any context holds.
	maxBPEWord = 4096
)

// Convention selects how text is cleaned and which literal strings count as
// special tokens (see the package notes above).
type Convention int

const (
	// ConventionOpenCLIP follows open_clip's SimpleTokenizer (default).
	ConventionOpenCLIP Convention = iota
	// ConventionHF follows HuggingFace's slow CLIPTokenizer.
	ConventionHF
)

// String names the convention.
func (c Convention) String() string {
	switch c {
	case ConventionOpenCLIP:
		return "open_clip"
	case ConventionHF:
		return "hf"
	}
	return fmt.Sprintf("Convention(%d)", int(c))
}

// Tokenizer turns text into CLIP token ids. It is safe for concurrent use.
type Tokenizer struct {
	encoder    map[string]int32    // token -> id
	decoder    []string            // id -> token
	ranks      map[uint64]bpeMerge // pairKey(first, second) -> merge
	byteID     [256]int32          // byte -> id of its character
	byteEndID  [256]int32          // byte -> id of its character + "</w>"
	byteEnc    [256]string         // byte -> its printable unicode character
	byteDec    map[rune]byte
	sot, eot   int32
	context    int
	convention Convention
	maxWord    int // Encode merges at most this many bytes of one word

	cache *tokenCache
}

type tokenCache struct {
	mu sync.Mutex
	m  map[string][]int32
}

func (c *tokenCache) get(k string) ([]int32, bool) {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	return v, ok
}

func (c *tokenCache) put(k string, v []int32) {
	c.mu.Lock()
	if len(c.m) >= tokenCacheMax {
		clear(c.m)
	}
	c.m[k] = v
	c.mu.Unlock()
}

// bytesToUnicode returns CLIP's byte -> character table in its canonical
// order: the printable ranges keep their code points, the other 68 bytes map
// to U+0100+n. The returned order is the vocabulary order of the first 256
// entries.
func bytesToUnicode() (order []byte, table [256]rune) {
	in := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	for b := 0; b < 256; b++ {
		if in(b) {
			order = append(order, byte(b))
			table[b] = rune(b)
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !in(b) {
			order = append(order, byte(b))
			table[b] = rune(256 + n)
			n++
		}
	}
	return order, table
}

func newTokenizer(vocab map[string]int32, merges [][2]string) (*Tokenizer, error) {
	if len(vocab) == 0 {
		return nil, errors.New("empty vocabulary")
	}
	t := &Tokenizer{
		encoder: vocab,
		ranks:   make(map[uint64]bpeMerge, len(merges)),
		byteDec: make(map[rune]byte, 256),
		sot:     defaultSOT,
		eot:     defaultEOT,
		context: DefaultContextLength,
		maxWord: maxBPEWord,
		cache:   &tokenCache{m: make(map[string][]int32)},
	}
	_, table := bytesToUnicode()
	for b, r := range table {
		t.byteEnc[b] = string(r)
		t.byteDec[r] = byte(b)
		id, ok := vocab[string(r)]
		idEnd, okEnd := vocab[string(r)+"</w>"]
		if !ok || !okEnd {
			return nil, fmt.Errorf("vocabulary lacks the byte token %q or %q", string(r), string(r)+"</w>")
		}
		t.byteID[b], t.byteEndID[b] = id, idEnd
	}
	// Merges are kept by token id. A merge whose parts or result are not
	// in the vocabulary could never produce an encodable token; it is
	// skipped (it does not occur in consistent vocabulary/merges pairs).
	for i, m := range merges {
		a, okA := vocab[m[0]]
		b, okB := vocab[m[1]]
		c, okC := vocab[m[0]+m[1]]
		if !okA || !okB || !okC {
			continue
		}
		k := pairKey(a, b)
		if _, dup := t.ranks[k]; !dup {
			t.ranks[k] = bpeMerge{rank: int32(i), id: c}
		}
	}
	maxID := int32(-1)
	for _, id := range vocab {
		if id < 0 {
			return nil, fmt.Errorf("vocabulary has negative id %d", id)
		}
		maxID = max(maxID, id)
	}
	t.decoder = make([]string, maxID+1)
	for tok, id := range vocab {
		t.decoder[id] = tok
	}
	for _, name := range []string{"<|startoftext|>", "<start_of_text>"} {
		if id, ok := vocab[name]; ok {
			t.sot = id
			break
		}
	}
	for _, name := range []string{"<|endoftext|>", "<end_of_text>"} {
		if id, ok := vocab[name]; ok {
			t.eot = id
			break
		}
	}
	if int(t.sot) >= len(t.decoder) || int(t.eot) >= len(t.decoder) {
		return nil, fmt.Errorf("vocabulary of %d entries has no start/end tokens", len(vocab))
	}
	return t, nil
}

// LoadTokenizer loads the tokenizer of a model directory: vocab.json +
// merges.txt (HF layout), else tokenizer.json (HF fast layout), else
// bpe_simple_vocab_16e6.txt.gz (open_clip). The context length comes from
// tokenizer_config.json's model_max_length when it is a sane value, else 77.
// The convention is ConventionOpenCLIP; see WithConvention.
func LoadTokenizer(dir string) (*Tokenizer, error) {
	var (
		t   *Tokenizer
		err error
	)
	vocabPath := filepath.Join(dir, "vocab.json")
	mergesPath := filepath.Join(dir, "merges.txt")
	tokJSON := filepath.Join(dir, "tokenizer.json")
	gz := filepath.Join(dir, "bpe_simple_vocab_16e6.txt.gz")
	switch {
	case fileExists(vocabPath) && fileExists(mergesPath):
		t, err = LoadTokenizerFiles(vocabPath, mergesPath)
	case fileExists(tokJSON):
		t, err = LoadTokenizerJSON(tokJSON)
	case fileExists(gz):
		t, err = LoadTokenizerBPE(gz)
	default:
		return nil, fmt.Errorf("load tokenizer from %s: no vocab.json+merges.txt, tokenizer.json or bpe_simple_vocab_16e6.txt.gz", dir)
	}
	if err != nil {
		return nil, err
	}
	if n, ok := readModelMaxLength(filepath.Join(dir, "tokenizer_config.json")); ok {
		t.context = n
	}
	return t, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func readModelMaxLength(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	var cfg struct {
		ModelMaxLength float64 `json:"model_max_length"`
	}
	if json.Unmarshal(b, &cfg) != nil {
		return 0, false
	}
	// HF writes 1e30 for "no limit"; such values say nothing about CLIP.
	if cfg.ModelMaxLength >= 3 && cfg.ModelMaxLength <= 4096 {
		return int(cfg.ModelMaxLength), true
	}
	return 0, false
}

// LoadTokenizerFiles builds a tokenizer from HF's vocab.json (token -> id) and
// merges.txt ("#version" header, then one "a b" merge per line, by rank).
func LoadTokenizerFiles(vocabPath, mergesPath string) (*Tokenizer, error) {
	vb, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer vocabulary: %w", err)
	}
	var vocab map[string]int32
	if err := json.Unmarshal(vb, &vocab); err != nil {
		return nil, fmt.Errorf("load tokenizer vocabulary %s: %w", vocabPath, err)
	}
	f, err := os.Open(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer merges: %w", err)
	}
	defer f.Close()
	merges, err := readMerges(f, mergesPath, -1)
	if err != nil {
		return nil, err
	}
	t, err := newTokenizer(vocab, merges)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", vocabPath, err)
	}
	return t, nil
}

// readMerges reads merge lines, skipping a leading "#version" header and
// blank lines; limit < 0 reads them all.
func readMerges(r io.Reader, name string, limit int) ([][2]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var merges [][2]string
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if line == 1 && strings.HasPrefix(s, "#version") {
			continue
		}
		if s == "" {
			continue
		}
		if limit >= 0 && len(merges) >= limit {
			break
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("load tokenizer merges %s: line %d: want two symbols separated by one space, got %q", name, line, s)
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("load tokenizer merges %s: %w", name, err)
	}
	if len(merges) == 0 {
		return nil, fmt.Errorf("load tokenizer merges %s: no merges", name)
	}
	return merges, nil
}

// LoadTokenizerBPE builds the tokenizer from open_clip's
// bpe_simple_vocab_16e6.txt.gz exactly as open_clip does: merges are lines
// 1..48894 of the file; the vocabulary is the 256 byte characters, the same
// with `</w>`, every merge's concatenation in rank order, then the start and
// end tokens (49406, 49407).
func LoadTokenizerBPE(path string) (*Tokenizer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	defer zr.Close()
	merges, err := readMergesGz(zr, path)
	if err != nil {
		return nil, err
	}
	order, table := bytesToUnicode()
	vocab := make(map[string]int32, 2*256+len(merges)+2)
	next := int32(0)
	add := func(s string) {
		if _, ok := vocab[s]; !ok {
			vocab[s] = next
		}
		next++
	}
	for _, b := range order {
		add(string(table[b]))
	}
	for _, b := range order {
		add(string(table[b]) + "</w>")
	}
	for _, m := range merges {
		add(m[0] + m[1])
	}
	add("<|startoftext|>")
	add("<|endoftext|>")
	t, err := newTokenizer(vocab, merges)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// readMergesGz reads the open_clip merges file: line 0 is a header, lines
// 1..clipMergeCount are the merges, the rest is ignored.
func readMergesGz(r io.Reader, name string) ([][2]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var merges [][2]string
	line := 0
	for sc.Scan() && len(merges) < clipMergeCount {
		line++
		if line == 1 {
			continue
		}
		s := strings.TrimRight(sc.Text(), "\r")
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" {
			return nil, fmt.Errorf("load tokenizer merges %s: line %d: want two symbols separated by one space, got %q", name, line, s)
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("load tokenizer merges %s: %w", name, err)
	}
	if len(merges) < clipMergeCount {
		return nil, fmt.Errorf("load tokenizer merges %s: %d merges, want %d", name, len(merges), clipMergeCount)
	}
	return merges, nil
}

// LoadTokenizerJSON builds the tokenizer from an HF fast-tokenizer file
// (tokenizer.json with a BPE model). Merges may be "a b" strings or
// ["a","b"] pairs. Added tokens extend the vocabulary.
func LoadTokenizerJSON(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	var doc struct {
		Model struct {
			Type   string            `json:"type"`
			Vocab  map[string]int32  `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int32  `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	if doc.Model.Type != "" && doc.Model.Type != "BPE" {
		return nil, fmt.Errorf("load tokenizer %s: model type %q, want BPE", path, doc.Model.Type)
	}
	merges := make([][2]string, 0, len(doc.Model.Merges))
	for i, raw := range doc.Model.Merges {
		raw = bytes.TrimSpace(raw)
		var s string
		var pair []string
		switch {
		case len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil:
			a, c, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("load tokenizer %s: merge %d: %q is not a pair", path, i, s)
			}
			merges = append(merges, [2]string{a, c})
		case len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &pair) == nil && len(pair) == 2:
			merges = append(merges, [2]string{pair[0], pair[1]})
		default:
			return nil, fmt.Errorf("load tokenizer %s: merge %d: unreadable %s", path, i, raw)
		}
	}
	vocab := doc.Model.Vocab
	if vocab == nil {
		vocab = map[string]int32{}
	}
	for _, at := range doc.AddedTokens {
		if _, ok := vocab[at.Content]; !ok {
			vocab[at.Content] = at.ID
		}
	}
	t, err := newTokenizer(vocab, merges)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// WithConvention returns a tokenizer sharing t's tables that follows c.
func (t *Tokenizer) WithConvention(c Convention) *Tokenizer {
	u := *t
	u.convention = c
	u.cache = &tokenCache{m: make(map[string][]int32)}
	return &u
}

// WithContextLength returns a tokenizer sharing t's tables whose Encode
// produces n ids (n >= 2).
func (t *Tokenizer) WithContextLength(n int) *Tokenizer {
	u := *t
	u.context = max(n, 2)
	return &u
}

// ContextLength is the length of every Encode result.
func (t *Tokenizer) ContextLength() int { return t.context }

// StartID and EndID are the ids of the start and end tokens.
func (t *Tokenizer) StartID() int32 { return t.sot }

// EndID is the id of the end token (also the pooling token).
func (t *Tokenizer) EndID() int32 { return t.eot }

// VocabSize is the number of ids (largest id + 1).
func (t *Tokenizer) VocabSize() int { return len(t.decoder) }

// Convention reports the text convention the tokenizer follows.
func (t *Tokenizer) Convention() Convention { return t.convention }

// Encode tokenizes text into exactly ContextLength ids: the start id, the
// text's tokens, the end id, then zero padding (open_clip's padding; the
// text tower's causal mask makes the padding value irrelevant). Text longer
// than the context is truncated to its first ContextLength-2 tokens with the
// end id kept last. eot is the pooling position: the index of the first end
// id (an end token written literally in the text can come first).
func (t *Tokenizer) Encode(text string) (ids []int32, eot int) {
	n := t.context
	toks := t.tokens(text, n)
	ids = make([]int32, n)
	ids[0] = t.sot
	if len(toks) > n-2 {
		toks = toks[:n-2]
	}
	copy(ids[1:], toks)
	ids[1+len(toks)] = t.eot
	eot = 1 + len(toks)
	for i, id := range ids[:1+len(toks)] {
		if id == t.eot {
			eot = i
			break
		}
	}
	return ids, eot
}

// Tokens returns the ids of text without start/end tokens or truncation.
func (t *Tokenizer) Tokens(text string) []int32 {
	return t.tokens(text, -1)
}

// tokens stops once it holds more than limit ids (limit < 0: no limit).
// Within a limit, words longer than t.maxWord bytes are cut first: their
// first tokens, the only ones kept, do not depend on the far end.
func (t *Tokenizer) tokens(text string, limit int) []int32 {
	var out []int32
	t.each(text, func(piece string, special int32) bool {
		if special >= 0 {
			out = append(out, special)
		} else {
			if limit >= 0 && len(piece) > t.maxWord {
				piece = piece[:t.maxWord]
			}
			out = append(out, t.bpeIDs(piece)...)
		}
		return limit < 0 || len(out) <= limit
	})
	return out
}

// Pieces returns the BPE pieces of text (byte-level unicode, with `</w>`),
// special tokens as written in the text.
func (t *Tokenizer) Pieces(text string) []string {
	var out []string
	t.each(text, func(piece string, special int32) bool {
		if special >= 0 {
			out = append(out, piece)
			return true
		}
		for _, id := range t.bpeIDs(piece) {
			out = append(out, t.decoder[id])
		}
		return true
	})
	return out
}

// Decode turns ids back into text the way CLIP does: pieces concatenated,
// mapped back to bytes, UTF-8 decoded with replacement, `</w>` -> space.
// Start and end ids are dropped, as are ids outside the vocabulary.
func (t *Tokenizer) Decode(ids []int32) string {
	var sb strings.Builder
	for _, id := range ids {
		if id == t.sot || id == t.eot || id < 0 || int(id) >= len(t.decoder) {
			continue
		}
		sb.WriteString(t.decoder[id])
	}
	s := sb.String()
	var raw []byte
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "</w>") {
			raw = append(raw, ' ')
			i += 4
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if b, ok := t.byteDec[r]; ok {
			raw = append(raw, b)
		} else {
			raw = append(raw, s[i:i+size]...)
		}
		i += size
	}
	return strings.ToValidUTF8(string(raw), "\uFFFD")
}

// Clean returns the text after the convention's cleanup (the `cleaned`
// text the pre-tokenizer sees).
func (t *Tokenizer) Clean(text string) string {
	if t.convention == ConventionHF {
		return hfClean(text)
	}
	return openCLIPClean(text)
}

// each cleans text, splits it into pre-tokens and calls fn per pre-token,
// with special >= 0 for a special token.
// fn returns false to stop early.
func (t *Tokenizer) each(text string, fn func(piece string, special int32) bool) {
	if t.convention == ConventionHF {
		// HF splits the added tokens out of the raw text first, then
		// cleans and tokenizes each remaining chunk.
		for text != "" {
			i, name, id := t.nextHFSpecial(text)
			if i < 0 {
				pretokenize(hfClean(text), nil, fn)
				return
			}
			if !pretokenize(hfClean(text[:i]), nil, fn) || !fn(name, id) {
				return
			}
			text = text[i+len(name):]
		}
		return
	}
	pretokenize(openCLIPClean(text), []specialToken{
		{"<start_of_text>", t.sot}, {"<end_of_text>", t.eot},
	}, fn)
}

func (t *Tokenizer) nextHFSpecial(s string) (int, string, int32) {
	best, name, id := -1, "", int32(0)
	for _, sp := range []specialToken{{"<|startoftext|>", t.sot}, {"<|endoftext|>", t.eot}} {
		if i := strings.Index(s, sp.text); i >= 0 && (best < 0 || i < best) {
			best, name, id = i, sp.text, sp.id
		}
	}
	return best, name, id
}

type specialToken struct {
	text string
	id   int32
}

// pretokenize is a hand-written scanner equivalent to CLIP's pattern
//
//	SPECIALS|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// with leftmost-first alternation (Python regex findall): \s is the Unicode
// White_Space set, unmatched characters (whitespace) are skipped. It
// reports false when fn stopped it.
func pretokenize(s string, specials []specialToken, fn func(piece string, special int32) bool) bool {
	i := 0
outer:
	for i < len(s) {
		for _, sp := range specials {
			if strings.HasPrefix(s[i:], sp.text) {
				if !fn(sp.text, sp.id) {
					return false
				}
				i += len(sp.text)
				continue outer
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\'' {
			rest := s[i+1:]
			for _, suf := range []string{"s", "t", "re", "ve", "m", "ll", "d"} {
				if strings.HasPrefix(rest, suf) {
					if !fn(s[i:i+1+len(suf)], -1) {
						return false
					}
					i += 1 + len(suf)
					continue outer
				}
			}
		}
		switch {
		case unicode.IsLetter(r):
			j := i + size
			for j < len(s) {
				r2, n2 := utf8.DecodeRuneInString(s[j:])
				if !unicode.IsLetter(r2) {
					break
				}
				j += n2
			}
			if !fn(s[i:j], -1) {
				return false
			}
			i = j
		case unicode.IsNumber(r):
			if !fn(s[i:i+size], -1) {
				return false
			}
			i += size
		case unicode.IsSpace(r):
			i += size
		default:
			j := i + size
			for j < len(s) {
				r2, n2 := utf8.DecodeRuneInString(s[j:])
				if unicode.IsLetter(r2) || unicode.IsNumber(r2) || unicode.IsSpace(r2) {
					break
				}
				j += n2
			}
			if !fn(s[i:j], -1) {
				return false
			}
			i = j
		}
	}
	return true
}

// bpeIDs returns the ids of one pre-token, through the cache.
func (t *Tokenizer) bpeIDs(piece string) []int32 {
	if ids, ok := t.cache.get(piece); ok {
		return ids
	}
	ids := t.bpe(piece)
	if len(piece) <= maxCachedWord {
		t.cache.put(piece, ids)
	}
	return ids
}

type bpeMerge struct{ rank, id int32 }

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe maps the pre-token's UTF-8 bytes to byte characters, marks the last
// one with `</w>`, and applies merges lowest rank first, each merge joining
// every non-overlapping occurrence left to right, until no pair has a rank.
// Symbols are held as vocabulary ids.
func (t *Tokenizer) bpe(piece string) []int32 {
	if len(piece) == 0 {
		return nil
	}
	word := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		word[i] = t.byteID[piece[i]]
	}
	word[len(word)-1] = t.byteEndID[piece[len(piece)-1]]
	for len(word) > 1 {
		best, bestRank, bestID := -1, int32(math.MaxInt32), int32(0)
		for i := 0; i+1 < len(word); i++ {
			if m, ok := t.ranks[pairKey(word[i], word[i+1])]; ok && m.rank < bestRank {
				best, bestRank, bestID = i, m.rank, m.id
			}
		}
		if best < 0 {
			break
		}
		first, second := word[best], word[best+1]
		// Merge in place, left to right, from the first occurrence on.
		j := best
		for i := best; i < len(word); {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				word[j] = bestID
				i += 2
			} else {
				word[j] = word[i]
				i++
			}
			j++
		}
		word = word[:j]
	}
	return word
}

// openCLIPClean is open_clip's basic_clean + whitespace_clean + lower:
// ftfy (the model-free part, fixTextLite), html.unescape twice, strip, collapse whitespace runs to one space, strip,
// lower-case.
func openCLIPClean(s string) string {
	s = html.UnescapeString(html.UnescapeString(fixTextLite(s)))
	return pyLower(collapseSpace(s, pyIsSpace))
}

// hfClean is transformers' BasicTokenizer path (used when ftfy is absent):
// drop NUL, U+FFFD and control characters, map whitespace to spaces, pad CJK
// ideographs with spaces, NFC, split on whitespace, lower-case, join with
// spaces.
func hfClean(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r == 0 || r == 0xFFFD || isHFControl(r):
			continue
		case isHFSpace(r):
			sb.WriteByte(' ')
		case isCJK(r):
			sb.WriteByte(' ')
			sb.WriteRune(r)
			sb.WriteByte(' ')
		default:
			sb.WriteRune(r)
		}
	}
	return pyLower(collapseSpace(norm.NFC.String(sb.String()), pyIsSpace))
}

func isHFSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || unicode.Is(unicode.Zs, r)
}

func isHFControl(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) || (r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) || (r >= 0x2B820 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) || (r >= 0x2F800 && r <= 0x2FA1F)
}

// pyIsSpace is Python's str.isspace: Unicode White_Space plus the
// information separators U+001C..U+001F.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F)
}

// collapseSpace replaces every run of space characters with one ASCII space
// and trims both ends.
func collapseSpace(s string, isSpace func(rune) bool) string {
	var sb strings.Builder
	sb.Grow(len(s))
	pending := false
	for _, r := range s {
		if isSpace(r) {
			pending = sb.Len() > 0
			continue
		}
		if pending {
			sb.WriteByte(' ')
			pending = false
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// pyLower is Python's str.lower: simple lower-case mappings plus the
// unconditional special casing of U+0130 and the final-sigma rule.
func pyLower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var sb strings.Builder
	sb.Grow(len(s))
	for i, r := range rs {
		switch r {
		case 0x130: // İ -> i + combining dot above
			sb.WriteString("i\u0307")
		case 0x3A3: // Σ
			if finalSigma(rs, i) {
				sb.WriteRune(0x3C2)
			} else {
				sb.WriteRune(0x3C3)
			}
		default:
			sb.WriteRune(unicode.ToLower(r))
		}
	}
	return sb.String()
}

func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r)
}

func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x2019, 0x2027:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// finalSigma reports whether the capital sigma at rs[i] ends a word:
// preceded by a cased letter and not followed by one (case-ignorable
// characters skipped).
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && isCaseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !isCased(rs[j]) {
		return false
	}
	k := i + 1
	for k < len(rs) && isCaseIgnorable(rs[k]) {
		k++
	}
	return k >= len(rs) || !isCased(rs[k])
}

// fixTextLite applies the character-level repairs of ftfy.fix_text (which
// open_clip runs first) that need no statistical model: terminal escape
// removal, C1 controls read as Windows-1252, Latin ligatures and
// full-width forms expanded, curly quotes straightened, control and
// formatting characters removed, then NFC. ftfy's mojibake repair
// (fix_encoding and its helpers) and its HTML unescaping step are not
// reproduced. Plain printable ASCII is returned unchanged.
func fixTextLite(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x7f || (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); {
		// ANSI terminal escapes: ESC [ digits/semicolons letter.
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] == ';' || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			if j < len(s) && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')) {
				i = j + 1
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r >= 0x80 && r <= 0x9f {
			r = windows1252C1[r-0x80]
		}
		switch {
		case r == 0x2bc || (r >= 0x2018 && r <= 0x201b):
			sb.WriteByte('\'')
		case r >= 0x201c && r <= 0x201f:
			sb.WriteByte('"')
		case isFtfyControl(r):
		case r == 0x3000:
			sb.WriteByte(' ')
		case r >= 0xff01 && r <= 0xffef:
			sb.WriteString(norm.NFKC.String(string(r)))
		default:
			if lig, ok := latinLigatures[r]; ok {
				sb.WriteString(lig)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	return norm.NFC.String(sb.String())
}

// windows1252C1 maps U+0080..U+009F to the characters Windows-1252 puts at
// those bytes (ftfy's fix_c1_controls with its "sloppy" codec: undefined
// bytes keep their code point).
var windows1252C1 = [32]rune{
	0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f,
	0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
}

var latinLigatures = map[rune]string{
	'Ĳ': "IJ", 'ĳ': "ij", 'ŉ': "ʼn", 'Ǳ': "DZ", 'ǲ': "Dz", 'ǳ': "dz", 'Ǆ': "DŽ", 'ǅ': "Dž", 'ǆ': "dž",
	'Ǉ': "LJ", 'ǈ': "Lj", 'ǉ': "lj", 'Ǌ': "NJ", 'ǋ': "Nj", 'ǌ': "nj",
	'ﬀ': "ff", 'ﬁ': "fi", 'ﬂ': "fl", 'ﬃ': "ffi", 'ﬄ': "ffl", 'ﬅ': "ſt", 'ﬆ': "st",
}

// isFtfyControl is ftfy's remove_control_chars set.
func isFtfyControl(r rune) bool {
	return r <= 0x08 || r == 0x0b || (r >= 0x0e && r <= 0x1f) || r == 0x7f ||
		(r >= 0x206a && r <= 0x206f) || r == 0xfeff || (r >= 0xfff9 && r <= 0xfffc)
}
