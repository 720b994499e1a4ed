package clip

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

type tokenCase struct {
	Group        string   `json:"group"`
	Text         string   `json:"text"`
	Cleaned      string   `json:"cleaned"`
	BPETokens    []string `json:"bpe_tokens"`
	IDsNoSpecial []int32  `json:"ids_no_special"`
	IDs          []int32  `json:"ids"`
	EOTIndex     int      `json:"eot_index"`
	Truncated    bool     `json:"truncated"`
	Decoded      string   `json:"decoded"`
	HFInputIDs   []int32  `json:"hf_input_ids"`
	HFMatches    bool     `json:"hf_matches_open_clip"`
}

func loadTokenCases(t *testing.T, r refData) []tokenCase {
	t.Helper()
	b, err := os.ReadFile(r.path("reference", "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ContextLength int         `json:"context_length"`
		N             int         `json:"n"`
		Strings       []tokenCase `json:"strings"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Strings) != doc.N || doc.N == 0 || doc.ContextLength != DefaultContextLength {
		t.Fatalf("tokens.json: %d strings, n=%d, context %d", len(doc.Strings), doc.N, doc.ContextLength)
	}
	return doc.Strings
}

var (
	tokMu    sync.Mutex
	tokCache = map[string]*Tokenizer{}
)

// fixtureTokenizer loads (once per reference set) the HF tokenizer files of
// the quickgelu model.
func fixtureTokenizer(t *testing.T, r refData) *Tokenizer {
	t.Helper()
	dir := r.path("tiny-clip-quickgelu")
	tokMu.Lock()
	defer tokMu.Unlock()
	if tok, ok := tokCache[dir]; ok {
		return tok
	}
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokCache[dir] = tok
	return tok
}

func TestTokenizerOpenCLIPReference(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		tok := fixtureTokenizer(t, r)
		if tok.VocabSize() != 49408 || tok.StartID() != 49406 || tok.EndID() != 49407 || tok.ContextLength() != 77 {
			t.Fatalf("vocab %d sot %d eot %d ctx %d", tok.VocabSize(), tok.StartID(), tok.EndID(), tok.ContextLength())
		}
		for i, c := range loadTokenCases(t, r) {
			if got := tok.Clean(c.Text); got != c.Cleaned {
				t.Errorf("#%d %q: cleaned %q, want %q", i, c.Text, got, c.Cleaned)
			}
			if got := tok.Pieces(c.Text); !slices.Equal(got, c.BPETokens) {
				t.Errorf("#%d %q: pieces %q, want %q", i, c.Text, got, c.BPETokens)
			}
			if got := tok.Tokens(c.Text); !slices.Equal(got, c.IDsNoSpecial) {
				t.Errorf("#%d %q: tokens %v, want %v", i, c.Text, got, c.IDsNoSpecial)
			}
			ids, eot := tok.Encode(c.Text)
			if !slices.Equal(ids, c.IDs) || eot != c.EOTIndex {
				t.Errorf("#%d %q (%s): ids %v eot %d, want %v eot %d", i, c.Text, c.Group, ids, eot, c.IDs, c.EOTIndex)
			}
			if got := tok.Decode(c.IDsNoSpecial); got != c.Decoded && !strings.Contains(c.Group, "special") {
				t.Errorf("#%d %q: decoded %q, want %q", i, c.Text, got, c.Decoded)
			}
		}
	})
}

func TestTokenizerHFReference(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		tok := fixtureTokenizer(t, r).WithConvention(ConventionHF)
		matches, wantMatches := 0, 0
		for i, c := range loadTokenCases(t, r) {
			if c.HFMatches {
				wantMatches++
			}
			ids, eot := tok.Encode(c.Text)
			n := len(c.HFInputIDs)
			if n > len(ids) || !slices.Equal(ids[:n], c.HFInputIDs) {
				t.Errorf("#%d %q (%s): hf ids %v, want %v", i, c.Text, c.Group, ids[:min(n, len(ids))], c.HFInputIDs)
				continue
			}
			for _, id := range ids[n:] {
				if id != 0 {
					t.Errorf("#%d %q: padding %v", i, c.Text, ids[n:])
					break
				}
			}
			if want := slices.Index(c.HFInputIDs, 49407); eot != want {
				t.Errorf("#%d %q: hf eot %d, want %d", i, c.Text, eot, want)
			}
			if slices.Equal(ids, c.IDs) {
				matches++
			}
		}
		// The reference marks the strings on which HF and open_clip agree.
		if matches != wantMatches {
			t.Errorf("HF convention agrees with open_clip ids on %d strings, want %d", matches, wantMatches)
		}
	})
}

func TestTokenizerFromBPEGzMatchesVocabFiles(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		gz, err := LoadTokenizerBPE(r.path("bpe_simple_vocab_16e6.txt.gz"))
		if err != nil {
			t.Fatal(err)
		}
		files := fixtureTokenizer(t, r)
		if len(gz.encoder) != len(files.encoder) || len(gz.ranks) != len(files.ranks) {
			t.Fatalf("gz vocab %d merges %d; files vocab %d merges %d", len(gz.encoder), len(gz.ranks), len(files.encoder), len(files.ranks))
		}
		for tok, id := range files.encoder {
			if gz.encoder[tok] != id {
				t.Fatalf("token %q: gz id %d, vocab.json id %d", tok, gz.encoder[tok], id)
			}
		}
		for _, c := range loadTokenCases(t, r) {
			ids, eot := gz.Encode(c.Text)
			if !slices.Equal(ids, c.IDs) || eot != c.EOTIndex {
				t.Errorf("%q: gz ids %v eot %d, want %v %d", c.Text, ids, eot, c.IDs, c.EOTIndex)
			}
		}
	})
}

func TestTokenizerJSON(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		// Build a tokenizer.json from the fixture's vocab and merges (both merge
		// spellings) and check it encodes like the HF files.
		files := fixtureTokenizer(t, r)
		dir := r.path("tiny-clip-quickgelu")
		vb, err := os.ReadFile(filepath.Join(dir, "vocab.json"))
		if err != nil {
			t.Fatal(err)
		}
		mb, err := os.ReadFile(filepath.Join(dir, "merges.txt"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(mb)), "\n")[1:]
		for _, pairs := range []bool{false, true} {
			var merges any
			if pairs {
				m := make([][2]string, len(lines))
				for i, l := range lines {
					a, b, _ := strings.Cut(l, " ")
					m[i] = [2]string{a, b}
				}
				merges = m
			} else {
				merges = lines
			}
			doc := map[string]any{
				"model": map[string]any{"type": "BPE", "vocab": json.RawMessage(vb), "merges": merges, "end_of_word_suffix": "</w>"},
			}
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			tdir := t.TempDir()
			if err := os.WriteFile(filepath.Join(tdir, "tokenizer.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			tj, err := LoadTokenizer(tdir)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"a photo of a cat", "ViT-B/32 x'y", "supercalifragilistic"} {
				a, _ := tj.Encode(s)
				b, _ := files.Encode(s)
				if !slices.Equal(a, b) {
					t.Errorf("pairs=%v %q: tokenizer.json %v, vocab files %v", pairs, s, a, b)
				}
			}
		}
	})
}

func TestTokenizerLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadTokenizer(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("empty dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vocab.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "merges.txt"), []byte("#version: 0.2\na b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizer(dir); err == nil || !strings.Contains(err.Error(), "vocab.json") {
		t.Errorf("bad vocab: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vocab.json"), []byte(`{"a":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizer(dir); err == nil {
		t.Errorf("vocabulary without byte tokens accepted")
	}
}

func TestTokenizerTextRules(t *testing.T) {
	tok := fixtureTokenizer(t, ownRef(t))
	for _, c := range []struct{ in, want string }{
		{"\u00a0a\tb\u2003c\u3000", "a b c"},
		// ftfy-like repairs (open_clip runs ftfy.fix_text first).
		{"a\vb\x1cc\ufeff", "abc"},
		{"the dog\u2019s \u201ctoy\u201d", "the dog's \"toy\""},
		{"\u0093c1 quotes\u0094", "\"c1 quotes\""},
		{"\ufb01sh \uff28\uff45\uff4c\uff4c\uff4f", "fish hello"},
		{"cafe\u0301", "caf\u00e9"},
		{"\x1b[1;31mred\x1b[0m", "red"},
		{"ΟΔΟΣ ΟΔΟΣ.", "οδος οδος."},
		{"ΣΑ", "σα"},
		{"İ", "i\u0307"},
		{"&ampfoo &copyright", "&foo ©right"},
	} {
		if got := tok.Clean(c.in); got != c.want {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Curly apostrophes become the "'s" contraction token, as with ftfy.
	if a, b := tok.Tokens("the dog\u2019s toy"), tok.Tokens("the dog's toy"); !slices.Equal(a, b) {
		t.Errorf("curly apostrophe: %v vs %v", a, b)
	}
	// HF's path normalises to NFC too.
	hf := tok.WithConvention(ConventionHF)
	if a, b := hf.Tokens("cafe\u0301"), hf.Tokens("caf\u00e9"); !slices.Equal(a, b) {
		t.Errorf("HF NFC: %v vs %v", a, b)
	}
	// Non-ASCII text encodes byte-level with no unknown token, and decodes back.
	for _, s := range []string{"café ☕ 東京", "naïve — ok"} {
		ids := tok.Tokens(s)
		if got := strings.TrimSpace(tok.Decode(ids)); got != strings.ToLower(s) {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	// Context length override keeps the end token.
	short := tok.WithContextLength(5)
	ids, eot := short.Encode("one two three four five")
	if len(ids) != 5 || ids[4] != 49407 || eot != 4 || ids[0] != 49406 {
		t.Errorf("context 5: %v eot %d", ids, eot)
	}
}

func TestTokenizerConcurrent(t *testing.T) {
	tok := fixtureTokenizer(t, ownRef(t)).WithConvention(ConventionOpenCLIP)
	want, _ := tok.Encode("the quick brown fox jumps over the lazy dog")
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				got, _ := tok.Encode("the quick brown fox jumps over the lazy dog")
				if !slices.Equal(got, want) {
					t.Error("concurrent encode differs")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkTokenizerEncode(b *testing.B) {
	tok, err := LoadTokenizer(testutil.CLIP(b, "tiny-clip-quickgelu"))
	if err != nil {
		b.Fatal(err)
	}
	text := "A photo of a red bicycle leaning against a weathered brick wall, late afternoon light."
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			tok.Encode(text)
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			u := tok.WithConvention(ConventionOpenCLIP) // fresh cache
			u.Encode(text)
		}
	})
}

func TestTokenizerLongWord(t *testing.T) {
	tok := fixtureTokenizer(t, ownRef(t)).WithConvention(ConventionOpenCLIP)
	// A pseudo-random 3000-letter word: Encode cuts it (here at 2600
	// bytes; 76 tokens of at most 32 bytes need 2432) before merging; its
	// first 75 tokens must equal the uncut ones.
	tok.maxWord = 2600
	var sb strings.Builder
	s := uint32(7)
	for i := 0; i < 3000; i++ {
		s = s*1103515245 + 12345
		sb.WriteByte("abcdefghijklmnopqrstuvwxyz"[s>>16%26])
	}
	full := tok.Tokens(sb.String())
	ids, eot := tok.Encode(sb.String())
	if eot != 76 || !slices.Equal(ids[1:76], full[:75]) {
		t.Errorf("long word: encode %v, want prefix %v", ids[1:76], full[:75])
	}
	// A megabyte without spaces still encodes (bounded work).
	big := strings.Repeat("ab1!", 1<<18)
	if ids, eot := tok.Encode(big); eot != 76 || ids[76] != tok.EndID() {
		t.Errorf("1 MB text: eot %d", eot)
	}
}

// FuzzTokenizerEncode checks the invariants of Encode on any text: the
// context length, start/end framing, the pooling index and ids inside the
// vocabulary.
func FuzzTokenizerEncode(f *testing.F) {
	for _, s := range []string{"a photo of a cat", "", "IT'S &amp; <end_of_text> x", "café ☕ 東京 \u2019s", "\xff\xfe broken utf8", strings.Repeat("ab ", 100)} {
		f.Add(s)
	}
	tok, err := LoadTokenizer(testutil.CLIP(f, "tiny-clip-quickgelu"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, tk := range []*Tokenizer{tok, tok.WithConvention(ConventionHF)} {
			ids, eot := tk.Encode(text)
			if len(ids) != 77 || ids[0] != tk.StartID() || eot < 1 || eot > 76 || ids[eot] != tk.EndID() {
				t.Fatalf("%q: ids %v eot %d", text, ids, eot)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= tk.VocabSize() {
					t.Fatalf("%q: id %d outside the vocabulary", text, id)
				}
			}
		}
	})
}
