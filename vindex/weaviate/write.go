package weaviate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/go-openapi/strfmt"
	wv "github.com/weaviate/weaviate-go-client/v5/weaviate"
	"github.com/weaviate/weaviate/entities/models"
)

// Object is one gallery image as stored.
type Object struct {
	Name    string
	Path    string
	Caption string
	Ord     int       // position in gallery order
	Image   []float32 // L2-normalised image embedding
	// CaptionVec is the L2-normalised caption embedding; required when the
	// collection stores captions, ignored otherwise.
	CaptionVec []float32
}

// Upsert writes objects in batches. Writes are idempotent (the object id is
// derived from the name), so a batch interrupted by a failure can be sent
// again. It returns after Weaviate confirmed every object at the configured
// consistency level; a rejected object gives an error naming it. When no
// node answers after the retries the error wraps ErrUnavailable and nothing
// already confirmed is lost.
func (s *Store) Upsert(ctx context.Context, objs []Object) error {
	for i := range objs {
		if err := s.checkObject(&objs[i]); err != nil {
			return err
		}
	}
	for start := 0; start < len(objs); start += s.cfg.BatchSize {
		batch := objs[start:min(start+s.cfg.BatchSize, len(objs))]
		if err := s.upsertBatch(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) checkObject(o *Object) error {
	if o.Name == "" {
		return errors.New("weaviate: object with an empty name")
	}
	if o.Ord < 0 {
		return fmt.Errorf("weaviate: object %q: negative gallery position %d", o.Name, o.Ord)
	}
	check := func(what string, v []float32) error {
		if len(v) != s.meta.Dim {
			return fmt.Errorf("weaviate: object %q: %s vector has dimension %d, collection %s holds %d", o.Name, what, len(v), s.class, s.meta.Dim)
		}
		for j, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("weaviate: object %q: %s vector holds a non-finite value at %d", o.Name, what, j)
			}
		}
		return nil
	}
	if err := check("image", o.Image); err != nil {
		return err
	}
	if s.meta.HasCaptions {
		if err := check("caption", o.CaptionVec); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) upsertBatch(ctx context.Context, batch []Object) error {
	mobjs := make([]*models.Object, len(batch))
	for i, o := range batch {
		vecs := models.Vectors{VectorImage: o.Image}
		if s.meta.HasCaptions {
			vecs[VectorCaption] = o.CaptionVec
		}
		mobjs[i] = &models.Object{
			Class: s.class,
			ID:    strfmt.UUID(ObjectID(o.Name)),
			Properties: map[string]any{
				PropName:    o.Name,
				PropPath:    o.Path,
				PropCaption: o.Caption,
				PropOrd:     o.Ord,
			},
			Vectors: vecs,
		}
	}
	return s.do(ctx, fmt.Sprintf("write %d objects to %s", len(batch), s.class), func(c *wv.Client) error {
		res, err := c.Batch().ObjectsBatcher().WithObjects(mobjs...).WithConsistencyLevel(s.cfg.ConsistencyLevel).Do(ctx)
		if err != nil {
			return err
		}
		var failed []string
		var transientFail error
		for i, r := range res {
			if r.Result == nil || r.Result.Errors == nil || len(r.Result.Errors.Error) == 0 {
				continue
			}
			var msgs []string
			for _, e := range r.Result.Errors.Error {
				msgs = append(msgs, e.Message)
			}
			name := "?"
			if i < len(batch) {
				name = batch[i].Name
			}
			m := strings.Join(msgs, "; ")
			if transient(errors.New(m)) {
				transientFail = fmt.Errorf("object %q: %s", name, m)
				continue
			}
			failed = append(failed, fmt.Sprintf("object %q: %s", name, m))
		}
		if len(failed) > 0 {
			return fmt.Errorf("%d of %d objects rejected: %s", len(failed), len(batch), strings.Join(failed, "; "))
		}
		// A replica that could not be reached fails the whole batch at
		// consistency QUORUM/ALL: retry it (the writes are idempotent).
		return transientFail
	})
}

// Count returns the number of objects in the collection.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	err := s.do(ctx, "count "+s.class, func(c *wv.Client) error {
		res, err := c.GraphQL().Aggregate().WithClassName(s.class).WithFields(graphqlMetaCount()).Do(ctx)
		if err != nil {
			return err
		}
		if len(res.Errors) > 0 {
			return fmt.Errorf("aggregate: %s", res.Errors[0].Message)
		}
		agg, _ := res.Data["Aggregate"].(map[string]any)
		rows, _ := agg[s.class].([]any)
		if len(rows) == 0 {
			n = 0
			return nil
		}
		row, _ := rows[0].(map[string]any)
		meta, _ := row["meta"].(map[string]any)
		f, ok := meta["count"].(float64)
		if !ok {
			return fmt.Errorf("aggregate: unexpected answer %v", res.Data)
		}
		n = int(f)
		return nil
	})
	return n, err
}

// Delete removes objects by image name (for galleries that lost images).
func (s *Store) Delete(ctx context.Context, names []string) error {
	for _, name := range names {
		id := ObjectID(name)
		err := s.do(ctx, "delete object "+name, func(c *wv.Client) error {
			err := c.Data().Deleter().WithClassName(s.class).WithID(id).WithConsistencyLevel(s.cfg.ConsistencyLevel).Do(ctx)
			if err != nil && strings.Contains(err.Error(), "404") {
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}
