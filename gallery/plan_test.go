package gallery

import (
	"slices"
	"testing"
)

func TestPlanListing(t *testing.T) {
	stored := map[string]storedImage{
		"a": {id: 1, pos: 0},
		"b": {id: 2, pos: 1},
		"c": {id: 3, pos: 2},
	}
	tests := []struct {
		name         string
		items        []string
		failed       []string
		removed      map[string]int64
		moved        map[string]move
		dropFailures []string
	}{
		{name: "unchanged", items: []string{"a", "b", "c"}, removed: map[string]int64{}, moved: map[string]move{}},
		{name: "new names are not the listing's business", items: []string{"a", "b", "c", "d"},
			removed: map[string]int64{}, moved: map[string]move{}},
		{name: "removed", items: []string{"a", "b"}, removed: map[string]int64{"c": 3}, moved: map[string]move{}},
		{name: "removed and moved", items: []string{"c", "a"},
			removed: map[string]int64{"b": 2}, moved: map[string]move{"c": {id: 3, pos: 0}, "a": {id: 1, pos: 1}}},
		{name: "empty listing drops all", items: nil,
			removed: map[string]int64{"a": 1, "b": 2, "c": 3}, moved: map[string]move{}},
		{name: "failure records of unlisted names go", items: []string{"a", "b", "c", "x"}, failed: []string{"z", "x", "y"},
			removed: map[string]int64{}, moved: map[string]move{}, dropFailures: []string{"y", "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var items []Item
			for _, n := range tt.items {
				items = append(items, Item{Name: n, Path: "/g/" + n})
			}
			failed := map[string]bool{}
			for _, n := range tt.failed {
				failed[n] = true
			}
			p := planListing(items, stored, failed)
			if !mapsEqual(p.Removed, tt.removed) || !mapsEqual(p.Moved, tt.moved) || !slices.Equal(p.DropFailures, tt.dropFailures) {
				t.Errorf("plan = %+v, want removed %v moved %v drop %v", p, tt.removed, tt.moved, tt.dropFailures)
			}
		})
	}
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestNeeds(t *testing.T) {
	row := storedImage{id: 7, pos: 0, path: "/g/a.png", hash: "h1", size: 10, mtime: 100, w: 4, h: 3}
	// same is the file identity identify finds for an untouched file.
	same := job{item: Item{Name: "a", Path: "/g/a.png"}, id: 7, usable: true, hash: "h1", size: 10, mtime: 100, width: 4, height: 3}
	type want struct{ dirty, img, cap, capEmb bool }
	tests := []struct {
		name     string
		stored   bool
		hasImg   bool
		hasCap   bool
		capEmb   bool
		failed   bool
		captions bool
		edit     func(j *job)
		want     want
	}{
		{name: "new image, captions", captions: true, edit: func(j *job) { j.id = 0 },
			want: want{dirty: true, img: true, cap: true}},
		{name: "new image, no captioner", edit: func(j *job) { j.id = 0 },
			want: want{dirty: true, img: true}},
		{name: "unchanged and complete", stored: true, hasImg: true, hasCap: true, capEmb: true, captions: true,
			want: want{}},
		{name: "unchanged, no captioner, no captions stored", stored: true, hasImg: true,
			want: want{}},
		{name: "unchanged, image embedding missing", stored: true, hasCap: true, capEmb: true, captions: true,
			want: want{img: true}},
		{name: "unchanged, caption missing", stored: true, hasImg: true, captions: true,
			want: want{cap: true}},
		{name: "unchanged, caption embedding missing", stored: true, hasImg: true, hasCap: true, captions: true,
			want: want{capEmb: true}},
		{name: "content changed", stored: true, hasImg: true, hasCap: true, capEmb: true, captions: true,
			edit: func(j *job) { j.changed, j.hash = true, "h2" },
			want: want{dirty: true, img: true, cap: true}},
		{name: "touched, same content", stored: true, hasImg: true, hasCap: true, capEmb: true, captions: true,
			edit: func(j *job) { j.mtime = 200 },
			want: want{dirty: true}},
		{name: "moved file", stored: true, hasImg: true,
			edit: func(j *job) { j.item.Path = "/h/a.png" },
			want: want{dirty: true}},
		{name: "failed before, fine now", stored: true, hasImg: true, failed: true,
			want: want{dirty: true}},
		{name: "unreadable now", stored: true, hasImg: true, captions: true,
			edit: func(j *job) { j.usable, j.size, j.mtime = false, 0, 0 },
			want: want{dirty: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &indexState{stored: map[string]storedImage{}, hasImg: map[int64]bool{}, hasCap: map[int64]bool{},
				hasCapEmb: map[int64]bool{}, failed: map[string]bool{}, captions: tt.captions}
			if tt.stored {
				s.stored["a"] = row
			}
			s.hasImg[7], s.hasCap[7], s.hasCapEmb[7], s.failed["a"] = tt.hasImg, tt.hasCap, tt.capEmb, tt.failed
			j := job{item: same.item, id: same.id, usable: same.usable, hash: same.hash, size: same.size,
				mtime: same.mtime, width: same.width, height: same.height}
			if tt.edit != nil {
				tt.edit(&j)
			}
			s.needs(&j)
			got := want{j.dirty, j.needImg, j.needCap, j.needCapEmb}
			if got != tt.want {
				t.Errorf("needs = %+v, want %+v", got, tt.want)
			}
			if j.upToDate() != (tt.want == want{} && j.usable) {
				t.Errorf("upToDate = %v", j.upToDate())
			}
		})
	}
}

func TestNextBatch(t *testing.T) {
	img, text := make(chan *job, 8), make(chan *job, 8)
	send := func(q chan *job, names ...string) {
		for _, n := range names {
			q <- &job{item: Item{Name: n}}
		}
	}
	names := func(b []*job) []string {
		var out []string
		for _, j := range b {
			out = append(out, j.item.Name)
		}
		return out
	}
	imgQ, textQ := (<-chan *job)(img), (<-chan *job)(text)
	send(img, "i1", "i2", "i3")
	send(text, "t1")
	// A waiting text goes first, alone when no other text waits.
	if b, isText := nextBatch(&imgQ, &textQ, 2); !isText || !slices.Equal(names(b), []string{"t1"}) {
		t.Fatalf("batch %v text=%v, want [t1] text", names(b), isText)
	}
	// Then images, at most two per batch.
	if b, isText := nextBatch(&imgQ, &textQ, 2); isText || !slices.Equal(names(b), []string{"i1", "i2"}) {
		t.Fatalf("batch %v text=%v, want [i1 i2] images", names(b), isText)
	}
	close(text)
	if b, _ := nextBatch(&imgQ, &textQ, 2); len(b) != 0 || textQ != nil {
		t.Fatalf("closed text queue: batch %v, queue %v", names(b), textQ)
	}
	if b, isText := nextBatch(&imgQ, &textQ, 2); isText || !slices.Equal(names(b), []string{"i3"}) {
		t.Fatalf("batch %v text=%v, want [i3] images", names(b), isText)
	}
	close(img)
	if b, _ := nextBatch(&imgQ, &textQ, 2); len(b) != 0 || imgQ != nil {
		t.Fatalf("closed image queue: batch %v", names(b))
	}
}
