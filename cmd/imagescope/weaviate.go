package main

import (
	"context"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/vindex/weaviate"
)

// openWeaviateGallery opens an existing Weaviate collection for searching
// with model: the store (candidate retrieval + exact fused re-ranking) and
// its catalog (names, paths, captions). A collection written with another
// CLIP model or dimension is refused.
func openWeaviateGallery(ctx context.Context, e *env, cfg *config.Config, m *clip.Model, collection string) (*weaviate.Store, *weaviate.Catalog, error) {
	urls := firstNonEmpty(e.getenv("IMAGESCOPE_WEAVIATE_URL"), cfg.Weaviate.URL)
	if urls == "" {
		return nil, nil, usagef("--weaviate: no server: set weaviate.url in the config or IMAGESCOPE_WEAVIATE_URL")
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
		return nil, nil, err
	}
	cat, err := st.Catalog(ctx)
	if err != nil {
		return nil, nil, err
	}
	return st, cat, nil
}
