package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for gallery images
	"image/jpeg"
	_ "image/png"
	"regexp"
	"strings"

	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
)

// EvalInstruction prepares an instruction for the evaluator prompt as the
// method does: spaces and periods stripped at both ends (other white space
// such as a newline is kept), then lower-cased.
func EvalInstruction(s string) string {
	return strings.ToLower(strings.Trim(s, " ."))
}

// EvaluatorSaysYes is the stage-3 decision: the reply contains "ANSWER: Yes".
func EvaluatorSaysYes(reply string) bool { return strings.Contains(reply, "ANSWER: Yes") }

// answerLine matches the evaluator's decision line.
var answerLine = regexp.MustCompile(`(?im)^[\s*#>-]*answer\s*:\s*\**\s*(yes|no)\b[.!*]*\s*`)

// EvaluatorReasoning returns the evaluator's reply without its
// "ANSWER: Yes/No" line, so the decision is shown once beside the
// explanation ("" when the reply holds nothing else).
func EvaluatorReasoning(reply string) string {
	loc := answerLine.FindStringIndex(reply)
	if loc == nil {
		return strings.TrimSpace(reply)
	}
	return strings.TrimSpace(reply[:loc[0]] + reply[loc[1]:])
}

// MoveToFront returns names with names[i] moved to the front; everything
// else keeps its order.
func MoveToFront(names []string, i int) []string {
	out := make([]string, 0, len(names))
	out = append(out, names[i])
	out = append(out, names[:i]...)
	return append(out, names[i+1:]...)
}

// Stage3 asks the evaluator about the top alpha candidates of ranking, one
// at a time, and moves the first Yes to the front.
func (e *Engine) Stage3(ctx context.Context, q Query, ranking []string) (*Stage3, error) {
	s := &Stage3{Ranking: ranking}
	if q.ImageOnly() {
		s.Skipped = NoTextToVerify
		return s, nil
	}
	if reason := e.SkipReason(3); reason != "" {
		s.Skipped = reason
		return s, nil
	}
	instr := q.Instruction
	if q.EvalText != "" {
		instr = q.EvalText
	}
	s.Instruction = EvalInstruction(instr)
	text, err := e.cfg.Prompts.Render(q.Domain, prompt.Evaluate, prompt.Fields{Instruction: s.Instruction})
	if err != nil {
		return nil, err
	}
	var ref image.Image
	refLoaded := false
	alpha := min(e.opt.Alpha, len(ranking))
	for i := range alpha {
		cand := ranking[i]
		if !refLoaded {
			ref, err = e.referenceImage(ctx, q)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				s.fallback(FallbackReferenceImage)
				e.log.Warn("reference image unavailable; using the black placeholder", "query", q.ID, "err", err)
				ref = nil
			}
			refLoaded = true
		}
		ev := Evaluation{Candidate: cand, Rank: i + 1}
		img, err := e.composed(ctx, ref, cand)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ev.Error = err.Error()
			s.fallback(FallbackImageMissing + ":" + cand)
			s.Evaluations = append(s.Evaluations, ev)
			continue
		}
		resp, err := e.call(ctx, modelrole.Evaluator, ChatRequest{
			Messages:  []Message{{Role: "user", Parts: []Part{{Image: &img}, {Text: text}}}},
			MaxTokens: e.opt.EvaluatorMaxTokens,
		}, &s.Calls)
		if err != nil {
			if e.degrade && errors.Is(err, ErrRoleDown) && ctx.Err() == nil {
				e.log.Warn("stage 3 skipped: the evaluator is unavailable", "query", q.ID, "err", err)
				reason := "skipped, the previous order stands: " + err.Error()
				return &Stage3{Skipped: reason, Degraded: reason, Instruction: s.Instruction, Ranking: ranking, Calls: s.Calls}, nil
			}
			if errors.Is(err, ErrRoleDown) || ctx.Err() != nil {
				return nil, fmt.Errorf("stage 3 of query %s: %w", q.ID, err)
			}
			ev.Error = err.Error()
			s.fallback(FallbackEvaluatorFailed + ":" + cand)
			s.Evaluations = append(s.Evaluations, ev)
			continue
		}
		ev.Reply = resp.Text
		ev.Yes = EvaluatorSaysYes(resp.Text)
		s.Evaluations = append(s.Evaluations, ev)
		if ev.Yes {
			s.Chosen = cand
			s.Ranking = MoveToFront(ranking, i)
			break
		}
	}
	if err := e.roleDownAfter(modelrole.Evaluator, &s.Calls); err != nil && !e.degrade {
		return nil, fmt.Errorf("stage 3 of query %s: %w", q.ID, err)
	}
	return s, nil
}

// referenceImage returns the decoded reference image, or nil when the
// query has none (the composition then uses the black placeholder).
func (e *Engine) referenceImage(ctx context.Context, q Query) (image.Image, error) {
	if q.Chat {
		return nil, nil
	}
	if q.ReferenceImage != nil {
		return q.ReferenceImage, nil
	}
	if q.Reference == "" {
		return nil, nil
	}
	if e.cfg.Images == nil {
		return nil, errors.New("no image source configured")
	}
	d, err := e.cfg.Images.Image(ctx, q.Reference)
	if err != nil {
		return nil, fmt.Errorf("load reference %s: %w", q.Reference, err)
	}
	img, err := e.cfg.Decode(d.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode reference %s: %w", q.Reference, err)
	}
	return img, nil
}

// composed builds the JPEG side-by-side image for one candidate.
func (e *Engine) composed(ctx context.Context, ref image.Image, cand string) (ImageData, error) {
	if e.cfg.Images == nil {
		return ImageData{}, errors.New("no image source configured")
	}
	d, err := e.cfg.Images.Image(ctx, cand)
	if err != nil {
		return ImageData{}, fmt.Errorf("load candidate %s: %w", cand, err)
	}
	img, err := e.cfg.Decode(d.Bytes)
	if err != nil {
		return ImageData{}, fmt.Errorf("decode candidate %s: %w", cand, err)
	}
	return encodeJPEG(e.cfg.Compose(ref, img))
}

// candidateImage loads a candidate for the verifier, resized to a square
// when the options ask for it.
func (e *Engine) candidateImage(ctx context.Context, name string) (ImageData, error) {
	if e.cfg.Images == nil {
		return ImageData{}, errors.New("no image source configured")
	}
	d, err := e.cfg.Images.Image(ctx, name)
	if err != nil {
		return ImageData{}, err
	}
	if e.opt.VerifierImageSide <= 0 {
		return d, nil
	}
	img, err := e.cfg.Decode(d.Bytes)
	if err != nil {
		return ImageData{}, fmt.Errorf("decode %s: %w", name, err)
	}
	side := e.opt.VerifierImageSide
	return encodeJPEG(imageio.ResizeBicubic(img, side, side))
}

func decodeStd(b []byte) (image.Image, error) {
	img, _, err := image.Decode(bytes.NewReader(b))
	return img, err
}

func encodeJPEG(img image.Image) (ImageData, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		return ImageData{}, fmt.Errorf("encode JPEG: %w", err)
	}
	return ImageData{Bytes: buf.Bytes(), MIME: "image/jpeg"}, nil
}
