package run

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func log(x float64) float64 { return math.Log(x) }

// NewDir creates and returns a fresh run folder
// <root>/<dataset>_<split>/<clip>-<name>_<timestamp>/.
func NewDir(root, datasetName, split, clipModel, name string, now time.Time) (string, error) {
	if name == "" {
		name = "run"
	}
	base := fmt.Sprintf("%s-%s_%s", safe(clipModel), safe(name), now.UTC().Format("20060102-150405"))
	dir := filepath.Join(root, safe(datasetName)+"_"+safe(split), base)
	for i := 2; ; i++ {
		err := os.MkdirAll(filepath.Dir(dir), 0o755)
		if err == nil {
			err = os.Mkdir(dir, 0o755)
		}
		if err == nil {
			return dir, nil
		}
		if !os.IsExist(err) || i > 100 {
			return "", fmt.Errorf("create run folder: %w", err)
		}
		dir = filepath.Join(root, safe(datasetName)+"_"+safe(split), fmt.Sprintf("%s-%d", base, i))
	}
}

// safe makes a string usable as one path element.
func safe(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "none"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, s)
}
