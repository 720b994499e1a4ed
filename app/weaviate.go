package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/vindex"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// ErrNoWeaviate is returned when a Weaviate collection is asked for and no
// server is configured.
var ErrNoWeaviate = errors.New("no Weaviate server: set weaviate.url in the config or IMAGESCOPE_WEAVIATE_URL")

// WeaviateGallery is a gallery held in a Weaviate collection, opened for
// searching: the store (candidate retrieval + exact fused re-ranking), its
// catalog (names, paths, captions) and an index holding only names and
// paths (the vectors stay in Weaviate).
type WeaviateGallery struct {
	Collection string
	Store      *weaviate.Store
	Catalog    *weaviate.Catalog
	Index      *vindex.Index
}

// WeaviateConfig is the store configuration for collection from the
// configuration file and the environment (IMAGESCOPE_WEAVIATE_URL wins
// over weaviate.url; the API key is read from weaviate.api_key_env).
func WeaviateConfig(cfg *config.Config, getenv func(string) string, collection string) (weaviate.Config, error) {
	urls := getenv("IMAGESCOPE_WEAVIATE_URL")
	if urls == "" {
		urls = cfg.Weaviate.URL
	}
	if urls == "" {
		return weaviate.Config{}, ErrNoWeaviate
	}
	wc := weaviate.Config{
		URLs:             splitComma(urls),
		GRPCAddrs:        splitComma(cfg.Weaviate.GRPC),
		Collection:       collection,
		ConsistencyLevel: cfg.Weaviate.ConsistencyLevel,
		Candidates:       cfg.Weaviate.Candidates,
	}
	if cfg.Weaviate.APIKeyEnv != "" {
		wc.APIKey = getenv(cfg.Weaviate.APIKeyEnv)
	}
	return wc, nil
}

// OpenWeaviate opens an existing Weaviate collection for searching with
// the app's CLIP model. A collection written with another CLIP model or
// dimension is refused, and so is an empty one.
func (a *App) OpenWeaviate(ctx context.Context, collection string) (*WeaviateGallery, error) {
	wc, err := WeaviateConfig(a.Config, a.getenv, collection)
	if err != nil {
		return nil, err
	}
	wc.Logger = a.Log
	st, err := weaviate.Open(ctx, wc, weaviate.Meta{CLIPModel: a.Model.ID(), Dim: a.Model.Dim()}, false)
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
	ix := &vindex.Index{Dim: a.Model.Dim(), HasCaption: cat.HasCaptions()}
	paths := cat.Paths()
	for _, n := range cat.Names() {
		if n == "" {
			continue
		}
		ix.Names = append(ix.Names, n)
		ix.Paths = append(ix.Paths, paths[n])
	}
	return &WeaviateGallery{Collection: collection, Store: st, Catalog: cat, Index: ix}, nil
}

// Close closes the store.
func (g *WeaviateGallery) Close() { _ = g.Store.Close() }

// Covers checks that the collection holds every image of a split's gallery
// at the split's gallery positions.
func (g *WeaviateGallery) Covers(items []gallery.Item) error {
	var missing, moved []string
	for i, it := range items {
		p, ok := g.Catalog.Lookup(it.Name)
		switch {
		case !ok:
			missing = append(missing, it.Name)
		case p != i:
			moved = append(moved, fmt.Sprintf("%s at %d, not %d", it.Name, p, i))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("weaviate collection %s lacks %d of the split's %d gallery images (first: %s); publish the split with 'imagescope index --queue URL --dataset ... --weaviate URL --collection %s' and run 'imagescope worker'",
			g.Collection, len(missing), len(items), strings.Join(first(missing, 3), ", "), g.Collection)
	}
	if len(moved) > 0 {
		return fmt.Errorf("weaviate collection %s stores %d gallery images at other positions than the split (first: %s): it was filled from another gallery order",
			g.Collection, len(moved), strings.Join(first(moved, 3), ", "))
	}
	return nil
}

func (g *WeaviateGallery) searcher() (adapt.Searcher, *weaviate.Catalog) {
	return adapt.Searcher{S: g.Store}, g.Catalog
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
