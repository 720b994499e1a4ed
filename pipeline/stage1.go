package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/internal/l2"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
)

// Fallback kinds recorded in traces and counted in reports.
const (
	FallbackReasonerFailed  = "reasoner-failed"      // the call failed: nothing parseable
	FallbackUnparseable     = "reasoner-unparseable" // no JSON: step1 = instruction, step2 = reference caption
	FallbackNoDescriptions  = "step2-missing"        // step2 missing/empty: reference caption only
	FallbackNoCaption       = "reference-caption-missing"
	FallbackNoDescEmbed     = "raw-instruction-embedded" // no descriptions at all: the instruction was embedded
	FallbackProposerFailed  = "proposer-failed"
	FallbackNoPropositions  = "propositions-missing"
	FallbackVerifierFailed  = "verifier-failed"
	FallbackImageMissing    = "candidate-image-missing"
	FallbackEvaluatorFailed = "evaluator-failed"
	FallbackReferenceImage  = "reference-image-missing"
	// Searches only: a role was unavailable and the stage did without it.
	FallbackReasonerDown  = "reasoner-unavailable"  // CLIP ranked the raw query text
	FallbackCaptionerDown = "captioner-unavailable" // the reference counted as a blank image
)

// referenceCaption finds the text that stands for the reference in the
// reasoner prompt.
func (e *Engine) referenceCaption(ctx context.Context, q Query, c *Calls) (string, error) {
	if q.Chat {
		if strings.TrimSpace(q.Previous) != "" {
			return q.Previous, nil
		}
		return e.cfg.Prompts.BlankReference(q.Domain), nil
	}
	if q.ReferenceCaption != "" {
		return q.ReferenceCaption, nil
	}
	if q.Reference == "" && q.ReferenceImage == nil {
		return e.cfg.Prompts.BlankReference(q.Domain), nil
	}
	if q.Reference != "" {
		if s, ok := e.cfg.Gallery.Caption(q.Reference); ok && strings.TrimSpace(s) != "" {
			return s, nil
		}
	}
	if e.Has(modelrole.Captioner) {
		s, err := e.captionReference(ctx, q, c)
		if err == nil && strings.TrimSpace(s) != "" {
			return strings.TrimSpace(s), nil
		}
		if errors.Is(err, ErrRoleDown) || ctx.Err() != nil {
			return "", err
		}
	}
	c.fallback(FallbackNoCaption)
	return e.cfg.Prompts.BlankReference(q.Domain), nil
}

func (e *Engine) captionReference(ctx context.Context, q Query, c *Calls) (string, error) {
	var img ImageData
	var err error
	if q.ReferenceImage != nil {
		img, err = encodeJPEG(q.ReferenceImage)
	} else if e.cfg.Images != nil {
		img, err = e.cfg.Images.Image(ctx, q.Reference)
	} else {
		err = errors.New("no image source")
	}
	if err != nil {
		return "", fmt.Errorf("load reference %s: %w", q.Reference, err)
	}
	instr, err := e.cfg.Prompts.CaptionInstruction(q.Domain)
	if err != nil {
		return "", err
	}
	resp, err := e.call(ctx, modelrole.Captioner, ChatRequest{
		Messages: []Message{{Role: "user", Parts: []Part{{Image: &img}, {Text: instr}}}},
		Extra:    map[string]any{"repetition_penalty": 1.05}, // max_tokens: the role's budget
	}, c)
	if err != nil {
		return "", err
	}
	return resp.Text, nil
}

// Stage1 reasons about the query and ranks the gallery.
func (e *Engine) Stage1(ctx context.Context, q Query) (*Stage1, error) {
	if q.ImageOnly() {
		return e.stage1ByImage(ctx, q)
	}
	s := &Stage1{}
	ref, err := e.referenceCaption(ctx, q, &s.Calls)
	if err != nil && e.degrade && errors.Is(err, ErrRoleDown) && ctx.Err() == nil {
		ref = prompt.BlankReference
		s.fallback(FallbackCaptionerDown)
		s.Degraded = "captioner unavailable, the reference was described as a blank image: " + err.Error()
		e.log.Warn("captioner unavailable; the search goes on without the reference caption", "query", q.ID, "err", err)
	} else if err != nil {
		return nil, fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
	}
	s.ReferenceCaption = ref
	if e.Has(modelrole.Reasoner) {
		text, err := e.cfg.Prompts.Render(q.Domain, prompt.Reason, prompt.Fields{Instruction: q.Instruction, Reference: ref})
		if err != nil {
			return nil, err
		}
		resp, err := e.call(ctx, modelrole.Reasoner, ChatRequest{
			Messages:  []Message{{Role: "user", Parts: []Part{{Text: text}}}},
			MaxTokens: e.opt.ReasonerMaxTokens,
		}, &s.Calls)
		switch {
		case e.degrade && errors.Is(err, ErrRoleDown) && ctx.Err() == nil:
			// Answer anyway: CLIP ranks the raw query text, visibly.
			s.Error = err.Error()
			s.fallback(FallbackReasonerDown)
			s.Degraded = joinNote(s.Degraded, "reasoner unavailable, CLIP ranked the raw query text: "+err.Error())
			e.log.Warn("reasoner unavailable; ranking the raw query text", "query", q.ID, "round", q.Round, "err", err)
		case errors.Is(err, ErrRoleDown) || (err != nil && ctx.Err() != nil):
			return nil, fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
		case err != nil:
			s.Error = err.Error()
			s.Atomic = []Atomic{{Type: "Modification", Content: q.Instruction}}
			s.Descriptions = []string{ref}
			s.fallback(FallbackReasonerFailed)
			e.log.Warn("reasoner failed; using the fallback", "query", q.ID, "round", q.Round, "err", err)
		default:
			s.Reply = resp.Text
			var fb string
			s.Atomic, s.Descriptions, fb = ParseReasoning(resp.Text, q.Instruction, ref)
			if fb != "" {
				s.fallback(fb)
				e.log.Warn("reasoner reply fell back", "query", q.ID, "round", q.Round, "fallback", fb, "finish", resp.FinishReason)
			}
		}
		if !e.degrade {
			if err := e.roleDownAfter(modelrole.Reasoner, &s.Calls); err != nil {
				return nil, fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
			}
		}
	}
	// Descriptions to embed: the reasoner's, else the raw instruction.
	texts := nonBlank(s.Descriptions)
	if len(texts) == 0 {
		texts = []string{q.Instruction}
		if e.Has(modelrole.Reasoner) && s.Degraded == "" {
			s.fallback(FallbackNoDescEmbed)
		}
	}
	s.Embedded = texts
	vecs, err := e.embedTexts(ctx, texts)
	if err != nil {
		return nil, fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
	}
	if err := e.rank(ctx, q, vecs, s); err != nil {
		return nil, err
	}
	if q.Subset == nil && q.RankSubset != nil {
		sq := q
		sq.Subset, sq.ExcludeReference = q.RankSubset, false
		sub, _, _, _, err := e.search(ctx, sq, vecs, 0)
		if err != nil {
			return nil, fmt.Errorf("stage 1 of query %s: rank subset: %w", q.ID, err)
		}
		s.SubsetRanking = []string{}
		for _, h := range sub {
			s.SubsetRanking = append(s.SubsetRanking, h.Name)
		}
	}
	return s, nil
}

// rankDepth is how many stage-1 results a query keeps.
func (e *Engine) rankDepth(q Query) int {
	k := e.opt.Depth
	if e.opt.TopK > k {
		k = e.opt.TopK
	}
	return k
}

func nonBlank(ss []string) []string {
	var out []string
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// embedTexts embeds texts and L2-normalises the vectors.
func (e *Engine) embedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	if err := e.embed.acquire(ctx); err != nil {
		return nil, err
	}
	vecs, err := e.cfg.Embedder.EmbedTexts(ctx, texts)
	e.embed.release()
	if err != nil {
		return nil, fmt.Errorf("embed descriptions: %w", err)
	}
	if len(vecs) != len(texts) {
		return nil, fmt.Errorf("embed descriptions: got %d vectors for %d texts", len(vecs), len(texts))
	}
	out := make([][]float32, len(vecs))
	for i, v := range vecs {
		if len(v) == 0 {
			return nil, fmt.Errorf("embed description %q: empty vector", texts[i])
		}
		out[i] = l2.Normalized(v)
	}
	return out, nil
}

// search ranks the gallery with the fused score of the normalised
// description vectors.
func (e *Engine) search(ctx context.Context, q Query, vecs [][]float32, k int) (hits []Hit, tau float32, restricted int, excluded bool, err error) {
	sq := SearchQuery{Tau: e.opt.Tau, Descriptions: vecs}
	if !e.cfg.Gallery.HasCaptions() {
		sq.Tau = 0
	}
	if q.Subset != nil {
		sq.Restrict = []int{}
		for _, name := range q.Subset {
			if name == q.Reference {
				continue
			}
			if i, ok := e.cfg.Gallery.Lookup(name); ok {
				sq.Restrict = append(sq.Restrict, i)
			}
		}
		restricted = len(sq.Restrict)
	}
	if q.ExcludeReference && q.Reference != "" {
		if i, ok := e.cfg.Gallery.Lookup(q.Reference); ok {
			sq.Exclude = []int{i}
			excluded = true
		}
	}
	res, err := e.cfg.Searcher.Search(ctx, []SearchQuery{sq}, k)
	if err != nil {
		return nil, 0, 0, false, fmt.Errorf("search gallery: %w", err)
	}
	if len(res) != 1 {
		return nil, 0, 0, false, fmt.Errorf("search gallery: got %d result lists for 1 query", len(res))
	}
	return res[0], sq.Tau, restricted, excluded, nil
}

// stage1ByImage ranks the gallery for an image-only query ("more like
// this"): the reference image's normalised CLIP embedding is the one query
// vector of the fused score, so each gallery image scores
// (1-tau)*image.image + tau*image.caption (the caption term only when the
// gallery has captions), exactly as a text description would. The
// reference itself is always left out of the ranking.
func (e *Engine) stage1ByImage(ctx context.Context, q Query) (*Stage1, error) {
	s := &Stage1{ByImage: true, Atomic: []Atomic{}, Descriptions: []string{}}
	vec, err := e.referenceVector(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
	}
	if q.Reference != "" {
		s.Embedded = []string{"reference image " + q.Reference}
		if c, ok := e.cfg.Gallery.Caption(q.Reference); ok {
			s.ReferenceCaption = c
		}
	} else {
		s.Embedded = []string{"uploaded reference image"}
	}
	q.ExcludeReference = true
	if err := e.rank(ctx, q, [][]float32{vec}, s); err != nil {
		return nil, err
	}
	return s, nil
}

// rank runs the fused search for the query vectors vecs and records the
// ranking, with the caption weight and subset facts used, in s.
func (e *Engine) rank(ctx context.Context, q Query, vecs [][]float32, s *Stage1) error {
	hits, tau, restricted, excluded, err := e.search(ctx, q, vecs, e.rankDepth(q))
	if err != nil {
		return fmt.Errorf("stage 1 of query %s: %w", q.ID, err)
	}
	s.Tau, s.Restricted, s.ReferenceExcluded = tau, restricted, excluded
	s.Ranking = make([]Scored, len(hits))
	for i, h := range hits {
		s.Ranking[i] = Scored{Name: h.Name, Score: h.Score}
	}
	return nil
}

// referenceVector is the normalised CLIP image embedding of q's reference:
// the gallery's stored vector when it holds one, else the image embedded
// now.
func (e *Engine) referenceVector(ctx context.Context, q Query) ([]float32, error) {
	if q.Reference != "" {
		if gv, ok := e.cfg.Gallery.(GalleryVectors); ok {
			if v, ok := gv.ImageVector(q.Reference); ok {
				return l2.Normalized(v), nil
			}
		}
	}
	if e.cfg.ImageEmbedder == nil {
		return nil, errors.New("search by image: no CLIP image embedder is configured for reference images outside the in-memory gallery")
	}
	img := q.ReferenceImage
	if img == nil {
		if e.cfg.Images == nil {
			return nil, fmt.Errorf("reference %s: no image source", q.Reference)
		}
		data, err := e.cfg.Images.Image(ctx, q.Reference)
		if err != nil {
			return nil, fmt.Errorf("reference %s: %w", q.Reference, err)
		}
		if img, err = e.cfg.Decode(data.Bytes); err != nil {
			return nil, fmt.Errorf("reference %s: %w", q.Reference, err)
		}
	}
	if err := e.embed.acquire(ctx); err != nil {
		return nil, err
	}
	v, err := e.cfg.ImageEmbedder.EmbedImage(ctx, img)
	e.embed.release()
	if err != nil {
		return nil, fmt.Errorf("embed reference image: %w", err)
	}
	if len(v) == 0 {
		return nil, errors.New("embed reference image: empty vector")
	}
	return l2.Normalized(v), nil
}

// joinNote appends a degradation note.
func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
