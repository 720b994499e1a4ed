package weaviate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	wv "github.com/weaviate/weaviate-go-client/v5/weaviate"
	"github.com/weaviate/weaviate-go-client/v5/weaviate/filters"
	"github.com/weaviate/weaviate-go-client/v5/weaviate/graphql"

	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/vindex"
)

// stored is one object as read back.
type stored struct {
	name    string
	path    string
	caption string
	ord     int
	id      string
	image   []float32
	capvec  []float32
}

func graphqlMetaCount() graphql.Field {
	return graphql.Field{Name: "meta", Fields: []graphql.Field{{Name: "count"}}}
}

// Search ranks the gallery for every query, like (*vindex.Index).Search:
// with k > 0 the best k hits, with k <= 0 the full ranking; equal scores
// keep gallery order. Hit.Index is the image's gallery position (ord).
//
// Unrestricted queries with k > 0 fetch max(Candidates, k) + len(Exclude)
// candidates (and their vectors) from Weaviate and rank them exactly;
// restricted queries fetch exactly the restricted objects; k <= 0 scans the
// whole collection.
func (s *Store) Search(ctx context.Context, qs []vindex.Query, k int) ([][]vindex.Hit, error) {
	out := make([][]vindex.Hit, len(qs))
	var all []stored
	if k <= 0 {
		for i := range qs {
			if qs[i].Restrict == nil {
				var err error
				if all, err = s.scanAll(ctx); err != nil {
					return nil, fmt.Errorf("weaviate: %w", err)
				}
				break
			}
		}
	}
	errs := make([]error, len(qs))
	parallel.For(s.cfg.QueryConcurrency, len(qs), func(_, qi int) {
		hits, err := s.searchOne(ctx, &qs[qi], k, all)
		if err != nil {
			errs[qi] = fmt.Errorf("weaviate: query %d: %w", qi, err)
			return
		}
		out[qi] = hits
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) searchOne(ctx context.Context, q *vindex.Query, k int, all []stored) ([]vindex.Hit, error) {
	mean, err := s.meanDescription(q)
	if err != nil {
		return nil, err
	}
	var cands []stored
	switch {
	case q.Restrict != nil:
		cands, err = s.fetchOrds(ctx, q.Restrict)
	case k <= 0:
		cands = slices.Clone(all)
	default:
		cands, err = s.nearest(ctx, mean, q.Tau, max(s.cfg.Candidates, k)+len(q.Exclude))
	}
	if err != nil {
		return nil, err
	}
	return s.rank(ctx, cands, q, k)
}

// meanDescription is the normalised mean of the description vectors (the
// direction the fused score ranks by).
func (s *Store) meanDescription(q *vindex.Query) ([]float32, error) {
	if len(q.Descriptions) == 0 {
		return nil, errors.New("no description vectors")
	}
	d := s.meta.Dim
	m := make([]float64, d)
	for i, t := range q.Descriptions {
		if len(t) != d {
			return nil, fmt.Errorf("description %d has dimension %d, collection %s holds %d", i, len(t), s.class, d)
		}
		for j, v := range t {
			m[j] += float64(v)
		}
	}
	var norm float64
	for _, v := range m {
		norm += v * v
	}
	norm = math.Sqrt(norm)
	if norm == 0 || math.IsNaN(norm) || math.IsInf(norm, 0) {
		return nil, errors.New("the mean description vector is zero or not finite")
	}
	out := make([]float32, d)
	for j, v := range m {
		out[j] = float32(v / norm)
	}
	return out, nil
}

// rank scores the candidates exactly with vindex (candidates ordered by
// gallery position, so ties break as in the embedded path).
func (s *Store) rank(ctx context.Context, cands []stored, q *vindex.Query, k int) ([]vindex.Hit, error) {
	slices.SortFunc(cands, func(a, b stored) int { return a.ord - b.ord })
	cands = slices.CompactFunc(cands, func(a, b stored) bool { return a.ord == b.ord })
	d := s.meta.Dim
	ix := &vindex.Index{
		Names:      make([]string, len(cands)),
		Dim:        d,
		Image:      make([]float32, len(cands)*d),
		HasCaption: s.meta.HasCaptions,
		Threads:    1,
	}
	if ix.HasCaption {
		ix.Caption = make([]float32, len(cands)*d)
	}
	pos := make(map[int]int, len(cands))
	for i, c := range cands {
		if len(c.image) != d || (ix.HasCaption && len(c.capvec) != d) {
			return nil, fmt.Errorf("object %q: stored vectors have dimension %d/%d, collection holds %d", c.name, len(c.image), len(c.capvec), d)
		}
		ix.Names[i] = c.name
		copy(ix.Image[i*d:], c.image)
		if ix.HasCaption {
			copy(ix.Caption[i*d:], c.capvec)
		}
		pos[c.ord] = i
	}
	sub := vindex.Query{Descriptions: q.Descriptions, Tau: q.Tau}
	for _, e := range q.Exclude {
		if i, ok := pos[e]; ok {
			sub.Exclude = append(sub.Exclude, i)
		}
	}
	res, err := ix.Search(ctx, []vindex.Query{sub}, k)
	if err != nil {
		return nil, err
	}
	hits := res[0]
	for i := range hits {
		hits[i].Index = cands[hits[i].Index].ord
	}
	return hits, nil
}

func (s *Store) metadata() *graphql.Metadata {
	m := &graphql.Metadata{ID: true, Vectors: []string{VectorImage}}
	if s.meta.HasCaptions {
		m.Vectors = append(m.Vectors, VectorCaption)
	}
	return m
}

var props = []string{PropName, PropOrd}

// nearest fetches candidates for the unit vector m: the limit nearest
// objects by image vector and, when the caption term counts, the limit
// nearest by caption vector (two searches, run concurrently), merged.
func (s *Store) nearest(ctx context.Context, m []float32, tau float32, limit int) ([]stored, error) {
	targets := []string{VectorImage}
	if s.meta.HasCaptions && tau != 0 {
		targets = append(targets, VectorCaption)
	}
	res := make([][]stored, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, target := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nv := (&graphql.NearVectorArgumentBuilder{}).WithVector(m).WithTargetVectors(target)
			errs[i] = s.do(ctx, "search "+s.class+" by "+target, func(c *wv.Client) error {
				r, err := c.Experimental().Search().WithCollection(s.class).WithNearVector(nv).WithLimit(limit).
					WithConsistencyLevel(s.cfg.ConsistencyLevel).WithProperties(props...).WithMetadata(s.metadata()).Do(ctx)
				if err != nil {
					return err
				}
				res[i], err = s.convert(r)
				return err
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := res[0]
	if len(res) > 1 {
		out = append(out, res[1]...) // duplicates are dropped by rank
	}
	return out, nil
}

// fetchOrds fetches the objects at the given gallery positions.
func (s *Store) fetchOrds(ctx context.Context, ords []int) ([]stored, error) {
	uniq := slices.Clone(ords)
	slices.Sort(uniq)
	uniq = slices.Compact(uniq)
	var out []stored
	for start := 0; start < len(uniq); start += 1000 {
		part := uniq[start:min(start+1000, len(uniq))]
		vals := make([]int64, len(part))
		for i, o := range part {
			vals[i] = int64(o)
		}
		where := filters.Where().WithPath([]string{PropOrd}).WithOperator(filters.ContainsAny).WithValueInt(vals...)
		err := s.do(ctx, "fetch restricted objects of "+s.class, func(c *wv.Client) error {
			res, err := c.Experimental().Search().WithCollection(s.class).WithWhere(where).WithLimit(len(part)).
				WithConsistencyLevel(s.cfg.ConsistencyLevel).WithProperties(props...).WithMetadata(s.metadata()).Do(ctx)
			if err != nil {
				return err
			}
			got, err := s.convert(res)
			out = append(out, got...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanPage reads up to limit objects after the object id after (cursor).
func (s *Store) scanPage(ctx context.Context, after string, limit int) ([]stored, error) {
	var out []stored
	err := s.do(ctx, "read objects of "+s.class, func(c *wv.Client) error {
		q := c.Experimental().Search().WithCollection(s.class).WithLimit(limit).
			WithProperties(PropName, PropOrd, PropPath, PropCaption).WithMetadata(s.metadata())
		if after != "" {
			q = q.WithAfter(after)
		}
		res, err := q.Do(ctx)
		if err != nil {
			return err
		}
		out, err = s.convert(res)
		return err
	})
	return out, err
}

func (s *Store) scanAll(ctx context.Context) ([]stored, error) {
	var all []stored
	after := ""
	for {
		page, err := s.scanPage(ctx, after, 1000)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all, nil
		}
		after = page[len(page)-1].id
	}
}

// Load reads the whole collection into a vindex.Index in gallery order
// (for exact search in memory, export, or checking a collection). Images
// that never reached the collection (failed items) leave no gap: positions
// in the returned index are ranks of the stored gallery positions, so they
// equal Search's Hit.Index only when the collection holds every position.
func (s *Store) Load(ctx context.Context) (*vindex.Index, error) {
	all, err := s.scanAll(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b stored) int { return a.ord - b.ord })
	d := s.meta.Dim
	ix := &vindex.Index{
		Names:      make([]string, len(all)),
		Dim:        d,
		Image:      make([]float32, len(all)*d),
		HasCaption: s.meta.HasCaptions,
		Paths:      make([]string, len(all)),
		Captions:   make([]string, len(all)),
	}
	if ix.HasCaption {
		ix.Caption = make([]float32, len(all)*d)
	}
	for i, o := range all {
		if i > 0 && all[i-1].ord == o.ord {
			return nil, fmt.Errorf("weaviate: collection %s: objects %q and %q share gallery position %d", s.class, all[i-1].name, o.name, o.ord)
		}
		ix.Names[i] = o.name
		ix.Paths[i] = o.path
		ix.Captions[i] = o.caption
		copy(ix.Image[i*d:], o.image)
		if ix.HasCaption {
			copy(ix.Caption[i*d:], o.capvec)
		}
	}
	return ix, nil
}

func (s *Store) convert(res []graphql.SearchResult) ([]stored, error) {
	out := make([]stored, 0, len(res))
	for _, r := range res {
		o := stored{id: r.ID}
		o.name, _ = r.Properties[PropName].(string)
		o.path, _ = r.Properties[PropPath].(string)
		o.caption, _ = r.Properties[PropCaption].(string)
		switch v := r.Properties[PropOrd].(type) {
		case int64:
			o.ord = int(v)
		case float64:
			o.ord = int(v)
		case int:
			o.ord = v
		default:
			return nil, fmt.Errorf("object %s (%q): property %s missing or of type %T", r.ID, o.name, PropOrd, r.Properties[PropOrd])
		}
		if v, ok := r.Vectors[VectorImage]; ok {
			o.image = v.GetVector()
		}
		if v, ok := r.Vectors[VectorCaption]; ok {
			o.capvec = v.GetVector()
		}
		if len(o.image) == 0 {
			return nil, fmt.Errorf("object %s (%q): no image vector returned", r.ID, o.name)
		}
		out = append(out, o)
	}
	return out, nil
}

// Names returns the gallery's image names in gallery order (position i
// holds the name of ord i; "" where no object has that position).
func (s *Store) Names(ctx context.Context) ([]string, error) {
	c, err := s.Catalog(ctx)
	if err != nil {
		return nil, err
	}
	return c.Names(), nil
}
