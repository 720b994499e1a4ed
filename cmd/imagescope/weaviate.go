package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// weaviateGallery is a gallery held in a Weaviate collection, opened for
// searching: the store (candidate retrieval + exact fused re-ranking), its
// catalog (names, paths, captions) and an index holding only names and
// paths (the vectors stay in Weaviate).
type weaviateGallery struct {
	collection string
	store      *weaviate.Store
	catalog    *weaviate.Catalog
	index      *vindex.Index
}

// openWeaviateGallery opens an existing Weaviate collection for searching
// with model. A collection written with another CLIP model or dimension is
// refused, and so is an empty one.
func openWeaviateGallery(ctx context.Context, e *env, cfg *config.Config, m *clip.Model, collection string) (*weaviateGallery, error) {
	urls := firstNonEmpty(e.getenv("IMAGESCOPE_WEAVIATE_URL"), cfg.Weaviate.URL)
	if urls == "" {
		return nil, usagef("--weaviate: no server: set weaviate.url in the config or IMAGESCOPE_WEAVIATE_URL")
	}
	wc := weaviate.Config{
		URLs:             splitComma(urls),
		GRPCAddrs:        splitComma(cfg.Weaviate.GRPC),
		Collection:       collection,
		ConsistencyLevel: cfg.Weaviate.ConsistencyLevel,
		Candidates:       cfg.Weaviate.Candidates,
		Logger:           e.log,
	}
	if cfg.Weaviate.APIKeyEnv != "" {
		wc.APIKey = e.getenv(cfg.Weaviate.APIKeyEnv)
	}
	st, err := weaviate.Open(ctx, wc, weaviate.Meta{CLIPModel: m.ID(), Dim: m.Dim()}, false)
	if err != nil {
		return nil, err
	}
	cat, err := st.Catalog(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	if cat.Len() == 0 {
		st.Close()
		return nil, fmt.Errorf("weaviate collection %s holds no images; fill it with 'imagescope index --queue URL ... --weaviate URL --collection %s' and 'imagescope worker'", collection, collection)
	}
	ix := &vindex.Index{Dim: m.Dim(), HasCaption: cat.HasCaptions()}
	paths := cat.Paths()
	for _, n := range cat.Names() {
		if n == "" {
			continue
		}
		ix.Names = append(ix.Names, n)
		ix.Paths = append(ix.Paths, paths[n])
	}
	return &weaviateGallery{collection: collection, store: st, catalog: cat, index: ix}, nil
}

// use makes the collection the engine's searcher and gallery.
func (g *weaviateGallery) use(s *engineSetup) {
	s.searcher, s.gallery = adapt.Searcher{S: g.store}, g.catalog
}

func (g *weaviateGallery) close() { _ = g.store.Close() }

// covers checks that the collection holds every image of a split's gallery
// (names), at the split's gallery positions.
func (g *weaviateGallery) covers(names []string) error {
	var missing, moved []string
	for i, n := range names {
		p, ok := g.catalog.Lookup(n)
		switch {
		case !ok:
			missing = append(missing, n)
		case p != i:
			moved = append(moved, fmt.Sprintf("%s at %d, not %d", n, p, i))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("weaviate collection %s lacks %d of the split's %d gallery images (first: %s); publish the split with 'imagescope index --queue URL --dataset ... --weaviate URL --collection %s' and run 'imagescope worker'",
			g.collection, len(missing), len(names), strings.Join(head(missing, 3), ", "), g.collection)
	}
	if len(moved) > 0 {
		return fmt.Errorf("weaviate collection %s stores %d gallery images at other positions than the split (first: %s): it was filled from another gallery order",
			g.collection, len(moved), strings.Join(head(moved, 3), ", "))
	}
	return nil
}
