package clip

import (
	"fmt"
	"slices"

	"github.com/imagescope/imagescope/linalg"
)

// Layout names a checkpoint key layout.
const (
	LayoutHF       = "hf"        // transformers CLIPModel: config.json + model.safetensors
	LayoutOpenCLIP = "open_clip" // open_clip: open_clip_config.json + open_clip_model.safetensors
)

// tensorSource reads named float tensors, checking their shape.
type tensorSource struct {
	st *safetensorsFile
}

func shapeEq(a, b []int) bool { return slices.Equal(a, b) }

// get reads tensor name and checks it has exactly the shape want.
func (s tensorSource) get(name string, want ...int) ([]float32, error) {
	t, ok := s.st.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q is missing (want shape %v)", s.st.path, name, want)
	}
	if !shapeEq(t.Shape, want) {
		return nil, fmt.Errorf("%s: tensor %q has shape %v, want %v", s.st.path, name, t.Shape, want)
	}
	data, _, err := s.st.float32s(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.st.path, err)
	}
	return data, nil
}

// linear is a packed weight plus optional bias.
type linear struct {
	w *linalg.Packed
	b []float32
}

// block is one pre-LN transformer layer.
type block struct {
	ln1g, ln1b, ln2g, ln2b []float32
	qkv, out, fc1, fc2     linear
}

// loadBlock reads layer i of a tower. prefix is the tower's layer prefix
// ("text_model.encoder.layers.3" / "transformer.resblocks.3").
func loadBlock(src tensorSource, layout, prefix string, c TowerConfig) (block, error) {
	W, I := c.Width, c.Intermediate
	var b block
	var err error
	get := func(dst *[]float32, name string, shape ...int) {
		if err != nil {
			return
		}
		*dst, err = src.get(prefix+name, shape...)
	}
	var qkvW, qkvB, outW, fc1W, fc2W []float32
	switch layout {
	case LayoutHF:
		get(&b.ln1g, ".layer_norm1.weight", W)
		get(&b.ln1b, ".layer_norm1.bias", W)
		get(&b.ln2g, ".layer_norm2.weight", W)
		get(&b.ln2b, ".layer_norm2.bias", W)
		var qw, kw, vw, qb, kb, vb []float32
		get(&qw, ".self_attn.q_proj.weight", W, W)
		get(&kw, ".self_attn.k_proj.weight", W, W)
		get(&vw, ".self_attn.v_proj.weight", W, W)
		get(&qb, ".self_attn.q_proj.bias", W)
		get(&kb, ".self_attn.k_proj.bias", W)
		get(&vb, ".self_attn.v_proj.bias", W)
		get(&outW, ".self_attn.out_proj.weight", W, W)
		get(&b.out.b, ".self_attn.out_proj.bias", W)
		get(&fc1W, ".mlp.fc1.weight", I, W)
		get(&b.fc1.b, ".mlp.fc1.bias", I)
		get(&fc2W, ".mlp.fc2.weight", W, I)
		get(&b.fc2.b, ".mlp.fc2.bias", W)
		if err == nil {
			qkvW = slices.Concat(qw, kw, vw)
			qkvB = slices.Concat(qb, kb, vb)
		}
	case LayoutOpenCLIP:
		get(&b.ln1g, ".ln_1.weight", W)
		get(&b.ln1b, ".ln_1.bias", W)
		get(&b.ln2g, ".ln_2.weight", W)
		get(&b.ln2b, ".ln_2.bias", W)
		get(&qkvW, ".attn.in_proj_weight", 3*W, W)
		get(&qkvB, ".attn.in_proj_bias", 3*W)
		get(&outW, ".attn.out_proj.weight", W, W)
		get(&b.out.b, ".attn.out_proj.bias", W)
		get(&fc1W, ".mlp.c_fc.weight", I, W)
		get(&b.fc1.b, ".mlp.c_fc.bias", I)
		get(&fc2W, ".mlp.c_proj.weight", W, I)
		get(&b.fc2.b, ".mlp.c_proj.bias", W)
	default:
		return b, fmt.Errorf("unknown layout %q", layout)
	}
	if err != nil {
		return b, err
	}
	b.qkv = linear{linalg.PackTransposed(qkvW, 3*W, W), qkvB}
	b.out.w = linalg.PackTransposed(outW, W, W)
	b.fc1.w = linalg.PackTransposed(fc1W, I, W)
	b.fc2.w = linalg.PackTransposed(fc2W, W, I)
	return b, nil
}

// visionTower holds the image encoder's weights.
type visionTower struct {
	cfg                    TowerConfig
	patch                  *linalg.Packed // (C*P*P) -> W
	cls                    []float32      // W
	pos                    []float32      // tokens x W
	lnPreG, lnPreB         []float32
	blocks                 []block
	lnPostG, lnPostB       []float32
	proj                   *linalg.Packed // W -> D
	imageSize, patchSize   int
	channels, grid, tokens int
}

// textTower holds the text encoder's weights.
type textTower struct {
	cfg                TowerConfig
	tok                []float32 // vocab x W
	pos                []float32 // context x W
	blocks             []block
	lnFinalG, lnFinalB []float32
	proj               *linalg.Packed // W -> D
	context, vocab     int
}

// loadWeights reads both towers from a checkpoint in the given layout.
func loadWeights(st *safetensorsFile, layout string, c *Config) (*visionTower, *textTower, float32, error) {
	src := tensorSource{st}
	vw, tw, D := c.Vision.Width, c.Text.Width, c.ProjectionDim
	G := c.grid()
	v := &visionTower{cfg: c.Vision, imageSize: c.ImageSize, patchSize: c.PatchSize,
		channels: c.Channels, grid: G, tokens: G*G + 1}
	t := &textTower{cfg: c.Text, context: c.ContextLength, vocab: c.VocabSize}
	var err error
	get := func(dst *[]float32, name string, shape ...int) {
		if err != nil {
			return
		}
		*dst, err = src.get(name, shape...)
	}
	var patchW, vproj, tproj, scale []float32
	P, C := c.PatchSize, c.Channels
	var vPrefix, tPrefix string
	switch layout {
	case LayoutHF:
		get(&v.cls, "vision_model.embeddings.class_embedding", vw)
		get(&patchW, "vision_model.embeddings.patch_embedding.weight", vw, C, P, P)
		get(&v.pos, "vision_model.embeddings.position_embedding.weight", v.tokens, vw)
		get(&v.lnPreG, "vision_model.pre_layrnorm.weight", vw)
		get(&v.lnPreB, "vision_model.pre_layrnorm.bias", vw)
		get(&v.lnPostG, "vision_model.post_layernorm.weight", vw)
		get(&v.lnPostB, "vision_model.post_layernorm.bias", vw)
		get(&vproj, "visual_projection.weight", D, vw)
		get(&t.tok, "text_model.embeddings.token_embedding.weight", c.VocabSize, tw)
		get(&t.pos, "text_model.embeddings.position_embedding.weight", c.ContextLength, tw)
		get(&t.lnFinalG, "text_model.final_layer_norm.weight", tw)
		get(&t.lnFinalB, "text_model.final_layer_norm.bias", tw)
		get(&tproj, "text_projection.weight", D, tw)
		vPrefix, tPrefix = "vision_model.encoder.layers.", "text_model.encoder.layers."
	case LayoutOpenCLIP:
		get(&v.cls, "visual.class_embedding", vw)
		get(&patchW, "visual.conv1.weight", vw, C, P, P)
		get(&v.pos, "visual.positional_embedding", v.tokens, vw)
		get(&v.lnPreG, "visual.ln_pre.weight", vw)
		get(&v.lnPreB, "visual.ln_pre.bias", vw)
		get(&v.lnPostG, "visual.ln_post.weight", vw)
		get(&v.lnPostB, "visual.ln_post.bias", vw)
		get(&vproj, "visual.proj", vw, D)
		get(&t.tok, "token_embedding.weight", c.VocabSize, tw)
		get(&t.pos, "positional_embedding", c.ContextLength, tw)
		get(&t.lnFinalG, "ln_final.weight", tw)
		get(&t.lnFinalB, "ln_final.bias", tw)
		get(&tproj, "text_projection", tw, D)
		vPrefix, tPrefix = "visual.transformer.resblocks.", "transformer.resblocks."
	default:
		return nil, nil, 0, fmt.Errorf("unknown layout %q", layout)
	}
	get(&scale, "logit_scale")
	if err != nil {
		return nil, nil, 0, err
	}
	v.patch = linalg.PackTransposed(patchW, vw, C*P*P)
	if layout == LayoutHF {
		v.proj = linalg.PackTransposed(vproj, D, vw)
		t.proj = linalg.PackTransposed(tproj, D, tw)
	} else {
		v.proj = linalg.Pack(vproj, vw, D)
		t.proj = linalg.Pack(tproj, tw, D)
	}
	for i := 0; i < c.Vision.Layers; i++ {
		b, err := loadBlock(src, layout, fmt.Sprintf("%s%d", vPrefix, i), c.Vision)
		if err != nil {
			return nil, nil, 0, err
		}
		v.blocks = append(v.blocks, b)
	}
	for i := 0; i < c.Text.Layers; i++ {
		b, err := loadBlock(src, layout, fmt.Sprintf("%s%d", tPrefix, i), c.Text)
		if err != nil {
			return nil, nil, 0, err
		}
		t.blocks = append(t.blocks, b)
	}
	return v, t, scale[0], nil
}
