// Package dataset reads the six ImageScope benchmarks (CIRR, CIRCO,
// FashionIQ, Flickr30K, MSCOCO, VisDial) and plain image folders into one
// shape: a gallery of named images and a list of queries.
package dataset

// Task is the kind of retrieval a dataset's queries ask for.
type Task string

const (
	// TextToImage queries are one sentence and no reference image.
	TextToImage Task = "text-to-image"
	// Composed queries are a reference image plus a modification text.
	Composed Task = "composed"
	// Chat queries are a dialogue that grows round by round.
	Chat Task = "chat"
)

// Image is one gallery entry.
type Image struct {
	// Name is the image key used in rankings, annotations and submissions
	// (CIRR and FashionIQ: without extension; the others: the file name).
	Name string `json:"name"`
	// Path is the image file's path on disk (it may not exist: scoring reads
	// annotations only).
	Path string `json:"path"`
}

// Query is one retrieval query of a benchmark split.
type Query struct {
	// ID is the dataset's own id where it has one (CIRR pairid, CIRCO id),
	// otherwise the 0-based position in file order.
	ID string `json:"id"`
	// Instruction is the query text (CIR: modification text; TIR: caption).
	// Empty for chat queries, which use Turns.
	Instruction string `json:"instruction,omitempty"`
	// Turns is the dialogue for chat queries: Turns[0] is the caption,
	// Turns[1..] the "question? answer" rounds.
	Turns []string `json:"turns,omitempty"`
	// Reference is the gallery name of the reference image ("" if none).
	Reference string `json:"reference,omitempty"`
	// Targets holds the correct gallery names; Targets[0] is the primary
	// target (CIRR target_hard, CIRCO target_img_id). Empty on test splits.
	Targets []string `json:"targets,omitempty"`
	// Subset is the CIRR img_set members other than the reference, in file
	// order (the Recall_subset candidates). Nil for other datasets.
	Subset []string `json:"subset,omitempty"`
	// SemanticAspects lists CIRCO's semantic aspects (val only).
	SemanticAspects []string `json:"semantic_aspects,omitempty"`
	// SoftTargets is CIRR's target_soft (image name -> graded relevance:
	// 1, 0.5, 0.2 or -1), used by the soft-recall variant. Val/train only.
	SoftTargets map[string]float64 `json:"soft_targets,omitempty"`
}

// Dataset is one loaded benchmark split (or a plain folder, which has no
// queries).
type Dataset struct {
	// Name is the canonical dataset name: CIRR, CIRCO, FashionIQ-dress,
	// FashionIQ-shirt, FashionIQ-toptee, Flickr30K, MSCOCO, VisDial, folder.
	Name string `json:"name"`
	// Split is the canonical split name (CIRR: val/test1; others val/test).
	Split string `json:"split"`
	Task  Task   `json:"task"`
	// Domain selects the prompt set: "general", "cirr", "fashion-dress",
	// "fashion-shirt", "fashion-toptee" or "chat".
	Domain  string  `json:"domain"`
	Gallery []Image `json:"gallery"`
	Queries []Query `json:"queries"`
	// Root is the dataset's folder on disk ("" when built in memory).
	Root string `json:"root,omitempty"`
	// GalleryUnlisted is true when the gallery could not be enumerated
	// (CIRCO without its unlabeled2017 folder, or loaded by
	// LoadAnnotations, and without image_info_unlabeled2017.json): Gallery
	// is then empty and image names are checked by their form only.
	GalleryUnlisted bool `json:"gallery_unlisted,omitempty"`
	// GalleryDir is, for a gallery defined by its image folder (CIRCO),
	// that folder ("" when the gallery came from elsewhere).
	GalleryDir string `json:"gallery_dir,omitempty"`
}
