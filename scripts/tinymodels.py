#!/usr/bin/python3
"""Write tiny random-weight models that Ollama imports with `ollama create`.

    tinymodels.py text   DIR   Llama-architecture text model (hidden 64, 2 layers)
    tinymodels.py vision DIR   Gemma3ForConditionalGeneration vision model

Each folder gets config.json, model.safetensors, tokenizer.json,
tokenizer_config.json and a Modelfile (FROM . plus an explicit TEMPLATE).
The weights are random (fixed seed), so the models answer with noise: the
integration tests use them to drive every fallback of the pipeline against a
real server, not to get sensible answers. Only numpy is needed.

Facts the vision model depends on (Ollama v0.17.x): the Gemma 3 runtime
inserts token ids 108, 255999 and 256000 around an image, so the vocabulary
must have the real Gemma size (262208; Ollama pads the tokenizer to it), and
image_size / patch_size must be a multiple of the pooling side
(sqrt(mm_tokens_per_image)).
"""

import json
import os
import struct
import sys

import numpy as np

# The Llama-3 pre-tokenizer split pattern: Ollama recognises it by its hash
# and selects the matching pre-tokenizer ("llama-bpe").
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A small English corpus for the BPE merges: enough to give a few hundred
# tokens so prompts stay a reasonable number of tokens long.
CORPUS = """
the image shows a photo of a person with a dog on the sofa in the room near the
window and a red car on the street under the blue sky with white clouds; answer
the question with yes or no. is there a cat in the picture? describe the image
in detail. target description: the same dress but in red with long sleeves and
a shorter skirt. propositions: is the shirt blue? does the woman hold a bag?
json reasoning caption change instruction reference candidate evaluate verify
""" * 4


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_merges(corpus, n_merges):
    enc = bytes_to_unicode()
    words = {}
    for i, w in enumerate(corpus.split()):
        w = ("Ġ" if i else "") + "".join(enc[b] for b in w.encode())
        words[tuple(w)] = words.get(tuple(w), 0) + 1
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        if pairs[best] < 2:
            break
        merges.append(best)
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    return merges


def byte_bpe_tokenizer(special):
    """A byte-level BPE tokenizer.json with the Llama-3 split pattern."""
    enc = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[enc[b]] = len(vocab)
    merges = bpe_merges(CORPUS, 300)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added = []
    for s in special:
        added.append({"id": len(vocab), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        vocab[s] = len(vocab)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    return tok, len(vocab)


def write_safetensors(path, tensors):
    """Write float16 tensors in the safetensors layout (header + raw data)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].astype(np.float16))
        b = a.tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_json(path, v):
    with open(path, "w") as f:
        json.dump(v, f, ensure_ascii=False)


class Weights:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.t = {}

    def rand(self, name, *shape, scale=0.05):
        self.t[name] = self.rng.standard_normal(shape).astype(np.float32) * scale

    def ones(self, name, n):
        self.t[name] = np.ones(n, dtype=np.float32)

    def zeros(self, name, n):
        self.t[name] = np.zeros(n, dtype=np.float32)


def text_model(out):
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok, vocab = byte_bpe_tokenizer(special)
    hidden, inter, layers, heads = 64, 128, 2, 4
    w = Weights(17)
    w.rand("model.embed_tokens.weight", vocab, hidden, scale=0.5)
    w.rand("lm_head.weight", vocab, hidden, scale=0.5)
    w.ones("model.norm.weight", hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        w.ones(p + "input_layernorm.weight", hidden)
        w.ones(p + "post_attention_layernorm.weight", hidden)
        for m in ("q", "k", "v", "o"):
            w.rand(p + f"self_attn.{m}_proj.weight", hidden, hidden)
        w.rand(p + "mlp.gate_proj.weight", inter, hidden)
        w.rand(p + "mlp.up_proj.weight", inter, hidden)
        w.rand(p + "mlp.down_proj.weight", hidden, inter)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "bos_token_id": vocab - 5, "eos_token_id": vocab - 1, "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), cfg)
    write_json(os.path.join(out, "tokenizer.json"), tok)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True,
        "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast"})
    write_json(os.path.join(out, "generation_config.json"), {
        "bos_token_id": vocab - 5, "eos_token_id": [vocab - 4, vocab - 1]})
    write_safetensors(os.path.join(out, "model.safetensors"), w.t)
    with open(os.path.join(out, "Modelfile"), "w") as f:
        f.write('FROM .\n'
                'TEMPLATE """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
                '{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"""\n'
                'PARAMETER stop <|eot_id|>\n'
                'PARAMETER num_ctx 8192\n')


def vision_model(out):
    special = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
    tok, _ = byte_bpe_tokenizer(special)
    vocab = 262208  # Ollama's Gemma 3 runtime uses ids 255999 and 256000
    hidden, inter, layers, heads, kv_heads, head_dim = 64, 128, 2, 4, 2, 16
    vh, vi, vlayers, vheads, image, patch, mm_tokens = 32, 64, 1, 2, 64, 4, 16
    w = Weights(23)
    lm = "language_model.model."
    w.rand(lm + "embed_tokens.weight", vocab, hidden, scale=0.5)
    w.zeros(lm + "norm.weight", hidden)  # Gemma norms store weight-1
    for i in range(layers):
        p = f"{lm}layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            w.zeros(p + n + ".weight", hidden)
        w.rand(p + "self_attn.q_proj.weight", heads * head_dim, hidden)
        w.rand(p + "self_attn.k_proj.weight", kv_heads * head_dim, hidden)
        w.rand(p + "self_attn.v_proj.weight", kv_heads * head_dim, hidden)
        w.rand(p + "self_attn.o_proj.weight", hidden, heads * head_dim)
        w.zeros(p + "self_attn.q_norm.weight", head_dim)
        w.zeros(p + "self_attn.k_norm.weight", head_dim)
        w.rand(p + "mlp.gate_proj.weight", inter, hidden)
        w.rand(p + "mlp.up_proj.weight", inter, hidden)
        w.rand(p + "mlp.down_proj.weight", hidden, inter)
    v = "vision_tower.vision_model."
    w.rand(v + "embeddings.patch_embedding.weight", vh, 3, patch, patch)
    w.zeros(v + "embeddings.patch_embedding.bias", vh)
    w.rand(v + "embeddings.position_embedding.weight", (image // patch) ** 2, vh)
    for i in range(vlayers):
        p = f"{v}encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            w.ones(p + n + ".weight", vh)
            w.zeros(p + n + ".bias", vh)
        for m in ("q", "k", "v", "out"):
            w.rand(p + f"self_attn.{m}_proj.weight", vh, vh)
            w.zeros(p + f"self_attn.{m}_proj.bias", vh)
        w.rand(p + "mlp.fc1.weight", vi, vh)
        w.zeros(p + "mlp.fc1.bias", vi)
        w.rand(p + "mlp.fc2.weight", vh, vi)
        w.zeros(p + "mlp.fc2.bias", vh)
    w.ones(v + "post_layernorm.weight", vh)
    w.zeros(v + "post_layernorm.bias", vh)
    w.rand("multi_modal_projector.mm_input_projection_weight", vh, hidden)
    w.zeros("multi_modal_projector.mm_soft_emb_norm.weight", vh)
    cfg = {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "vocab_size": vocab, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192, "mm_tokens_per_image": mm_tokens,
        "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
        "text_config": {"model_type": "gemma3_text", "vocab_size": vocab, "hidden_size": hidden,
                        "intermediate_size": inter, "num_hidden_layers": layers,
                        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                        "head_dim": head_dim, "sliding_window": 512, "rms_norm_eps": 1e-6},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": vh, "intermediate_size": vi,
                          "num_hidden_layers": vlayers, "num_attention_heads": vheads,
                          "image_size": image, "patch_size": patch, "num_channels": 3,
                          "layer_norm_eps": 1e-6},
        "torch_dtype": "float16",
    }
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), cfg)
    write_json(os.path.join(out, "tokenizer.json"), tok)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "add_bos_token": True})
    write_safetensors(os.path.join(out, "model.safetensors"), w.t)
    with open(os.path.join(out, "Modelfile"), "w") as f:
        f.write('FROM .\n'
                'TEMPLATE """{{- range .Messages }}<start_of_turn>{{ .Role }}\n'
                '{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"""\n'
                'PARAMETER stop <end_of_turn>\n'
                'PARAMETER num_ctx 8192\n')


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("text", "vision"):
        sys.exit(__doc__)
    {"text": text_model, "vision": vision_model}[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
