package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestQueriesCommand(t *testing.T) {
	fix := fixturesRoot(t)
	cases := []struct {
		dataset, split string
		n              int
		first          string
	}{
		{"CIRR", "val", 3, `{"id":"101","instruction":"turn the teal triangle purple","reference":"dev-11-0-img0","targets":["dev-27-1-img0"],"subset":["dev-305-3-img1","dev-11-0-img1","dev-27-1-img0","dev-27-1-img1","dev-305-2-img0"],"soft_targets":{"dev-27-1-img0":1}}`},
		{"CIRR", "test", 3, `{"id":"201","instruction":"put a second pink square next to it","reference":"test1-40-0-img0","subset":["test1-41-2-img1","test1-41-2-img0","test1-40-0-img1","test1-902-3-img1","test1-902-1-img0"]}`},
		{"CIRCO", "val", 3, ""},
		{"FashionIQ-shirt", "valid", 2, `{"id":"0","instruction":" and is grey and plain","reference":"B00FXSH001","targets":["B00FXSH002"]}`},
		{"Flickr30K", "test", 15, `{"id":"0","instruction":"A teal ring on a pale background.","targets":["900000101.jpg"]}`},
		{"MSCOCO", "test", 16, `{"id":"0","instruction":"A brown circle on a pale background.","targets":["COCO_val2014_000000900001.jpg"]}`},
		{"VisDial", "val", 2, ""},
	}
	for _, c := range cases {
		t.Run(c.dataset+"/"+c.split, func(t *testing.T) {
			code, out, errOut := runCmd(t, nil, "queries", "--dataset", c.dataset, "--data", fix, "--split", c.split)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != c.n {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), c.n, out)
			}
			for i, l := range lines {
				var q map[string]any
				if err := json.Unmarshal([]byte(l), &q); err != nil {
					t.Fatalf("line %d is not JSON: %v", i, err)
				}
			}
			if c.dataset == "CIRCO" {
				// Reference and targets checked on their own: line 0's
				// reference is 1001 and its only ground truth 1002.
				if !strings.Contains(lines[0], `"reference":"000000001001.jpg","targets":["000000001002.jpg"]`) {
					t.Errorf("CIRCO line 0 = %s", lines[0])
				}
				return
			}
			if c.dataset == "VisDial" {
				var q struct {
					ID      string   `json:"id"`
					Turns   []string `json:"turns"`
					Targets []string `json:"targets"`
				}
				_ = json.Unmarshal([]byte(lines[1]), &q)
				if q.ID != "1" || len(q.Turns) != 11 || q.Turns[0] != "a simple coloured sign in the middle of the picture" || q.Targets[0] != "000000002006.jpg" {
					t.Errorf("VisDial line 1 = %s", lines[1])
				}
				return
			}
			if lines[0] != c.first {
				t.Errorf("line 0 =\n%s\nwant\n%s", lines[0], c.first)
			}
		})
	}
	for _, bad := range [][]string{{"queries"}, {"queries", "--dataset", "CIRR"}, {"queries", "--dataset", "nope", "--data", fix}} {
		if code, _, _ := runCmd(t, nil, bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
	if code, _, errOut := runCmd(t, nil, "queries", "--dataset", "CIRR", "--data", t.TempDir()); code != 1 || !strings.Contains(errOut, "cap.rc2.val.json not found") {
		t.Errorf("empty data root: exit %d: %s", code, errOut)
	}
}
