// Command gen-testdata writes the repository's miniature benchmarks and
// sample ranking files under testdata/ (see testdata/README.md; the CLIP
// checkpoints and their reference numbers come from clipref.py beside it).
//
// The sample ranking files in testdata/sample are written by hand (their
// scores are worked out by hand in metrics' tests); they name the same image
// keys and answers as these miniatures.
//
// Each of the six benchmarks gets a few synthetic pictures (one or two plain
// shapes on a light background, PNG or JPEG as the benchmark ships them),
// annotation files in the benchmark's exact on-disk format, and
// expected_queries.json: the queries and gallery a correct loader builds
// from them, written from the same in-memory description (not by parsing
// the files back). Everything is deterministic.
//
// usage: go run ./scripts/gen-testdata [-out testdata]
package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// scene is what one picture shows.
type scene struct {
	shape string // circle, square, triangle, bar, ring, cross
	color string
	count int // 1 or 2 shapes side by side
}

var palette = map[string]color.RGBA{
	"red": {205, 40, 40, 255}, "blue": {40, 70, 200, 255}, "green": {40, 160, 70, 255},
	"yellow": {230, 200, 30, 255}, "orange": {240, 140, 30, 255}, "purple": {130, 50, 160, 255},
	"black": {20, 20, 20, 255}, "pink": {240, 130, 180, 255}, "grey": {128, 128, 128, 255},
	"teal": {30, 150, 150, 255}, "brown": {120, 80, 40, 255},
}

// draw renders a scene at w x h on an off-white background.
func draw(s scene, w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	bg := color.RGBA{246, 244, 238, 255}
	fg, ok := palette[s.color]
	if !ok {
		log.Fatalf("no colour %q", s.color)
	}
	n := max(s.count, 1)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, bg)
			for i := 0; i < n; i++ {
				cx := float64(w) * (float64(i) + 0.5) / float64(n)
				cy := float64(h) / 2
				r := math.Min(float64(w)/float64(n), float64(h)) * 0.36
				if inside(s.shape, float64(x)+0.5-cx, float64(y)+0.5-cy, r) {
					img.SetRGBA(x, y, fg)
				}
			}
		}
	}
	return img
}

func inside(shape string, dx, dy, r float64) bool {
	switch shape {
	case "circle":
		return dx*dx+dy*dy <= r*r
	case "ring":
		d := dx*dx + dy*dy
		return d <= r*r && d >= 0.36*r*r
	case "square":
		return math.Abs(dx) <= r*0.85 && math.Abs(dy) <= r*0.85
	case "bar":
		return math.Abs(dx) <= r*0.3 && math.Abs(dy) <= r*1.2
	case "cross":
		return (math.Abs(dx) <= r*0.25 && math.Abs(dy) <= r) || (math.Abs(dy) <= r*0.25 && math.Abs(dx) <= r)
	case "triangle":
		t := (dy + r) / (2 * r) // 0 at the apex, 1 at the base
		return t >= 0 && t <= 1 && math.Abs(dx) <= t*r
	}
	log.Fatalf("no shape %q", shape)
	return false
}

type writer struct {
	root string
	err  error
}

func (w *writer) file(rel string, data []byte) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.err = err
		return
	}
	w.err = os.WriteFile(p, data, 0o644)
}

// json writes v indented (indent "") or compact (indent "-").
func (w *writer) json(rel string, v any, indent string) {
	var b []byte
	var err error
	if indent == "-" {
		b, err = json.Marshal(v)
	} else {
		b, err = json.MarshalIndent(v, "", indent)
	}
	if err != nil {
		log.Fatal(err)
	}
	w.file(rel, append(b, '\n'))
}

func (w *writer) picture(rel string, s scene, width, height int) {
	var buf bytes.Buffer
	img := draw(s, width, height)
	var err error
	if strings.HasSuffix(rel, ".png") {
		err = png.Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	}
	if err != nil {
		log.Fatal(err)
	}
	w.file(rel, buf.Bytes())
}

// ordered is a JSON object that keeps its keys in the given order.
type ordered []kv

type kv struct {
	k string
	v any
}

func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(e.k)
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func main() {
	out := flag.String("out", "testdata", "testdata folder to write into")
	flag.Parse()
	w := &writer{root: filepath.Join(*out, "datasets")}
	expected := ordered{}
	expected = append(expected, kv{"CIRR", cirr(w)})
	expected = append(expected, kv{"CIRCO", circo(w)})
	expected = append(expected, kv{"FashionIQ", fashionIQ(w)})
	expected = append(expected, kv{"Flickr30K", flickr(w)})
	expected = append(expected, kv{"MSCOCO", mscoco(w)})
	expected = append(expected, kv{"VisDial", visdial(w)})
	w.json("expected_queries.json", expected, " ")
	if w.err != nil {
		log.Fatal(w.err)
	}
}

// CIRR ------------------------------------------------------------------------

type cirrQuery struct {
	pairid    int
	ref       string
	caption   string
	target    string             // "" on test1
	soft      map[string]float64 // val only
	refRank   int
	tgtRank   int
	extension [4]string
}

func cirr(w *writer) ordered {
	type split struct {
		name, folder string
		images       []string
		sub          map[string]string // train: image -> numbered subfolder
		setID        int
		queries      []cirrQuery
	}
	scenes := map[string]scene{
		"dev-11-0-img0": {"triangle", "teal", 1}, "dev-11-0-img1": {"triangle", "orange", 1},
		"dev-27-1-img0": {"triangle", "purple", 1}, "dev-27-1-img1": {"ring", "purple", 1},
		"dev-305-2-img0": {"ring", "brown", 1}, "dev-305-3-img1": {"cross", "brown", 1},
		"test1-40-0-img0": {"square", "pink", 1}, "test1-40-0-img1": {"square", "pink", 2},
		"test1-41-2-img0": {"cross", "green", 1}, "test1-41-2-img1": {"circle", "green", 1},
		"test1-902-1-img0": {"ring", "blue", 1}, "test1-902-3-img1": {"bar", "blue", 1},
		"train-5821-0-img0": {"bar", "red", 1}, "train-5821-0-img1": {"bar", "grey", 1},
		"train-10044-1-img0": {"cross", "yellow", 2},
	}
	ext := [4]string{"showing a single figure", "recolour or reshape it", "[cr1] Covered in query", "[cr0] Nothing worth mentioning"}
	splits := []split{
		{name: "val", folder: "dev", setID: 12, images: []string{"dev-11-0-img0", "dev-11-0-img1", "dev-27-1-img0", "dev-27-1-img1", "dev-305-2-img0", "dev-305-3-img1"},
			queries: []cirrQuery{
				{101, "dev-11-0-img0", "turn the teal triangle purple", "dev-27-1-img0", map[string]float64{"dev-27-1-img0": 1.0}, 1, 5, ext},
				{102, "dev-27-1-img1", "Swap the ring for a hollow brown one instead", "dev-305-2-img0", map[string]float64{"dev-305-2-img0": 1.0, "dev-305-3-img1": -1.0}, 0, 2, ext},
				{103, "dev-305-3-img1", "an orange triangle in place of the cross", "dev-11-0-img1", map[string]float64{"dev-11-0-img1": 1.0, "dev-27-1-img1": 0.5}, 4, 3,
					[4]string{"showing a single figure", "[c] None existed", "[cr1] Covered in query", "[cr0] Nothing worth mentioning"}},
			}},
		{name: "test1", folder: "test1", setID: 5, images: []string{"test1-40-0-img0", "test1-40-0-img1", "test1-41-2-img0", "test1-41-2-img1", "test1-902-1-img0", "test1-902-3-img1"},
			queries: []cirrQuery{
				{201, "test1-40-0-img0", "put a second pink square next to it", "", nil, 0, 0, ext},
				{202, "test1-41-2-img0", " ", "", nil, 2, 0, ext},
				{203, "test1-902-1-img0", "make the ring a narrow upright bar", "", nil, 4, 0, ext},
			}},
		{name: "train", folder: "train", setID: 1, images: []string{"train-5821-0-img0", "train-5821-0-img1", "train-10044-1-img0"},
			sub: map[string]string{"train-5821-0-img0": "3", "train-5821-0-img1": "3", "train-10044-1-img0": "77"},
			queries: []cirrQuery{
				{1, "train-5821-0-img0", "make the bar grey", "train-5821-0-img1", map[string]float64{"train-5821-0-img1": 1.0}, 0, 1, ext},
			}},
	}
	expected := ordered{}
	for _, sp := range splits {
		paths := ordered{}
		for _, im := range sp.images {
			dir := sp.folder
			if sp.sub != nil {
				dir += "/" + sp.sub[im]
			}
			rel := "./" + dir + "/" + im + ".png"
			paths = append(paths, kv{im, rel})
			w.picture("CIRR/"+strings.TrimPrefix(rel, "./"), scenes[im], 40, 36)
		}
		w.json("CIRR/image_splits/split.rc2."+sp.name+".json", paths, "-")
		// Members in a scrambled but fixed order, as in the real files.
		members := append([]string(nil), sp.images...)
		sort.Slice(members, func(i, j int) bool { return hashKey(members[i]) < hashKey(members[j]) })
		var caps, exts []ordered
		var queries []ordered
		for _, q := range sp.queries {
			rec := ordered{{"pairid", q.pairid}, {"reference", q.ref}}
			if q.target != "" {
				soft := ordered{}
				for _, k := range sortedKeys(q.soft) {
					soft = append(soft, kv{k, q.soft[k]})
				}
				rec = append(rec, kv{"target_hard", q.target}, kv{"target_soft", soft})
			}
			rec = append(rec, kv{"caption", q.caption})
			set := ordered{{"id", sp.setID}, {"members", members}, {"reference_rank", q.refRank}}
			if q.target != "" {
				set = append(set, kv{"target_rank", q.tgtRank})
			}
			rec = append(rec, kv{"img_set", set})
			caps = append(caps, rec)
			er := ordered{{"pairid", q.pairid}, {"reference", q.ref}}
			if q.target != "" {
				er = append(er, kv{"target_hard", q.target})
			}
			er = append(er, kv{"caption_extend", ordered{{"0", q.extension[0]}, {"1", q.extension[1]}, {"2", q.extension[2]}, {"3", q.extension[3]}}})
			exts = append(exts, er)

			text := strings.TrimSpace(q.caption)
			if text == "" {
				text = "the same image"
			}
			var subset []string
			for _, m := range members {
				if m != q.ref {
					subset = append(subset, m)
				}
			}
			var target any
			if q.target != "" {
				target = q.target
			}
			queries = append(queries, ordered{{"pairid", q.pairid}, {"reference", q.ref}, {"text", text}, {"target", target}, {"subset_candidates", subset}})
		}
		w.json("CIRR/captions/cap.rc2."+sp.name+".json", caps, "-")
		w.json("CIRR/captions_ext/cap.ext.rc2."+sp.name+".json", exts, "-")
		if sp.name != "train" {
			expected = append(expected, kv{sp.name, ordered{{"queries", queries}, {"gallery", sp.images}}})
		}
	}
	return expected
}

func hashKey(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CIRCO -----------------------------------------------------------------------

func circo(w *writer) ordered {
	scenes := map[int]scene{
		1001: {"square", "teal", 1}, 1002: {"square", "orange", 1}, 1003: {"triangle", "pink", 1},
		1004: {"triangle", "teal", 1}, 1005: {"triangle", "orange", 1}, 1006: {"triangle", "purple", 1},
		1007: {"cross", "teal", 1}, 1008: {"ring", "orange", 1}, 1009: {"square", "brown", 1}, 1010: {"triangle", "black", 1},
	}
	var gallery []string
	for id := 1001; id <= 1010; id++ {
		name := fmt.Sprintf("%012d.jpg", id)
		gallery = append(gallery, name)
		w.picture("CIRCO/unlabeled2017/"+name, scenes[id], 44, 44)
	}
	type q struct {
		ref, target int
		caption     string
		concept     string
		gt          []int
		aspects     []string
	}
	val := []q{
		{1001, 1002, "is orange rather than teal", "a square", []int{1002}, []string{"direct_addressing"}},
		{1004, 1005, "is painted another colour", "a triangle", []int{1005, 1006, 1010}, []string{"compare_change", "negation"}},
		{1003, 1004, "is teal and has straight sides", "a plain figure", []int{1004, 1007}, []string{"statement_with_conjunction", "addition"}},
	}
	test := []q{
		{1009, 0, "is orange", "a square", nil, nil},
		{1008, 0, "is black and has three corners", "a figure", nil, nil},
	}
	expected := ordered{}
	for _, sp := range []struct {
		name string
		qs   []q
	}{{"val", val}, {"test", test}} {
		var recs, queries []ordered
		for i, x := range sp.qs {
			rec := ordered{{"reference_img_id", x.ref}}
			if x.target != 0 {
				rec = append(rec, kv{"target_img_id", x.target})
			}
			rec = append(rec, kv{"relative_caption", x.caption}, kv{"shared_concept", x.concept})
			if x.target != 0 {
				rec = append(rec, kv{"gt_img_ids", x.gt})
			}
			rec = append(rec, kv{"id", i})
			if x.target != 0 {
				rec = append(rec, kv{"semantic_aspects", x.aspects})
			}
			recs = append(recs, rec)
			var target, gt any
			if x.target != 0 {
				target, gt = fmt.Sprintf("%012d.jpg", x.target), x.gt
			}
			queries = append(queries, ordered{{"id", i}, {"reference", fmt.Sprintf("%012d.jpg", x.ref)}, {"text", x.caption}, {"target", target}, {"gt_img_ids", gt}})
		}
		w.json("CIRCO/captions/"+sp.name+".json", indentable(recs), "    ")
		expected = append(expected, kv{sp.name, ordered{{"queries", queries}, {"gallery", gallery}}})
	}
	return expected
}

// indentable turns ordered records into values json.MarshalIndent lays out
// (it does not re-indent a custom marshaller's output).
func indentable(recs []ordered) []json.RawMessage {
	out := make([]json.RawMessage, len(recs))
	for i, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			log.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// FashionIQ -------------------------------------------------------------------

func fashionIQ(w *writer) ordered {
	type q struct {
		cand, target string
		caps         [2]string
	}
	cats := []struct {
		name, code string
		colors     [4]string
		shapes     [4]string
		qs         []q
	}{
		{"dress", "DR", [4]string{"grey", "teal", "brown", "pink"}, [4]string{"bar", "bar", "triangle", "triangle"},
			[]q{{"B00FXDR001", "B00FXDR002", [2]string{"is teal", "keeps the same cut"}}, {"B00FXDR003", "B00FXDR004", [2]string{"is pink and wider", "flares out more at the bottom?"}}}},
		{"shirt", "SH", [4]string{"blue", "grey", "black", "yellow"}, [4]string{"square", "square", "cross", "cross"},
			[]q{{"B00FXSH001", "B00FXSH002", [2]string{"", "is grey and plain"}}, {"B00FXSH003", "B00FXSH004", [2]string{"is yellow.", "Is much lighter. "}}}},
		{"toptee", "TT", [4]string{"purple", "orange", "red", "green"}, [4]string{"circle", "circle", "ring", "ring"},
			[]q{{"B00FXTT002", "B00FXTT003", [2]string{" is red with a hole", "has a ring print"}}, {"B00FXTT001", "B00FXTT004", [2]string{"is green", "is a ring.."}}}},
	}
	expected := ordered{}
	for _, c := range cats {
		var split []string
		for i := 0; i < 4; i++ {
			asin := fmt.Sprintf("B00FX%s%03d", c.code, i+1)
			split = append(split, asin)
			w.picture("FashionIQ/images/"+asin+".png", scene{c.shapes[i], c.colors[i], 1}, 30, 40)
		}
		var recs []ordered
		var queries []ordered
		for _, x := range c.qs {
			recs = append(recs, ordered{{"target", x.target}, {"candidate", x.cand}, {"captions", x.caps[:]}})
			text := strings.Trim(x.caps[0], ".? ") + " and " + strings.Trim(x.caps[1], ".? ")
			queries = append(queries, ordered{{"reference", x.cand}, {"target", x.target}, {"text", text}})
		}
		w.json("FashionIQ/captions/cap."+c.name+".val.json", indentable(recs), "    ")
		w.json("FashionIQ/image_splits/split."+c.name+".val.json", split, "    ")
		expected = append(expected, kv{c.name, ordered{{"queries", queries}, {"gallery", split}}})
	}
	// The test split's format (no target); not evaluated.
	w.json("FashionIQ/captions/cap.dress.test.json", indentable([]ordered{{{"candidate", "B00FXDR002"}, {"captions", []string{"is brown", "is longer"}}}}), "    ")
	w.json("FashionIQ/image_splits/split.dress.test.json", []string{"B00FXDR001", "B00FXDR002"}, "    ")
	return expected
}

// Flickr30K and MSCOCO (HuggingFace CSV exports) ------------------------------

type csvImage struct {
	file, split string
	scene       scene
	raw         []string
	onDisk      bool
}

func tokens(s string) []string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	if f == nil {
		f = []string{}
	}
	return f
}

// jsonCell writes a list the way Python prints one (", " between items),
// as the CSV exports hold them.
func jsonCell(v any) string {
	switch x := v.(type) {
	case []int:
		parts := make([]string, len(x))
		for i, n := range x {
			parts[i] = fmt.Sprint(n)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		parts := make([]string, len(x))
		for i, s := range x {
			b, err := json.Marshal(s)
			if err != nil {
				log.Fatal(err)
			}
			parts[i] = string(b)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case [][]string:
		parts := make([]string, len(x))
		for i, s := range x {
			parts[i] = jsonCell(s)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	log.Fatalf("jsonCell: %T", v)
	return ""
}

func writeCSV(w *writer, rel string, header []string, rows [][]string) {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	if err := cw.Write(header); err != nil {
		log.Fatal(err)
	}
	if err := cw.WriteAll(rows); err != nil {
		log.Fatal(err)
	}
	w.file(rel, buf.Bytes())
}

func textToImage(w *writer, ds, folder string, imgs []csvImage, row func(i, sent0 int, im csvImage, sentids []int, toks [][]string) []string, header []string) ordered {
	var rows [][]string
	var queries []ordered
	var gallery []string
	sent := 0
	for i, im := range imgs {
		var ids []int
		var toks [][]string
		for _, r := range im.raw {
			ids = append(ids, sent)
			sent++
			toks = append(toks, tokens(r))
		}
		rows = append(rows, row(i, ids[0], im, ids, toks))
		if im.onDisk {
			w.picture(ds+"/"+folder+"/"+im.file, im.scene, 48, 36)
			gallery = append(gallery, im.file)
		}
		if im.split == "test" {
			for _, r := range im.raw {
				queries = append(queries, ordered{{"text", r}, {"target", im.file}})
			}
		}
	}
	sort.Strings(gallery)
	writeCSV(w, ds+"/"+csvName[ds], header, rows)
	return ordered{{"test", ordered{{"queries", queries}, {"gallery", gallery}}}}
}

var csvName = map[string]string{"Flickr30K": "test_1k_flickr.csv", "MSCOCO": "test_5k_mscoco_2014.csv"}

func flickr(w *writer) ordered {
	imgs := []csvImage{
		{"900000101.jpg", "test", scene{"ring", "teal", 1}, []string{
			"A teal ring on a pale background.", "One hollow teal circle.", `A "teal" hoop, drawn in the middle.`,
			"a teal ring", "A single teal ring that isn't filled in"}, true},
		{"900000102.jpg", "test", scene{"cross", "orange", 1}, []string{
			"An orange cross on a pale background.", "One orange plus sign.", "An orange cross, centred.",
			"an orange plus", "A single orange cross in the middle of the picture"}, true},
		{"90000103.jpg", "test", scene{"bar", "purple", 2}, []string{
			"Two purple bars on a pale background.", "A pair of upright purple bars.", "Two purple stripes, side by side.",
			"two violet bars", "Twin purple bars standing next to each other"}, true},
	}
	header := []string{"sentids", "imgid", "split", "filename", "tokens", "raw", "sentid"}
	return textToImage(w, "Flickr30K", "images", imgs, func(i, s0 int, im csvImage, ids []int, toks [][]string) []string {
		sid := make([]int, len(ids))
		img := make([]int, len(ids))
		for k := range ids {
			sid[k] = 52000 + ids[k]
			img[k] = 8101 + i
		}
		return []string{jsonCell(sid), jsonCell(img), im.split, im.file, jsonCell(toks), jsonCell(im.raw), jsonCell(sid)}
	}, header)
}

func mscoco(w *writer) ordered {
	imgs := []csvImage{
		{"COCO_val2014_000000900001.jpg", "test", scene{"circle", "brown", 1}, []string{
			"A brown circle on a pale background.", "A round brown shape.", "A brown ball drawn in the centre.",
			"a small brown disc", "Brown circle, pale backdrop."}, true},
		{"COCO_val2014_000000900002.jpg", "test", scene{"triangle", "green", 1}, []string{
			"A green triangle on a pale background.", "A green wedge in the middle.", "A triangle that is green.",
			"a green pyramid shape", "Green triangle, pale backdrop.", "A sixth caption: a few images here carry more than five."}, true},
		{"COCO_val2014_000000900003.jpg", "test", scene{"square", "pink", 2}, []string{
			"Two pink squares on a pale background.", "A pair of pink boxes.", "Two small pink squares side by side.",
			"two pink tiles", "Pink squares, two of them."}, true},
		{"COCO_val2014_000000900099.jpg", "restval", scene{}, []string{"This restval caption is not a test query."}, false},
	}
	header := []string{"filepath", "sentids", "filename", "imgid", "split", "cocoid", "tokens", "raw", "sentid"}
	return textToImage(w, "MSCOCO", "images", imgs, func(i, s0 int, im csvImage, ids []int, toks [][]string) []string {
		sid := make([]int, len(ids))
		img := make([]int, len(ids))
		for k := range ids {
			sid[k] = 660000 + ids[k]
			img[k] = i + 1
		}
		cocoid := strings.TrimLeft(strings.TrimSuffix(strings.TrimPrefix(im.file, "COCO_val2014_"), ".jpg"), "0")
		return []string{"val2014", jsonCell(sid), im.file, jsonCell(img), im.split, cocoid, jsonCell(toks), jsonCell(im.raw), jsonCell(sid)}
	}, header)
}

// VisDial ---------------------------------------------------------------------

func visdial(w *writer) ordered {
	scenes := map[int]scene{
		2001: {"square", "teal", 1}, 2002: {"square", "orange", 1}, 2003: {"ring", "teal", 1}, 2004: {"ring", "orange", 1},
		2005: {"cross", "teal", 1}, 2006: {"cross", "orange", 1}, 2007: {"bar", "grey", 1}, 2008: {"circle", "black", 2},
	}
	var space, gallery []string
	for id := 2001; id <= 2008; id++ {
		name := fmt.Sprintf("%012d.jpg", id)
		space = append(space, "unlabeled2017/"+name)
		gallery = append(gallery, name)
		w.picture("VisDial/unlabeled2017/"+name, scenes[id], 40, 40)
	}
	dialogues := []struct {
		target int
		dialog []string
	}{
		{2004, []string{"one outlined figure on a pale background",
			"is it filled in? no, it is hollow", "is it round? yes", "what colour is it? orange",
			"is it bright? fairly bright", "is the background white? off-white", "how many figures? one",
			"is it centred? yes", "is it a square? no", "is the line thick? quite thick", "any writing? none"}},
		{2006, []string{"a simple coloured sign in the middle of the picture",
			"what colour is the sign? orange", "is it a circle? no", "does it have four arms? yes",
			"is it a plus sign? yes", "is the background plain? yes", "is it big? medium sized",
			"is it outlined? no, solid", "are there other figures? no", "is it in colour? yes", "is it a drawing? yes"}},
	}
	var recs []ordered
	var exp []ordered
	for _, d := range dialogues {
		name := fmt.Sprintf("%012d.jpg", d.target)
		recs = append(recs, ordered{{"img", "unlabeled2017/" + name}, {"dialog", d.dialog}})
		exp = append(exp, ordered{{"target", name}, {"caption", d.dialog[0]}, {"turns", d.dialog[1:]}})
	}
	w.json("VisDial/Search_Space_val_50k.json", space, "-")
	w.json("VisDial/VisDial_v1.0_queries_val.json", recs, "-")
	return ordered{{"val", ordered{{"dialogues", exp}, {"gallery", gallery}}}}
}
