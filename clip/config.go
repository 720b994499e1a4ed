package clip

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// TowerConfig describes one transformer tower.
type TowerConfig struct {
	Width        int     // hidden size
	Layers       int     // encoder layers
	Heads        int     // attention heads
	Intermediate int     // MLP hidden size
	Act          string  // "quick_gelu" or "gelu"
	Eps          float32 // layer norm epsilon
}

// Config is the architecture of a CLIP model, whichever layout it came from.
type Config struct {
	Vision        TowerConfig
	Text          TowerConfig
	ImageSize     int
	PatchSize     int
	Channels      int
	ContextLength int // text positions
	VocabSize     int
	ProjectionDim int
}

// grid is the number of patches per side.
func (c *Config) grid() int { return c.ImageSize / c.PatchSize }

func (c *Config) validate() error {
	check := func(what string, v int) error {
		if v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", what, v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v int
	}{
		{"vision hidden_size", c.Vision.Width}, {"vision num_hidden_layers", c.Vision.Layers},
		{"vision num_attention_heads", c.Vision.Heads}, {"vision intermediate_size", c.Vision.Intermediate},
		{"text hidden_size", c.Text.Width}, {"text num_hidden_layers", c.Text.Layers},
		{"text num_attention_heads", c.Text.Heads}, {"text intermediate_size", c.Text.Intermediate},
		{"image_size", c.ImageSize}, {"patch_size", c.PatchSize}, {"num_channels", c.Channels},
		{"max_position_embeddings", c.ContextLength}, {"vocab_size", c.VocabSize}, {"projection_dim", c.ProjectionDim},
	} {
		if err := check(f.n, f.v); err != nil {
			return err
		}
	}
	if c.Vision.Width%c.Vision.Heads != 0 {
		return fmt.Errorf("vision hidden_size %d is not divisible by %d heads", c.Vision.Width, c.Vision.Heads)
	}
	if c.Text.Width%c.Text.Heads != 0 {
		return fmt.Errorf("text hidden_size %d is not divisible by %d heads", c.Text.Width, c.Text.Heads)
	}
	if c.ImageSize%c.PatchSize != 0 {
		return fmt.Errorf("image_size %d is not a multiple of patch_size %d", c.ImageSize, c.PatchSize)
	}
	for _, t := range []TowerConfig{c.Vision, c.Text} {
		switch t.Act {
		case "quick_gelu", "gelu":
		default:
			return fmt.Errorf("unsupported hidden_act %q (want quick_gelu or gelu)", t.Act)
		}
	}
	return nil
}

// hfTowerJSON holds the fields of text_config / vision_config. Pointers tell
// "absent" (use transformers' defaults) from zero.
type hfTowerJSON struct {
	HiddenSize       *int     `json:"hidden_size"`
	Intermediate     *int     `json:"intermediate_size"`
	Heads            *int     `json:"num_attention_heads"`
	Layers           *int     `json:"num_hidden_layers"`
	HiddenAct        *string  `json:"hidden_act"`
	LayerNormEps     *float64 `json:"layer_norm_eps"`
	ImageSize        *int     `json:"image_size"`
	PatchSize        *int     `json:"patch_size"`
	Channels         *int     `json:"num_channels"`
	MaxPositions     *int     `json:"max_position_embeddings"`
	VocabSize        *int     `json:"vocab_size"`
	ProjectionDimTwr *int     `json:"projection_dim"`
}

func intOr(p *int, d int) int {
	if p != nil {
		return *p
	}
	return d
}

// parseHFConfig reads a transformers CLIPConfig (config.json). Missing fields
// take CLIPTextConfig / CLIPVisionConfig defaults, as transformers does.
func parseHFConfig(data []byte) (*Config, error) {
	var raw struct {
		ModelType     string       `json:"model_type"`
		ProjectionDim *int         `json:"projection_dim"`
		Text          *hfTowerJSON `json:"text_config"`
		Vision        *hfTowerJSON `json:"vision_config"`
		TextDict      *hfTowerJSON `json:"text_config_dict"`
		VisionDict    *hfTowerJSON `json:"vision_config_dict"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if raw.ModelType != "" && raw.ModelType != "clip" {
		return nil, fmt.Errorf("model_type %q is not a CLIP model", raw.ModelType)
	}
	text, vision := raw.Text, raw.Vision
	if text == nil {
		text = raw.TextDict
	}
	if vision == nil {
		vision = raw.VisionDict
	}
	if text == nil {
		text = &hfTowerJSON{}
	}
	if vision == nil {
		vision = &hfTowerJSON{}
	}
	tower := func(t *hfTowerJSON, width, inter, heads, layers int) TowerConfig {
		tc := TowerConfig{
			Width: intOr(t.HiddenSize, width), Intermediate: intOr(t.Intermediate, inter),
			Heads: intOr(t.Heads, heads), Layers: intOr(t.Layers, layers),
			Act: "quick_gelu", Eps: 1e-5,
		}
		if t.HiddenAct != nil {
			tc.Act = *t.HiddenAct
		}
		if t.LayerNormEps != nil {
			tc.Eps = float32(*t.LayerNormEps)
		}
		return tc
	}
	c := &Config{
		Text:          tower(text, 512, 2048, 8, 12),
		Vision:        tower(vision, 768, 3072, 12, 12),
		ImageSize:     intOr(vision.ImageSize, 224),
		PatchSize:     intOr(vision.PatchSize, 32),
		Channels:      intOr(vision.Channels, 3),
		ContextLength: intOr(text.MaxPositions, 77),
		VocabSize:     intOr(text.VocabSize, 49408),
		ProjectionDim: intOr(raw.ProjectionDim, 512),
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseOpenCLIPConfig reads open_clip_config.json ({"model_cfg": {...}}) or a
// bare open_clip model config.
func parseOpenCLIPConfig(data []byte) (*Config, error) {
	type visionCfg struct {
		ImageSize any      `json:"image_size"`
		Layers    any      `json:"layers"`
		Width     int      `json:"width"`
		HeadWidth *int     `json:"head_width"`
		PatchSize int      `json:"patch_size"`
		MLPRatio  *float64 `json:"mlp_ratio"`
		TimmModel string   `json:"timm_model_name"`
	}
	type textCfg struct {
		ContextLength *int     `json:"context_length"`
		VocabSize     *int     `json:"vocab_size"`
		Width         int      `json:"width"`
		Heads         int      `json:"heads"`
		Layers        int      `json:"layers"`
		MLPRatio      *float64 `json:"mlp_ratio"`
		HFModel       string   `json:"hf_model_name"`
	}
	type modelCfg struct {
		EmbedDim  int        `json:"embed_dim"`
		QuickGELU bool       `json:"quick_gelu"`
		Vision    *visionCfg `json:"vision_cfg"`
		Text      *textCfg   `json:"text_cfg"`
	}
	var wrap struct {
		Model *modelCfg `json:"model_cfg"`
	}
	if err := json.Unmarshal(data, &wrap); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	mc := wrap.Model
	if mc == nil {
		mc = &modelCfg{}
		if err := json.Unmarshal(data, mc); err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
	}
	if mc.Vision == nil || mc.Text == nil {
		return nil, fmt.Errorf("missing vision_cfg or text_cfg")
	}
	if err := checkOpenCLIPOptions(data); err != nil {
		return nil, err
	}
	if mc.Vision.TimmModel != "" || mc.Text.HFModel != "" {
		return nil, fmt.Errorf("only the standard ViT/transformer CLIP towers are supported, not timm/HF tower %q%q", mc.Vision.TimmModel, mc.Text.HFModel)
	}
	toInt := func(what string, v any) (int, error) {
		f, ok := v.(float64)
		if !ok || f != float64(int(f)) {
			return 0, fmt.Errorf("vision_cfg %s: want an integer, got %v", what, v)
		}
		return int(f), nil
	}
	imageSize, err := toInt("image_size", mc.Vision.ImageSize)
	if err != nil {
		return nil, err
	}
	vlayers, err := toInt("layers", mc.Vision.Layers)
	if err != nil {
		return nil, err
	}
	act := "gelu"
	if mc.QuickGELU {
		act = "quick_gelu"
	}
	headWidth := 64
	if mc.Vision.HeadWidth != nil {
		headWidth = *mc.Vision.HeadWidth
	}
	if headWidth <= 0 || mc.Vision.Width%headWidth != 0 {
		return nil, fmt.Errorf("vision width %d not divisible by head_width %d", mc.Vision.Width, headWidth)
	}
	ratio := func(p *float64) float64 {
		if p == nil {
			return 4
		}
		return *p
	}
	c := &Config{
		Vision: TowerConfig{Width: mc.Vision.Width, Layers: vlayers, Heads: mc.Vision.Width / headWidth,
			Intermediate: int(float64(mc.Vision.Width) * ratio(mc.Vision.MLPRatio)), Act: act, Eps: 1e-5},
		Text: TowerConfig{Width: mc.Text.Width, Layers: mc.Text.Layers, Heads: mc.Text.Heads,
			Intermediate: int(float64(mc.Text.Width) * ratio(mc.Text.MLPRatio)), Act: act, Eps: 1e-5},
		ImageSize:     imageSize,
		PatchSize:     mc.Vision.PatchSize,
		Channels:      3,
		ContextLength: intOr(mc.Text.ContextLength, 77),
		VocabSize:     intOr(mc.Text.VocabSize, 49408),
		ProjectionDim: mc.EmbedDim,
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func readConfig(path string, parse func([]byte) (*Config, error)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// checkOpenCLIPOptions refuses open_clip tower options that change the
// forward pass and are not implemented (layer scale, attentional pooling,
// other pooling rules, projection bias, ...), rather than silently
// computing something else.
func checkOpenCLIPOptions(data []byte) error {
	var raw struct {
		Model map[string]json.RawMessage `json:"model_cfg"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	mc := raw.Model
	if mc == nil {
		if err := json.Unmarshal(data, &mc); err != nil {
			return err
		}
	}
	allowed := map[string]map[string]string{
		// option -> the only accepted JSON value(s) besides absence
		"vision_cfg": {"ls_init_value": "null", "attentional_pool": "false", "no_ln_pre": "false",
			"pool_type": `"tok"`, "final_ln_after_pool": "false", "input_patchnorm": "false", "global_average_pool": "false"},
		"text_cfg": {"ls_init_value": "null", "pool_type": `"argmax"`, "proj_bias": "false",
			"no_causal_mask": "false", "embed_cls": "false", "attentional_pool": "false", "final_ln_after_pool": "false"},
	}
	for tower, opts := range allowed {
		var cfg map[string]json.RawMessage
		if err := json.Unmarshal(mc[tower], &cfg); err != nil {
			return fmt.Errorf("%s: %w", tower, err)
		}
		for k, want := range opts {
			v, ok := cfg[k]
			if !ok {
				continue
			}
			got := strings.TrimSpace(string(v))
			if got != want && !(tower == "text_cfg" && k == "pool_type" && got == "null") {
				return fmt.Errorf("%s.%s = %s is not supported (only %s)", tower, k, got, want)
			}
		}
	}
	return nil
}
