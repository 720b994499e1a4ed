package weaviate

import (
	"context"
	"fmt"

	wv "github.com/weaviate/weaviate-go-client/v5/weaviate"
	"github.com/weaviate/weaviate-go-client/v5/weaviate/graphql"
)

// Catalog is a collection's names, paths and captions by gallery position,
// without vectors: what a search front end needs beside Search (the
// pipeline's Gallery: name -> position, captions, whether captioned).
type Catalog struct {
	names    []string // by gallery position ("" where none)
	captions []string
	paths    []string
	pos      map[string]int
	captured bool
}

// Catalog reads the names and captions of the whole collection.
func (s *Store) Catalog(ctx context.Context) (*Catalog, error) {
	c := &Catalog{pos: map[string]int{}, captured: s.meta.HasCaptions}
	after := ""
	for {
		var page []graphql.SearchResult
		err := s.do(ctx, "read names of "+s.class, func(cl *wv.Client) error {
			q := cl.Experimental().Search().WithCollection(s.class).WithLimit(1000).
				WithProperties(PropName, PropOrd, PropCaption, PropPath).WithMetadata(&graphql.Metadata{ID: true})
			if after != "" {
				q = q.WithAfter(after)
			}
			var err error
			page, err = q.Do(ctx)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			name, _ := r.Properties[PropName].(string)
			caption, _ := r.Properties[PropCaption].(string)
			path, _ := r.Properties[PropPath].(string)
			var ord int
			switch v := r.Properties[PropOrd].(type) {
			case int64:
				ord = int(v)
			case float64:
				ord = int(v)
			default:
				return nil, fmt.Errorf("weaviate: object %q has no gallery position", name)
			}
			if ord < 0 || ord > 1<<31 {
				return nil, fmt.Errorf("weaviate: object %q has gallery position %d", name, ord)
			}
			if prev, dup := c.pos[name]; dup && prev != ord {
				return nil, fmt.Errorf("weaviate: image %q stored at positions %d and %d", name, prev, ord)
			}
			for len(c.names) <= ord {
				c.names = append(c.names, "")
				c.captions = append(c.captions, "")
				c.paths = append(c.paths, "")
			}
			c.names[ord], c.captions[ord], c.paths[ord] = name, caption, path
			c.pos[name] = ord
		}
		if len(page) < 1000 {
			return c, nil
		}
		after = page[len(page)-1].ID
	}
}

// Lookup returns the gallery position of an image name.
func (c *Catalog) Lookup(name string) (int, bool) {
	i, ok := c.pos[name]
	return i, ok
}

// Caption returns an image's stored caption.
func (c *Catalog) Caption(name string) (string, bool) {
	i, ok := c.pos[name]
	if !ok || c.captions[i] == "" {
		return "", false
	}
	return c.captions[i], true
}

// Paths returns the image name -> file path map of every stored image
// that has a path.
func (c *Catalog) Paths() map[string]string {
	m := make(map[string]string, len(c.pos))
	for name, i := range c.pos {
		if c.paths[i] != "" {
			m[name] = c.paths[i]
		}
	}
	return m
}

// HasCaptions reports whether the collection stores captions.
func (c *Catalog) HasCaptions() bool { return c.captured }

// Names returns the names by gallery position ("" where none is stored).
func (c *Catalog) Names() []string { return c.names }

// Len is the number of stored images.
func (c *Catalog) Len() int { return len(c.pos) }
