package run

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckpointTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c", "stage1.jsonl")
	ck, recs, err := openCheckpoint(p)
	if err != nil || len(recs) != 0 {
		t.Fatal(err, recs)
	}
	for _, k := range []string{"a", "b"} {
		if err := ck.append(k, map[string]int{"v": len(k)}); err != nil {
			t.Fatal(err)
		}
	}
	ck.close()
	// A process killed mid-write leaves a partial last line.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"key":"c","data":{"v"`)
	f.Close()
	ck, recs, err = openCheckpoint(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || string(recs["b"]) != `{"v":1}` {
		t.Fatalf("records %v", recs)
	}
	if err := ck.append("c", 3); err != nil {
		t.Fatal(err)
	}
	ck.close()
	b, _ := os.ReadFile(p)
	if strings.Count(string(b), "\n") != 3 || strings.Contains(string(b), `{"v"{`) {
		t.Errorf("file after repair:\n%s", b)
	}
	// Damage before the last line is an error naming the file and line.
	os.WriteFile(p, []byte("{\"key\":\"a\",\"data\":1}\ngarbage\n{\"key\":\"b\",\"data\":2}\n"), 0o644)
	if _, _, err := openCheckpoint(p); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("damaged checkpoint: %v", err)
	}
}
