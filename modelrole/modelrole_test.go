package modelrole

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Name
		ok   bool
	}{
		{"captioner", Captioner, true},
		{"verifier", Verifier, true},
		{"embedder", Embedder, true},
		{"Verifier", "", false},
		{"", "", false},
		{"judge", "", false},
	} {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestChatLeavesOutEmbedder(t *testing.T) {
	all, chat := All(), Chat()
	if len(chat) != len(all)-1 {
		t.Fatalf("Chat() = %v, All() = %v", chat, all)
	}
	for i, n := range chat {
		if n == Embedder || all[i] != n {
			t.Fatalf("Chat() = %v is not All() = %v without the embedder", chat, all)
		}
	}
}
