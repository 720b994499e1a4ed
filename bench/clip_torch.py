"""PyTorch side of bench/clip: a CLIP forward pass in plain torch (the same
computation as transformers' CLIPModel: pre-LN blocks, class-token pooling,
end-token pooling, bias-free projections) over an HF-layout safetensors
checkpoint, timed on the CPU.

Run with Debian's interpreter: /usr/bin/python3 bench/clip_torch.py DIR THREADS
Prints one line: "pytorch threads=T images/s=X texts/s=Y" after checking its
embeddings against imagescope's (DIR/go_embeds.safetensors) when present.
Texts: every text is computed to its own end token on both sides (PyTorch
batches texts of equal length together, so no padding is computed).
Refuses to run on the reference BLAS or with another thread count.
"""

import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = bytearray(data[base + b : base + e])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if e > b else torch.empty(0)
        out[name] = t.reshape(info["shape"]).float()
    return out


class Tower:
    def __init__(self, w, prefix, layers, heads, act, eps):
        self.layers = []
        for i in range(layers):
            p = f"{prefix}.encoder.layers.{i}."
            qkv_w = torch.cat([w[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
            qkv_b = torch.cat([w[p + f"self_attn.{x}_proj.bias"] for x in "qkv"])
            self.layers.append(
                dict(
                    ln1=(w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"]),
                    ln2=(w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"]),
                    qkv=(qkv_w, qkv_b),
                    out=(w[p + "self_attn.out_proj.weight"], w[p + "self_attn.out_proj.bias"]),
                    fc1=(w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]),
                    fc2=(w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"]),
                )
            )
        self.heads, self.act, self.eps = heads, act, eps

    def __call__(self, x, mask=None):
        B, L, W = x.shape
        H = self.heads
        dh = W // H
        for l in self.layers:
            h = F.layer_norm(x, (W,), *l["ln1"], self.eps)
            qkv = F.linear(h, *l["qkv"]).view(B, L, 3, H, dh).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * (dh ** -0.5), qkv[1], qkv[2]
            att = q @ k.transpose(-1, -2)
            if mask is not None:
                att = att + mask
            att = att.softmax(-1) @ v
            att = att.transpose(1, 2).reshape(B, L, W)
            x = x + F.linear(att, *l["out"])
            h = F.layer_norm(x, (W,), *l["ln2"], self.eps)
            h = F.linear(h, *l["fc1"])
            h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
            x = x + F.linear(h, *l["fc2"])
        return x


class CLIP:
    def __init__(self, d):
        cfg = json.load(open(os.path.join(d, "config.json")))
        vc, tc = cfg["vision_config"], cfg["text_config"]
        w = read_safetensors(os.path.join(d, "model.safetensors"))
        self.w = w
        self.patch = vc["patch_size"]
        self.vw, self.tw = vc["hidden_size"], tc["hidden_size"]
        self.veps, self.teps = vc.get("layer_norm_eps", 1e-5), tc.get("layer_norm_eps", 1e-5)
        self.vision = Tower(w, "vision_model", vc["num_hidden_layers"], vc["num_attention_heads"], vc.get("hidden_act", "quick_gelu"), self.veps)
        self.text = Tower(w, "text_model", tc["num_hidden_layers"], tc["num_attention_heads"], tc.get("hidden_act", "quick_gelu"), self.teps)

    def images(self, px):
        w = self.w
        x = F.conv2d(px, w["vision_model.embeddings.patch_embedding.weight"], stride=self.patch)
        x = x.flatten(2).transpose(1, 2)
        cls = w["vision_model.embeddings.class_embedding"].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + w["vision_model.embeddings.position_embedding.weight"]
        x = F.layer_norm(x, (self.vw,), w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"], self.veps)
        x = self.vision(x)
        pooled = F.layer_norm(x[:, 0], (self.vw,), w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"], self.veps)
        return pooled @ w["visual_projection.weight"].t()

    def texts(self, ids):
        w = self.w
        eot = ids.argmax(-1)
        L = int(eot.max()) + 1  # pad to the longest text of the batch, as HF padding=True does
        ids = ids[:, :L]
        x = w["text_model.embeddings.token_embedding.weight"][ids] + w["text_model.embeddings.position_embedding.weight"][:L]
        mask = torch.full((L, L), float("-inf")).triu(1)
        x = self.text(x, mask)
        x = F.layer_norm(x, (self.tw,), w["text_model.final_layer_norm.weight"], w["text_model.final_layer_norm.bias"], self.teps)
        pooled = x[torch.arange(x.shape[0]), eot]
        return pooled @ w["text_projection.weight"].t()


def texts_to_their_end(model, ids, batch):
    """Embed texts with no padding computed: texts of equal length are
    batched together (up to batch), so every text stops at its own end
    token, as imagescope's text tower does. Returns rows in input order."""
    eot = ids.argmax(-1)
    order = torch.argsort(eot, stable=True)
    out = [None] * len(ids)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and j - i < batch and eot[order[j]] == eot[order[i]]:
            j += 1
        sel = order[i:j]
        for r, e in zip(sel.tolist(), model.texts(ids[sel])):
            out[r] = e
        i = j
    return torch.stack(out)


def main():
    d, threads = sys.argv[1], int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    torch.set_num_threads(threads)
    model = CLIP(d)
    inp = read_safetensors(os.path.join(d, "inputs.safetensors"))
    px, ids = inp["pixels"], inp["ids"].long()
    with torch.inference_mode():
        model.images(px[:2])
        model.texts(ids[:8])
        # The BLAS is mapped in by now: refuse the reference BLAS, and check
        # the thread counts both libraries will use.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import peerblas
        peerblas.require_fast_blas()
        if torch.get_num_threads() != threads:
            print(f"torch uses {torch.get_num_threads()} threads, want {threads}", file=sys.stderr)
            sys.exit(3)
        blas_cfg = [l.strip() for l in torch.__config__.show().splitlines() if "BLAS" in l or "LAPACK" in l]
        print(f"pytorch loaded {peerblas.describe()}; torch.get_num_threads()={torch.get_num_threads()} openblas_threads={peerblas.blas_threads()}; build: {'; '.join(blas_cfg)}")
        best_i = best_t = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            img = torch.cat([model.images(px[i : i + batch]) for i in range(0, len(px), batch)])
            best_i = min(best_i, time.perf_counter() - t0)
            t0 = time.perf_counter()
            txt = texts_to_their_end(model, ids, batch)
            best_t = min(best_t, time.perf_counter() - t0)
    go = os.path.join(d, "go_embeds.safetensors")
    if os.path.exists(go):
        g = read_safetensors(go)
        di = (g["image_embeds"] - img).abs().max().item()
        dt = (g["text_embeds"] - txt).abs().max().item()
        scale = max(img.abs().max().item(), txt.abs().max().item())
        print(f"check: max |imagescope - pytorch| images={di:.3g} texts={dt:.3g} (max |embedding| {scale:.3g})")
        if not (di <= 1e-3 * scale and dt <= 1e-3 * scale):
            print("check FAILED: the two implementations disagree", file=sys.stderr)
            sys.exit(1)
    print(f"pytorch torch={torch.__version__} threads={threads} images/s={len(px) / best_i:.2f} texts/s={len(ids) / best_t:.2f}")


if __name__ == "__main__":
    main()
