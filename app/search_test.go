package app

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadDialog(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
		wantErr    string
	}{
		{"json", `["a dog", "is it brown? yes"]`, []string{"a dog", "is it brown? yes"}, ""},
		{"lines", "a dog\n\n  is it brown? yes  \n", []string{"a dog", "is it brown? yes"}, ""},
		{"bad json", `["a dog", 3]`, nil, "want a JSON array of strings"},
		{"empty", "\n \n", nil, "no turns"},
		{"empty turn", `["a dog", " "]`, nil, "turn 1 is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "chat.txt")
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ReadDialog(p)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := ReadDialog(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "dialog file") {
		t.Errorf("missing file: %v", err)
	}
}
