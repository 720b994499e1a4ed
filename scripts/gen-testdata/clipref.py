#!/usr/bin/python3
"""Writes testdata/clip: two tiny CLIP checkpoints and the reference numbers
the Go CLIP is checked against.

Everything here is written from the published descriptions of the formats and
of the CLIP forward pass: a plain-torch CLIP, a BPE tokenizer, an integer
re-implementation of PIL's bicubic resize, a safetensors writer and a PNG
writer. Only torch and numpy are needed (Debian's python3-torch and
python3-numpy, seen by /usr/bin/python3). Every random number comes from a
seeded generator, so a rerun reproduces every file bit for bit.

usage: /usr/bin/python3 scripts/gen-testdata/clipref.py BPE_GZ OUT_DIR
  BPE_GZ   the CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz; the
           repository keeps a trimmed copy in testdata/clip)
  OUT_DIR  testdata/clip
"""

import collections
import gzip
import html
import json
import math
import os
import re
import struct
import sys
import zlib

import numpy as np
import torch

CONTEXT = 77
SOT, EOT = 49406, 49407
MERGES = 49152 - 256 - 2  # merges open_clip reads from the file
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
CROP = 224

# ---------------------------------------------------------------------------
# files


def write_json(path, obj, compact=False):
    with open(path, "w") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")


def png_chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, arr, mode, palette=None):
    """arr: uint8 HxW (L, P) or HxWxC (RGB, RGBA)."""
    ctype = {"L": 0, "RGB": 2, "P": 3, "RGBA": 6}[mode]
    h, w = arr.shape[:2]
    bpp = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.reshape(h, -1).astype(np.int16)
    raw = b""
    for y in range(h):  # per row the smallest of filters None, Sub and Up
        cur = rows[y]
        sub = cur.copy()
        sub[bpp:] -= cur[:-bpp]
        up = cur - rows[y - 1] if y else cur
        cands = [(0, cur), (1, sub), (2, up)] if mode != "P" else [(0, cur)]
        f, d = min(cands, key=lambda c: np.abs(((c[1] + 128) % 256) - 128).sum())
        raw += bytes([f]) + (d % 256).astype(np.uint8).tobytes()
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
    if mode == "P":
        out += png_chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    out += png_chunk(b"IDAT", zlib.compress(raw, 9))
    out += png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def write_f32(path, arr):
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray) with dtype float32, float16 or int64.
    Layout as the reference writer: header padded with spaces to 8 bytes,
    data sorted by dtype alignment then name."""
    dt = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}
    order = sorted(tensors, key=lambda t: (-t[1].dtype.itemsize, t[0]))
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in order:
        b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


# ---------------------------------------------------------------------------
# tokenizer (CLIP's byte-level BPE, open_clip conventions)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


# CLIP's pattern with \p{L} -> [^\W\d_] and \p{N} -> \d; the reference
# strings are ASCII, where both readings agree.
PAT = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
    re.IGNORECASE,
)


class Tokenizer:
    def __init__(self, merges):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.vocab = vocab
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.decoder = {i: v for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        res = " ".join(word)
        self.cache[token] = res
        return res

    @staticmethod
    def clean(text, unescape=True):
        if unescape:  # open_clip's basic_clean (ftfy is a no-op on ASCII)
            text = html.unescape(html.unescape(text))
        text = text.strip()
        text = re.sub(r"\s+", " ", text).strip()
        return text.lower()

    def pieces(self, text, unescape=True):
        out = []
        for tok in PAT.findall(self.clean(text, unescape)):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            out.extend(self.bpe(tok).split(" "))
        return out

    def encode(self, text, unescape=True):
        return [self.encoder[p] for p in self.pieces(text, unescape)]

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def context(self, ids):
        """open_clip: [sot] ids [eot], cut to 77 with the last forced to eot,
        zero padded. Returns (ids77, eot_index, truncated)."""
        t = [SOT] + ids + [EOT]
        trunc = len(t) > CONTEXT
        if trunc:
            t = t[:CONTEXT]
            t[-1] = EOT
        eot = len(t) - 1
        return t + [0] * (CONTEXT - len(t)), eot, trunc


def read_merges(gz):
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(l.split()) for l in lines[1 : MERGES + 1]]


TOKEN_STRINGS = [
    ("basic", "a photo of a cat"),
    ("basic", "a photo of a dog"),
    ("basic", "a red bicycle leaning on a wall"),
    ("basic", "two horses grazing in a misty field at dawn"),
    ("basic", "an aerial view of a harbour"),
    ("basic", "supercalifragilistic"),
    ("basic", "the quick brown fox jumps over the lazy dog"),
    ("case", "UPPERCASE"),
    ("case", "MiXeD CaSe WoRdS"),
    ("case", "A Photo Of A Cat"),
    ("punctuation", "hello, world!"),
    ("punctuation", "ViT-B/32"),
    ("punctuation", "what?!... really??"),
    ("punctuation", "snake_case_name and kebab-case-name"),
    ("punctuation", "(parentheses) [brackets] {braces}"),
    ("punctuation", "e-mail: someone@example.com"),
    ("punctuation", "100% sure; 50/50 chance"),
    ("numbers", "2024"),
    ("numbers", "3.14159"),
    ("numbers", "room 101 on floor 7"),
    ("numbers", "1,000,000 stars"),
    ("numbers", "x2 y3z4"),
    ("contractions", "it's"),
    ("contractions", "don't stop"),
    ("contractions", "we're here and they've gone"),
    ("contractions", "I'm sure you'll see what he'd do"),
    ("contractions", "IT'S LOUD"),
    ("contractions", "the dog's ball"),
    ("contractions", "rock 'n' roll"),
    ("empty_whitespace", ""),
    ("empty_whitespace", "   "),
    ("empty_whitespace", "\t\n"),
    ("empty_whitespace", "  leading and trailing  "),
    ("empty_whitespace", "many    inner\t\tspaces\nand lines"),
    ("html_entities", "fish &amp; chips"),
    ("html_entities", "&lt;b&gt;bold&lt;/b&gt;"),
    ("html_entities", "double &amp;amp; escaped"),
    ("html_entities", "&quot;quoted&quot;"),
    ("html_entities", "caf&#233;"),
    ("printable", "".join(chr(c) for c in range(33, 127))),
    ("printable", "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./"),
    ("long", " ".join(["word"] * 100)),
    ("long", "a " * 74 + "end"),
    ("long", "a " * 75 + "end"),
    ("long", "a " * 76 + "end"),
    ("long", "Many small boats are moored along the quay of an old fishing town while gulls circle above the "
     "market stalls, where traders sell crabs, mussels, herring and smoked eel to tourists who stroll past "
     "painted houses, narrow alleys and a lighthouse standing at the end of the long stone pier in the evening light."),
]

PROMPTS = [0, 1, 2, 7, 10, 22, 29, 11]  # string indices used for the logits
DEBUG_TEXTS = [0, 29, 22, 45, 17, 11]  # the texts whose intermediates are kept

# ---------------------------------------------------------------------------
# images and PIL-exact preprocessing


def bicubic(x):
    a = -0.5
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def coeffs(n_in, n_out):
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 2.0 * fs
    out = []
    for i in range(n_out):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        w = [bicubic((xmin + j - center + 0.5) / fs) for j in range(xmax - xmin)]
        s = sum(w)
        w = [v / s for v in w] if s != 0 else w
        k = [int(-0.5 + v * (1 << 22)) if v < 0 else int(0.5 + v * (1 << 22)) for v in w]
        out.append((xmin, np.array(k, dtype=np.int64)))
    return out


def resize_axis(a, n_out, axis):
    """One PIL resampling pass over axis (0 rows, 1 columns) of a uint8
    array HxWxC, with 22-bit fixed-point weights and a uint8 result."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    src = np.moveaxis(a.astype(np.int64), axis, 0)
    out = np.empty((n_out,) + src.shape[1:], dtype=np.int64)
    for i, (xmin, k) in enumerate(coeffs(n_in, n_out)):
        acc = (1 << 21) + np.tensordot(k, src[xmin : xmin + len(k)], axes=(0, 0))
        out[i] = np.clip(acc >> 22, 0, 255)
    return np.moveaxis(out, 0, axis).astype(np.uint8)


def pil_bicubic(a, w, h):
    return resize_axis(resize_axis(a, w, 1), h, 0)  # horizontal pass first


def premultiply(a):
    rgb, al = a[..., :3].astype(np.int64), a[..., 3:].astype(np.int64)
    t = rgb * al + 128
    return np.concatenate([((t >> 8) + t) >> 8, al], axis=2).astype(np.uint8)


def unpremultiply(a):
    rgb, al = a[..., :3].astype(np.int64), a[..., 3:].astype(np.int64)
    safe = np.where(al == 0, 1, al)
    c = np.where((al == 0) | (al == 255), rgb, np.clip(255 * rgb // safe, 0, 255))
    return np.concatenate([c, al], axis=2).astype(np.uint8)


def target_size(w, h):
    if w <= h:
        return CROP, int(CROP * h / w)
    return int(CROP * w / h), CROP


def to_rgb(a, mode, palette):
    if mode == "L":
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "P":
        return palette[a]
    if mode == "RGBA":
        return a[..., :3]
    return a


def resize_open_clip(a, mode, palette, w, h):
    """open_clip order: resize in the image's own mode, then convert."""
    if (a.shape[1], a.shape[0]) == (w, h):
        return to_rgb(a, mode, palette)
    if mode == "P":  # PIL resizes palette images with nearest on indices
        ys = np.floor((np.arange(h) + 0.5) * a.shape[0] / h).astype(int)
        xs = np.floor((np.arange(w) + 0.5) * a.shape[1] / w).astype(int)
        return palette[a[ys][:, xs]]
    if mode == "RGBA":  # and RGBA ones premultiplied
        return unpremultiply(pil_bicubic(premultiply(a), w, h))[..., :3]
    if mode == "L":
        return to_rgb(pil_bicubic(a[..., None], w, h)[..., 0], "L", None)
    return pil_bicubic(a, w, h)


def resize_hf(a, mode, palette, w, h):
    """HF order: convert to RGB first, then resize."""
    rgb = to_rgb(a, mode, palette)
    if (rgb.shape[1], rgb.shape[0]) == (w, h):
        return rgb
    return pil_bicubic(rgb, w, h)


def crop(a, left, top):
    return np.ascontiguousarray(a[top : top + CROP, left : left + CROP])


def pixels(crop_u8):
    x = crop_u8.astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32)


def make_images(rng):
    """Synthetic pictures: gradients, hard-edged shapes, 1 and 2 px stripes,
    black and white corners and one noise patch (so PNGs stay small)."""

    def base(w, h, seed):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 255 * xx / max(w - 1, 1)
        g = 255 * yy / max(h - 1, 1)
        b = 128 + 100 * np.sin((xx + 2 * yy) / (7 + seed))
        img = np.stack([r, g, b], axis=2)
        cx, cy, rad = w * 0.35, h * 0.55, min(w, h) * 0.22
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < rad**2] = [200, 30 + 20 * seed, 60]
        x0, y0 = int(w * 0.6), int(h * 0.15)
        img[y0 : y0 + max(h // 4, 2), x0 : x0 + max(w // 5, 2)] = [20, 90, 220 - 10 * seed]
        img[: h // 3, w // 10 : w // 10 + max(w // 8, 2) : 2] = 255  # 1 px stripes
        img[h - h // 4 :, w // 2 : w // 2 + max(w // 6, 4)][:, (np.arange(max(w // 6, 4)) // 2) % 2 == 0] = 0
        img[:3, :3] = 0
        img[-3:, -3:] = 255
        ph, pw = max(h // 8, 2), max(w // 8, 2)
        img[h // 2 : h // 2 + ph, w - pw - 1 : w - 1] = rng.integers(0, 256, size=(ph, pw, 3))
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    imgs = []
    for i, (name, w, h, mode) in enumerate([
        ("landscape_400x300", 400, 300, "RGB"),
        ("portrait_300x500", 300, 500, "RGB"),
        ("square_224x224", 224, 224, "RGB"),
        ("tiny_97x61", 97, 61, "RGB"),
        ("gray_320x240", 320, 240, "L"),
        ("rgba_200x150", 200, 150, "RGBA"),
        ("palette_150x100", 150, 100, "P"),
        ("oddcrop_260x256", 260, 256, "RGB"),
        ("wide_600x40", 600, 40, "RGB"),
    ]):
        rgb = base(w, h, i)
        palette = None
        if mode == "L":
            a = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
        elif mode == "RGBA":
            yy, xx = np.mgrid[0:h, 0:w]
            al = np.clip(255 * xx / (w - 1) + 60 * np.sin(yy / 5.0), 0, 255).astype(np.uint8)
            al[: h // 5] = 255
            al[-h // 6 :, : w // 4] = 0
            a = np.concatenate([rgb, al[..., None]], axis=2)
        elif mode == "P":
            palette = rng.integers(0, 256, size=(16, 3)).astype(np.uint8)
            yy, xx = np.mgrid[0:h, 0:w]
            a = ((xx // 9 + yy // 7 + (xx * yy) // 200) % 16).astype(np.uint8)
        else:
            a = rgb
        imgs.append((name, mode, a, palette))
    return imgs


# ---------------------------------------------------------------------------
# the model: a plain-torch CLIP (pre-LN transformer, ViT image tower)


def layer_norm(x, p, eps=1e-5):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], p["w"], p["b"], eps)


def act(x, quick):
    return x * torch.sigmoid(1.702 * x) if quick else torch.nn.functional.gelu(x)


def attention(x, p, heads, causal):
    n, w = x.shape
    hd = w // heads
    q = (x @ p["q_w"].T + p["q_b"]).view(n, heads, hd).transpose(0, 1)
    k = (x @ p["k_w"].T + p["k_b"]).view(n, heads, hd).transpose(0, 1)
    v = (x @ p["v_w"].T + p["v_b"]).view(n, heads, hd).transpose(0, 1)
    s = q @ k.transpose(1, 2) / math.sqrt(hd)
    if causal:
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(n, w)
    return o @ p["o_w"].T + p["o_b"]


def block(x, p, heads, causal, quick):
    x = x + attention(layer_norm(x, p["ln1"]), p, heads, causal)
    h = act(layer_norm(x, p["ln2"]) @ p["fc1_w"].T + p["fc1_b"], quick)
    return x + h @ p["fc2_w"].T + p["fc2_b"]


class CLIP:
    def __init__(self, cfg, seed):
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        n = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)

        def lin(o, i):
            return n(o, i) / math.sqrt(i), 0.1 * n(o)

        def ln(w):
            return {"w": 1 + 0.1 * n(w), "b": 0.1 * n(w)}

        def layers(w, count, mlp):
            out = []
            for _ in range(count):
                p = {"ln1": ln(w), "ln2": ln(w)}
                for k in "qkv":
                    p[k + "_w"], p[k + "_b"] = lin(w, w)
                p["o_w"], p["o_b"] = lin(w, w)
                p["fc1_w"], p["fc1_b"] = lin(mlp, w)
                p["fc2_w"], p["fc2_b"] = lin(w, mlp)
                out.append(p)
            return out

        v, t, e = cfg["vision"], cfg["text"], cfg["embed"]
        grid = (v["image"] // v["patch"]) ** 2
        self.v = {
            "cls": 0.5 * n(v["width"]),
            "conv": n(v["width"], 3, v["patch"], v["patch"]) / math.sqrt(3 * v["patch"] ** 2),
            "pos": 0.5 * n(grid + 1, v["width"]),
            "ln_pre": ln(v["width"]),
            "layers": layers(v["width"], v["layers"], v["mlp"]),
            "ln_post": ln(v["width"]),
            "proj": n(e, v["width"]) / math.sqrt(v["width"]),  # HF Linear form [embed, width]
        }
        self.t = {
            "tok": 0.5 * n(t["vocab"], t["width"]),
            "pos": 0.5 * n(CONTEXT, t["width"]),
            "layers": layers(t["width"], t["layers"], t["mlp"]),
            "ln_final": ln(t["width"]),
            "proj": n(e, t["width"]) / math.sqrt(t["width"]),
        }
        self.logit_scale = torch.tensor(math.log(cfg["logit_scale"]), dtype=torch.float64)

    def cast(self, dtype):
        """Rounds every parameter through dtype (float16 checkpoints) and
        leaves float32 tensors for the forward pass."""

        def go(x):
            if isinstance(x, dict):
                return {k: go(v) for k, v in x.items()}
            if isinstance(x, list):
                return [go(v) for v in x]
            return x.to(dtype).to(torch.float32)

        self.v, self.t = go(self.v), go(self.t)
        self.logit_scale = self.logit_scale.to(dtype).to(torch.float32)

    def image(self, px, trace=None):
        v = self.cfg["vision"]
        x = torch.nn.functional.conv2d(px[None], self.v["conv"], stride=v["patch"])[0]
        x = x.flatten(1).T  # patches row-major over the grid
        x = torch.cat([self.v["cls"][None], x]) + self.v["pos"]
        trace and trace("embeddings", x)
        x = layer_norm(x, self.v["ln_pre"])
        trace and trace("pre_layrnorm", x)
        for i, p in enumerate(self.v["layers"]):
            x = block(x, p, v["heads"], False, self.cfg["quick_gelu"])
            trace and trace("layer%d" % i, x)
        pooled = layer_norm(x[0], self.v["ln_post"])
        return pooled, pooled @ self.v["proj"].T

    def text(self, ids, eot, trace=None):
        t = self.cfg["text"]
        x = self.t["tok"][torch.tensor(ids)] + self.t["pos"]
        trace and trace("embeddings", x)
        for i, p in enumerate(self.t["layers"]):
            x = block(x, p, t["heads"], True, self.cfg["quick_gelu"])
            trace and trace("layer%d" % i, x)
        x = layer_norm(x, self.t["ln_final"])
        trace and trace("final_layer_norm", x)
        return x[eot], x[eot] @ self.t["proj"].T

    # checkpoint layouts ---------------------------------------------------

    def hf_state(self):
        s = collections.OrderedDict()
        for tower, pre, p in (("text", "text_model.", self.t), ("vision", "vision_model.", self.v)):
            for i, l in enumerate(p["layers"]):
                b = "%sencoder.layers.%d." % (pre, i)
                for k in "qkv":
                    s[b + "self_attn.%s_proj.weight" % k] = l[k + "_w"]
                    s[b + "self_attn.%s_proj.bias" % k] = l[k + "_b"]
                s[b + "self_attn.out_proj.weight"], s[b + "self_attn.out_proj.bias"] = l["o_w"], l["o_b"]
                s[b + "layer_norm1.weight"], s[b + "layer_norm1.bias"] = l["ln1"]["w"], l["ln1"]["b"]
                s[b + "layer_norm2.weight"], s[b + "layer_norm2.bias"] = l["ln2"]["w"], l["ln2"]["b"]
                s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = l["fc1_w"], l["fc1_b"]
                s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = l["fc2_w"], l["fc2_b"]
        s["text_model.embeddings.token_embedding.weight"] = self.t["tok"]
        s["text_model.embeddings.position_embedding.weight"] = self.t["pos"]
        s["text_model.final_layer_norm.weight"] = self.t["ln_final"]["w"]
        s["text_model.final_layer_norm.bias"] = self.t["ln_final"]["b"]
        s["text_projection.weight"] = self.t["proj"]
        s["vision_model.embeddings.class_embedding"] = self.v["cls"]
        s["vision_model.embeddings.patch_embedding.weight"] = self.v["conv"]
        s["vision_model.embeddings.position_embedding.weight"] = self.v["pos"]
        s["vision_model.pre_layrnorm.weight"] = self.v["ln_pre"]["w"]
        s["vision_model.pre_layrnorm.bias"] = self.v["ln_pre"]["b"]
        s["vision_model.post_layernorm.weight"] = self.v["ln_post"]["w"]
        s["vision_model.post_layernorm.bias"] = self.v["ln_post"]["b"]
        s["visual_projection.weight"] = self.v["proj"]
        s["logit_scale"] = self.logit_scale
        return s

    def open_clip_state(self):
        s = collections.OrderedDict()
        for pre, p in (("", self.t), ("visual.", self.v)):
            for i, l in enumerate(p["layers"]):
                b = "%stransformer.resblocks.%d." % (pre, i)
                s[b + "attn.in_proj_weight"] = torch.cat([l["q_w"], l["k_w"], l["v_w"]])
                s[b + "attn.in_proj_bias"] = torch.cat([l["q_b"], l["k_b"], l["v_b"]])
                s[b + "attn.out_proj.weight"], s[b + "attn.out_proj.bias"] = l["o_w"], l["o_b"]
                s[b + "ln_1.weight"], s[b + "ln_1.bias"] = l["ln1"]["w"], l["ln1"]["b"]
                s[b + "ln_2.weight"], s[b + "ln_2.bias"] = l["ln2"]["w"], l["ln2"]["b"]
                s[b + "mlp.c_fc.weight"], s[b + "mlp.c_fc.bias"] = l["fc1_w"], l["fc1_b"]
                s[b + "mlp.c_proj.weight"], s[b + "mlp.c_proj.bias"] = l["fc2_w"], l["fc2_b"]
        s["token_embedding.weight"] = self.t["tok"]
        s["positional_embedding"] = self.t["pos"]
        s["ln_final.weight"], s["ln_final.bias"] = self.t["ln_final"]["w"], self.t["ln_final"]["b"]
        s["text_projection"] = self.t["proj"].T.contiguous()  # [width, embed], y = x @ P
        s["visual.class_embedding"] = self.v["cls"]
        s["visual.conv1.weight"] = self.v["conv"]
        s["visual.positional_embedding"] = self.v["pos"]
        s["visual.ln_pre.weight"], s["visual.ln_pre.bias"] = self.v["ln_pre"]["w"], self.v["ln_pre"]["b"]
        s["visual.ln_post.weight"], s["visual.ln_post.bias"] = self.v["ln_post"]["w"], self.v["ln_post"]["b"]
        s["visual.proj"] = self.v["proj"].T.contiguous()
        s["logit_scale"] = self.logit_scale
        return s


MODELS = {
    # OpenAI style: quick_gelu, legacy config values, float32, both layouts.
    "tiny-clip-quickgelu": {
        "seed": 20240611, "quick_gelu": True, "logit_scale": 40.0, "dtype": torch.float32, "legacy": True,
        "vision": {"image": 224, "patch": 32, "width": 16, "layers": 2, "heads": 4, "mlp": 64},
        "text": {"vocab": 49408, "width": 4, "layers": 2, "heads": 2, "mlp": 16},
        "embed": 12,
    },
    # LAION style: exact gelu, current config values, stored as float16.
    "tiny-clip-gelu": {
        "seed": 7081945, "quick_gelu": False, "logit_scale": 70.0, "dtype": torch.float16, "legacy": False,
        "vision": {"image": 224, "patch": 32, "width": 16, "layers": 2, "heads": 2, "mlp": 48},
        "text": {"vocab": 49408, "width": 4, "layers": 3, "heads": 2, "mlp": 16},
        "embed": 12,
    },
}


def hf_config(cfg):
    v, t = cfg["vision"], cfg["text"]
    a = "quick_gelu" if cfg["quick_gelu"] else "gelu"
    ids = (0, 2, 1) if cfg["legacy"] else (SOT, EOT, 1)  # legacy openai configs say bos 0 / eos 2
    return {
        "architectures": ["CLIPModel"],
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": cfg["embed"],
        "text_config": {
            "bos_token_id": ids[0], "eos_token_id": ids[1], "pad_token_id": ids[2],
            "hidden_act": a, "hidden_size": t["width"], "intermediate_size": t["mlp"],
            "layer_norm_eps": 1e-05, "max_position_embeddings": CONTEXT, "model_type": "clip_text_model",
            "num_attention_heads": t["heads"], "num_hidden_layers": t["layers"],
            "projection_dim": cfg["embed"], "vocab_size": t["vocab"],
        },
        "torch_dtype": "float32" if cfg["dtype"] == torch.float32 else "float16",
        "vision_config": {
            "hidden_act": a, "hidden_size": v["width"], "image_size": v["image"],
            "intermediate_size": v["mlp"], "layer_norm_eps": 1e-05, "model_type": "clip_vision_model",
            "num_attention_heads": v["heads"], "num_channels": 3, "num_hidden_layers": v["layers"],
            "patch_size": v["patch"], "projection_dim": cfg["embed"],
        },
    }


def open_clip_config(cfg):
    v, t = cfg["vision"], cfg["text"]
    return {
        "model_cfg": {
            "embed_dim": cfg["embed"],
            "quick_gelu": cfg["quick_gelu"],
            "vision_cfg": {"image_size": v["image"], "layers": v["layers"], "width": v["width"],
                           "head_width": v["width"] // v["heads"], "patch_size": v["patch"],
                           "mlp_ratio": v["mlp"] / v["width"]},
            "text_cfg": {"context_length": CONTEXT, "vocab_size": t["vocab"], "width": t["width"],
                         "heads": t["heads"], "layers": t["layers"], "mlp_ratio": t["mlp"] / t["width"]},
        },
        "preprocess_cfg": {"size": 224, "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711],
                           "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0},
    }


def preprocessor_config(legacy):
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    if legacy:
        return {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": mean, "image_std": std,
                "resample": 3, "size": 224}
    return {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": mean,
            "image_processor_type": "CLIPImageProcessor", "image_std": std, "resample": 3,
            "rescale_factor": 1 / 255, "size": {"shortest_edge": 224}}


def tokenizer_configs(pad):
    tc = {"bos_token": "<|startoftext|>", "do_lower_case": True, "eos_token": "<|endoftext|>",
          "errors": "replace", "model_max_length": CONTEXT, "pad_token": pad,
          "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}
    sm = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
          "unk_token": "<|endoftext|>"}
    return tc, sm


def np_state(state, dtype):
    return [(k, v.to(dtype).numpy()) for k, v in state.items()]


def main():
    bpe_gz, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    rng = np.random.default_rng(1357)
    merges = read_merges(bpe_gz)
    tok = Tokenizer(merges)
    ref = os.path.join(out, "reference")
    for d in ("images", "reference/preprocess"):
        os.makedirs(os.path.join(out, d), exist_ok=True)

    # tokenizer reference ---------------------------------------------------
    strings, ids77, eots = [], [], []
    for group, text in TOKEN_STRINGS:
        ids = tok.encode(text)
        full, eot, trunc = tok.context(ids)
        hf, _, _ = tok.context(tok.encode(text, unescape=False))
        hf = hf[: hf.index(EOT) + 1]  # HF: no unescaping, no padding
        strings.append({
            "group": group, "text": text, "cleaned": tok.clean(text), "bpe_tokens": tok.pieces(text),
            "ids_no_special": ids, "ids": full, "eot_index": eot, "truncated": trunc,
            "decoded": tok.decode(ids), "hf_input_ids": hf, "hf_matches_open_clip": full[: len(hf)] == hf,
        })
        ids77.append(full)
        eots.append(eot)
    write_json(os.path.join(ref, "tokens.json"), {
        "context_length": CONTEXT, "sot_id": SOT, "eot_id": EOT, "pad_id_open_clip": 0,
        "n": len(strings), "strings": strings})

    # images and preprocessing ---------------------------------------------------
    index = {"generator": "scripts/gen-testdata/clipref.py (plain torch %s, numpy %s)" % (torch.__version__, np.__version__),
             "models": list(MODELS), "images": [], "image_order": [], "images_hf_preprocessing_differs": [],
             "prompt_string_indices": PROMPTS, "prompts": [TOKEN_STRINGS[i][1] for i in PROMPTS],
             "debug_images": ["landscape_400x300.png", "tiny_97x61.png", "gray_320x240.png"],
             "debug_texts": [{"k": k, "text": TOKEN_STRINGS[i][1], "string_index": i} for k, i in enumerate(DEBUG_TEXTS)],
             "arrays": {}}
    arrays = index["arrays"]
    oc_px, hf_px, debug_px = [], [], {}
    for name, mode, a, palette in make_images(rng):
        rel = "images/%s.png" % name
        write_png(os.path.join(out, rel), a, mode, palette)
        h, w = a.shape[:2]
        rw, rh = target_size(w, h)
        oc_left, oc_top = round((rw - CROP) / 2), round((rh - CROP) / 2)  # Python round: half to even
        hf_left, hf_top = (rw - CROP) // 2, (rh - CROP) // 2
        oc = crop(resize_open_clip(a, mode, palette, rw, rh), oc_left, oc_top)
        hf = crop(resize_hf(a, mode, palette, rw, rh), hf_left, hf_top)
        entry = {"file": rel, "mode": mode, "width": w, "height": h, "format": "PNG", "resized_wh": [rw, rh],
                 "crop_left_top_open_clip": [oc_left, oc_top], "crop_left_top_hf": [hf_left, hf_top],
                 "crop_open_clip": "preprocess/%s.open_clip.crop.png" % name,
                 "hf_equals_open_clip": bool((oc == hf).all())}
        write_png(os.path.join(ref, entry["crop_open_clip"]), oc, "RGB")
        if not entry["hf_equals_open_clip"]:
            entry["crop_hf"] = "preprocess/%s.hf.crop.png" % name
            write_png(os.path.join(ref, entry["crop_hf"]), hf, "RGB")
            index["images_hf_preprocessing_differs"].append(rel)
            hf_px.append(torch.from_numpy(pixels(hf)))
        if name == "landscape_400x300":
            entry["pixels_open_clip"] = "preprocess/%s.pixels.bin" % name
            write_f32(os.path.join(ref, entry["pixels_open_clip"]), pixels(oc))
            arrays[entry["pixels_open_clip"]] = {"dtype": "float32", "shape": [3, CROP, CROP]}
        index["images"].append(entry)
        index["image_order"].append(rel)
        oc_px.append(torch.from_numpy(pixels(oc)))
        debug_px[name + ".png"] = oc_px[-1]

    # models ---------------------------------------------------------------
    for mname, cfg in MODELS.items():
        m = CLIP(cfg, cfg["seed"])
        m.cast(cfg["dtype"])
        d = os.path.join(out, mname)
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, "config.json"), hf_config(cfg))
        write_json(os.path.join(d, "open_clip_config.json"), open_clip_config(cfg))
        write_json(os.path.join(d, "preprocessor_config.json"), preprocessor_config(cfg["legacy"]))
        tc, sm = tokenizer_configs("<|endoftext|>" if cfg["legacy"] else "!")
        write_json(os.path.join(d, "tokenizer_config.json"), tc)
        write_json(os.path.join(d, "special_tokens_map.json"), sm)
        hf_state = m.hf_state()
        oc_state = m.open_clip_state()
        hf_np = np_state(hf_state, cfg["dtype"])
        if cfg["legacy"]:
            # Old hub checkpoints carry int64 position_ids buffers; loaders ignore them.
            hf_np.append(("text_model.embeddings.position_ids", np.arange(CONTEXT, dtype=np.int64)[None]))
            grid = (cfg["vision"]["image"] // cfg["vision"]["patch"]) ** 2 + 1
            hf_np.append(("vision_model.embeddings.position_ids", np.arange(grid, dtype=np.int64)[None]))
            write_safetensors(os.path.join(d, "model.safetensors"), hf_np)
            write_safetensors(os.path.join(d, "open_clip_model.safetensors"), np_state(oc_state, cfg["dtype"]))
            # The same weights as a PyTorch checkpoint (zip of pickles), open_clip layout.
            torch.save(collections.OrderedDict((k, v.to(cfg["dtype"]).clone()) for k, v in oc_state.items()),
                       os.path.join(d, "open_clip_pytorch_model.bin"))
            # HF tokenizer files, derived from the merges as open_clip builds its vocabulary.
            write_json(os.path.join(d, "vocab.json"), {v: i for i, v in enumerate(tok.vocab)}, compact=True)
            with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "".join("%s %s\n" % mm for mm in merges))
        else:
            write_safetensors(os.path.join(d, "model.safetensors"), hf_np)
            # As model.state_dict() returns it: an OrderedDict carrying a
            # _metadata attribute (pickled as BUILD state), and the two
            # embedding tables sharing one storage at different offsets.
            sd = collections.OrderedDict((k, v.to(cfg["dtype"]).clone()) for k, v in hf_state.items())
            sd._metadata = collections.OrderedDict([("", {"version": 1}), ("text_model", {"version": 1})])
            pos, tok_ = "text_model.embeddings.position_embedding.weight", "text_model.embeddings.token_embedding.weight"
            both = torch.cat([sd[pos].flatten(), sd[tok_].flatten()])
            sd[pos] = both[: sd[pos].numel()].view(sd[pos].shape)
            sd[tok_] = both[sd[pos].numel():].view(sd[tok_].shape)
            torch.save(sd, os.path.join(d, "pytorch_model.bin"))

        r = os.path.join(ref, mname)
        os.makedirs(os.path.join(r, "debug"), exist_ok=True)

        def put(rel, arr, note=None):
            arr = arr.detach().numpy().astype(np.float32)
            write_f32(os.path.join(ref, rel), arr)
            arrays[rel] = {"dtype": "float32", "shape": list(arr.shape)}
            if note:
                arrays[rel]["note"] = note

        with torch.no_grad():
            img = [m.image(p) for p in oc_px]
            put(mname + "/image_embeds.bin", torch.stack([e for _, e in img]),
                "[n_images, projection_dim]; projected, not normalized; open_clip preprocessing")
            put(mname + "/image_pooled.bin", torch.stack([p for p, _ in img]),
                "[n_images, vision_hidden]; post_layernorm(CLS) before the projection")
            put(mname + "/image_embeds_hf_preprocessing.bin", torch.stack([m.image(p)[1] for p in hf_px]),
                "[len(images_hf_preprocessing_differs), projection_dim]; HF CLIPImageProcessor pixels")
            txt = [m.text(i, e) for i, e in zip(ids77, eots)]
            temb = torch.stack([e for _, e in txt])
            put(mname + "/text_embeds.bin", temb, "[n_strings, projection_dim]; tokens.json ids (open_clip)")
            put(mname + "/text_pooled.bin", torch.stack([p for p, _ in txt]),
                "[n_strings, text_hidden]; final_layer_norm at the eot position")
            ie = torch.stack([e for _, e in img])
            ie = ie / ie.norm(dim=1, keepdim=True)
            te = temb[PROMPTS] / temb[PROMPTS].norm(dim=1, keepdim=True)
            put(mname + "/logits_per_image.bin", m.logit_scale.exp() * ie @ te.T,
                "[n_images, n_prompts] = exp(logit_scale) * normalize(image) @ normalize(text[prompts]).T")
            for name in index["debug_images"]:
                stem = name[:-4]
                m.image(debug_px[name], lambda st, x: st in ("embeddings", "pre_layrnorm", "layer0") and
                        put("%s/debug/image_%s.vision_%s.bin" % (mname, stem, st), x))
            for k, i in enumerate(DEBUG_TEXTS):
                m.text(ids77[i], eots[i], lambda st, x: st in ("embeddings", "layer0", "final_layer_norm") and
                       put("%s/debug/text_%d.text_%s.bin" % (mname, k, st), x))
    write_json(os.path.join(ref, "index.json"), index)


if __name__ == "__main__":
    main()
