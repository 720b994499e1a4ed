package clip

import (
	"context"
	"fmt"
	"math"

	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/linalg"
)

// seqSpan is one sequence inside a batch matrix: rows [off, off+n).
type seqSpan struct{ off, n int }

// traceFunc receives intermediate activations (rows x width, row-major) for
// debugging and tests; stage names follow the reference fixtures.
type traceFunc func(stage string, x []float32)

// layerNormRows applies layer norm to rows of x into dst, in parallel.
func layerNormRows(dst, x []float32, rows, dim int, g, b []float32, eps float32, threads int) {
	parallel.Chunks(threads, rows, func(lo, hi int) {
		linalg.LayerNorm(dst[lo*dim:hi*dim], x[lo*dim:hi*dim], hi-lo, dim, g, b, eps)
	})
}

// activate applies the tower's activation to rows of x in parallel.
func activate(x []float32, rows, dim int, act string, threads int) {
	parallel.Chunks(threads, rows, func(lo, hi int) {
		if act == "gelu" {
			linalg.GELU(x[lo*dim : hi*dim])
		} else {
			linalg.QuickGELU(x[lo*dim : hi*dim])
		}
	})
}

// encode runs the transformer blocks over x (rows x W) in place.
func encode(ctx context.Context, c TowerConfig, blocks []block, x []float32, spans []seqSpan, causal bool, threads int, trace traceFunc, ws *workspace) error {
	W, I := c.Width, c.Intermediate
	R := len(x) / W
	h := grow(&ws.h, R*W)
	qkv := grow(&ws.qkv, R*3*W)
	mid := grow(&ws.mid, R*I)
	s := &ws.s
	for li := range blocks {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := &blocks[li]
		layerNormRows(h, x, R, W, b.ln1g, b.ln1b, c.Eps, threads)
		s.Linear(qkv, h, R, b.qkv.w, b.qkv.b, threads)
		attention(h, qkv, spans, W, c.Heads, causal, threads, ws)
		s.LinearAdd(x, h, R, b.out.w, b.out.b, threads)
		layerNormRows(h, x, R, W, b.ln2g, b.ln2b, c.Eps, threads)
		s.Linear(mid, h, R, b.fc1.w, b.fc1.b, threads)
		activate(mid, R, I, c.Act, threads)
		s.LinearAdd(x, mid, R, b.fc2.w, b.fc2.b, threads)
		if trace != nil {
			trace(fmt.Sprintf("layer%d", li), x)
		}
	}
	return nil
}

// attention computes multi-head self-attention for every sequence: out rows
// get the concatenated heads of softmax(q·kᵀ/√d)·v, read from the fused qkv
// rows (q | k | v, each W wide). With causal set, key j > query i is masked.
func attention(out, qkv []float32, spans []seqSpan, W, heads int, causal bool, threads int, ws *workspace) {
	dh := W / heads
	scale := float32(1 / math.Sqrt(float64(dh)))
	threads = parallel.Workers(threads)
	for len(ws.att) < threads {
		ws.att = append(ws.att, &linalg.Scratch{})
	}
	parallel.For(threads, len(spans)*heads, func(worker, t int) {
		s, h := spans[t/heads], t%heads
		ws.att[worker].AttentionHead(out[s.off*W+h*dh:], W, qkv[s.off*3*W:], 3*W,
			h*dh, W+h*dh, 2*W+h*dh, s.n, dh, scale, causal)
	})
}

// forwardImages embeds a batch of preprocessed images (each C x S x S, CHW)
// and returns the pooled features (B x W) and projections (B x D).
func (v *visionTower) forward(ctx context.Context, pixels [][]float32, D, threads int, trace traceFunc, ws *workspace) (pooled, embeds []float32, err error) {
	B := len(pixels)
	G, P, S, C, W := v.grid, v.patchSize, v.imageSize, v.channels, v.cfg.Width
	T := v.tokens
	K := C * P * P
	for i, px := range pixels {
		if len(px) != C*S*S {
			return nil, nil, fmt.Errorf("image %d: pixel tensor has %d values, want %d (%dx%dx%d)", i, len(px), C*S*S, C, S, S)
		}
	}
	np := B * G * G
	patches := grow(&ws.patches, np*K)
	parallel.Chunks(threads, np, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			b, g := r/(G*G), r%(G*G)
			gy, gx := g/G, g%G
			px := pixels[b]
			dst := patches[r*K : (r+1)*K]
			for c := 0; c < C; c++ {
				for ky := 0; ky < P; ky++ {
					src := px[c*S*S+(gy*P+ky)*S+gx*P:]
					copy(dst[(c*P+ky)*P:(c*P+ky+1)*P], src[:P])
				}
			}
		}
	})
	emb := grow(&ws.emb, np*W)
	ws.s.Linear(emb, patches, np, v.patch, nil, threads)
	x := grow(&ws.x, B*T*W)
	for b := 0; b < B; b++ {
		row := x[b*T*W : b*T*W+W]
		for j := range row {
			row[j] = v.cls[j] + v.pos[j]
		}
		for g := 0; g < G*G; g++ {
			dst := x[(b*T+1+g)*W : (b*T+2+g)*W]
			src := emb[(b*G*G+g)*W:]
			pos := v.pos[(1+g)*W:]
			for j := range dst {
				dst[j] = src[j] + pos[j]
			}
		}
	}
	if trace != nil {
		trace("embeddings", x)
	}
	layerNormRows(x, x, B*T, W, v.lnPreG, v.lnPreB, v.cfg.Eps, threads)
	if trace != nil {
		trace("pre_layrnorm", x)
	}
	spans := make([]seqSpan, B)
	for b := range spans {
		spans[b] = seqSpan{b * T, T}
	}
	if err := encode(ctx, v.cfg, v.blocks, x, spans, false, threads, trace, ws); err != nil {
		return nil, nil, err
	}
	pooled = make([]float32, B*W)
	for b := 0; b < B; b++ {
		linalg.LayerNorm(pooled[b*W:(b+1)*W], x[b*T*W:b*T*W+W], 1, W, v.lnPostG, v.lnPostB, v.cfg.Eps)
	}
	embeds = make([]float32, B*D)
	linalg.Linear(embeds, pooled, B, v.proj, nil, threads)
	return pooled, embeds, nil
}

// forward embeds token sequences. Each ids slice holds at most context ids
// and eots[i] is the position pooled (the first end token). Unless full is
// set, only positions 0..eot are computed: under the causal mask later
// positions cannot change the pooled one.
func (t *textTower) forward(ctx context.Context, ids [][]int32, eots []int, D int, full bool, threads int, trace traceFunc, ws *workspace) (pooled, embeds []float32, err error) {
	W := t.cfg.Width
	B := len(ids)
	spans := make([]seqSpan, B)
	R := 0
	for i, seq := range ids {
		if len(seq) == 0 || len(seq) > t.context {
			return nil, nil, fmt.Errorf("text %d: %d tokens, want 1..%d", i, len(seq), t.context)
		}
		if eots[i] < 0 || eots[i] >= len(seq) {
			return nil, nil, fmt.Errorf("text %d: end-token position %d outside 0..%d", i, eots[i], len(seq)-1)
		}
		n := eots[i] + 1
		if full {
			n = len(seq)
		}
		spans[i] = seqSpan{R, n}
		R += n
	}
	x := grow(&ws.x, R*W)
	for i, seq := range ids {
		for p := 0; p < spans[i].n; p++ {
			id := int(seq[p])
			if id < 0 || id >= t.vocab {
				return nil, nil, fmt.Errorf("text %d: token id %d at position %d outside the vocabulary (0..%d)", i, id, p, t.vocab-1)
			}
			dst := x[(spans[i].off+p)*W : (spans[i].off+p+1)*W]
			tok := t.tok[id*W:]
			pos := t.pos[p*W:]
			for j := range dst {
				dst[j] = tok[j] + pos[j]
			}
		}
	}
	if trace != nil {
		trace("embeddings", x)
	}
	if err := encode(ctx, t.cfg, t.blocks, x, spans, true, threads, trace, ws); err != nil {
		return nil, nil, err
	}
	pooled = make([]float32, B*W)
	if full {
		layerNormRows(x, x, R, W, t.lnFinalG, t.lnFinalB, t.cfg.Eps, threads)
		if trace != nil {
			trace("final_layer_norm", x)
		}
		for i := range ids {
			copy(pooled[i*W:(i+1)*W], x[(spans[i].off+eots[i])*W:])
		}
	} else {
		for i := range ids {
			r := spans[i].off + eots[i]
			linalg.LayerNorm(pooled[i*W:(i+1)*W], x[r*W:(r+1)*W], 1, W, t.lnFinalG, t.lnFinalB, t.cfg.Eps)
		}
	}
	embeds = make([]float32, B*D)
	linalg.Linear(embeds, pooled, B, t.proj, nil, threads)
	return pooled, embeds, nil
}

// eotIndex returns the pooling position of a token sequence: the first
// occurrence of its largest id (the end token, 49407, is the largest id of
// CLIP's vocabulary). This is open_clip's rule and what transformers computes
// for openai-style configs; eos_token_id in config.json is not consulted
// because legacy configs carry a wrong value (2).
func eotIndex(ids []int32) int {
	best := 0
	for i, id := range ids {
		if id > ids[best] {
			best = i
		}
	}
	return best
}

// workspace holds the buffers of one forward pass, reused across batches
// and calls (through Model's pool) so that embedding does not churn the
// garbage collector with tens of megabytes per batch.
type workspace struct {
	s                            linalg.Scratch
	x, h, qkv, mid, patches, emb []float32
	att                          []*linalg.Scratch // per attention worker
}

func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}
