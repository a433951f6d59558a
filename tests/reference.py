#!/usr/bin/python3
"""Independent float64 numpy GPT-2 forward pass, read straight from a Hugging Face directory.

Follows the standard GPT-2 forward pass (the one run.c implements). Shares no code with
export_gpt2.py or run.c: it has its own safetensors reader and works on the HF layout
(Conv1D weights [in, out], used as x @ W).

    params = load(dir)
    params = load_bin(model.bin) the same structure from an exported model.bin (version 1 to 3), f16
                                 and int8 weights dequantized: the weights ./run computes with, so
                                 its f16 and int8 output can be held to the forward pass below
    logits(params, ids)          -> [T, V] float64, row t = distribution of token t+1
    greedy(params, prompt, n)    -> generated ids (argmax, ties -> lowest id; stops at n_ctx and, as
                                    ./run does without --ignore-eos, at <|endoftext|>, which it leaves out)
    greedy(params, prompt, n, keep=K) -> the same past n_ctx, with ./run --context-shift --keep K's window
                                    rule (shift() below)
    ppl(params, ids)             -> (tokens, mean_nll, perplexity) with the --ppl chunking rule

Each takes kv="f32" (default), "f16" or "int8": the keys and values are rounded as ./run --kv-type
stores them (IEEE half; or int8 in blocks of 32 along the row, scale = max|x| / 127 as a half, values
rounded to nearest), then used in float64 like everything else.

int8 weights (params from load_bin of an int8 model.bin, p["weight_type"] == "int8"): ./run multiplies
them by int8 inputs (Q8_0 x Q8_0), so every matrix multiply's INPUT row is rounded first, the same way
as an int8 cache row (round_kv's int8 branch: x as float32, per block of 32 along the row scale =
max|x| / float32(127) rounded to a half, q = rint(x / scale) clipped to +-127, 0 where scale == 0), and
q * scale is multiplied by the dequantized weights in float64. The rounded inputs: ln_1's output before
c_attn, the attention output before attn.c_proj, ln_2's output before c_fc, GELU's output before
mlp.c_proj and ln_f's output before the LM head (wte). ./run's float32 activations differ from these by
float32 rounding, so where x / scale lands within that of a .5 the two round an input to neighbouring
steps: its int8 logits are held to these within a measured bound (tests/test_engine.py, INT8_RTOL), not
float32 noise. f32 and f16 weights multiply unrounded inputs.
"""

import json
import math
import os

import numpy as np

EOT = 50256


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = buf[base + b:base + end]
        shape = tuple(e["shape"])
        dt = e["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            continue  # mask buffers (U8/BOOL) are not needed
        out[name] = a.astype(np.float64).reshape(shape)
    return out


def load(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    raw = read_safetensors(os.path.join(d, "model.safetensors"))
    w = {}
    for name, a in raw.items():
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        w[name] = a
    return {"n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"],
            "n_ctx": cfg.get("n_positions", cfg.get("n_ctx")), "vocab_size": cfg["vocab_size"],
            "eps": cfg.get("layer_norm_epsilon", 1e-5), "w": w}


def load_bin(path):
    """Parameters from a model.bin in load()'s structure (plus "weight_type": "f32", "f16" or "int8"):
    matrices back in the Hugging Face (in, out) layout, every value exactly as stored (eps as the float32
    in the header), f16 weights widened and int8 ones dequantized (q * d per block of 32, exact in
    float64). Reads the format as README.md describes it, not through export_gpt2.py."""
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:4] == b"GPT2", "not a model.bin"
    version, L, H, C, P, V = (int(x) for x in np.frombuffer(buf, "<u4", 6, 4))
    assert version in (1, 2, 3), version
    weight_type = ("f32", "f16", "int8")[0 if version == 1 else int(np.frombuffer(buf, "<u4", 1, 32)[0])]
    pos = 256

    def take(dtype, count):  # the next array, which starts at a multiple of 64
        nonlocal pos
        pos += -pos % 64
        a = np.frombuffer(buf, dtype, count, pos)
        pos += a.nbytes
        return a

    def floats(*shape):
        return take("<f4", math.prod(shape)).astype(np.float64).reshape(shape)

    def matrix(rows, cols):  # stored (out, in) = (rows, cols)
        if weight_type == "int8":  # version 3: groups of 16 rows (zero rows pad the last), interleaved
            assert version == 3, "a version 2 int8 file: re-export it"
            padded, nb = -(-rows // 16) * 16, cols // 32
            q = take("i1", padded * cols).reshape(-1, nb, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(padded, cols)
            d = take("<f2", padded * nb).reshape(-1, nb, 16).transpose(0, 2, 1).reshape(padded, nb)
            m = (q.reshape(padded, nb, 32).astype(np.float64) * d.astype(np.float64)[:, :, None])[:rows]
        else:
            m = take("<f4" if weight_type == "f32" else "<f2", rows * cols)
        return m.astype(np.float64).reshape(rows, cols)

    w = {"wte.weight": matrix(V, C), "wpe.weight": floats(P, C)}
    for i in range(L):
        h = f"h.{i}."
        w[h + "ln_1.weight"], w[h + "ln_1.bias"] = floats(C), floats(C)
        w[h + "attn.c_attn.weight"], w[h + "attn.c_attn.bias"] = matrix(3 * C, C).T, floats(3 * C)
        w[h + "attn.c_proj.weight"], w[h + "attn.c_proj.bias"] = matrix(C, C).T, floats(C)
        w[h + "ln_2.weight"], w[h + "ln_2.bias"] = floats(C), floats(C)
        w[h + "mlp.c_fc.weight"], w[h + "mlp.c_fc.bias"] = matrix(4 * C, C).T, floats(4 * C)
        w[h + "mlp.c_proj.weight"], w[h + "mlp.c_proj.bias"] = matrix(C, 4 * C).T, floats(C)
    w["ln_f.weight"], w["ln_f.bias"] = floats(C), floats(C)
    assert pos == len(buf), (pos, len(buf))
    eps = float(np.frombuffer(buf, "<f4", 1, 28)[0])
    return {"n_layer": L, "n_head": H, "n_embd": C, "n_ctx": P, "vocab_size": V, "eps": eps, "w": w,
            "weight_type": weight_type}


def layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # population variance
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu_new(u):
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def round_kv(x, kv):
    """x [T, C] as a KV cache of type kv holds it (the rounding ./run applies when it stores a row)."""
    if kv == "f16":
        return x.astype(np.float32).astype(np.float16).astype(np.float64)
    assert kv == "int8", kv
    b = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    scale = (np.abs(b).max(-1, keepdims=True) / np.float32(127)).astype(np.float16).astype(np.float64)
    q = np.clip(np.rint(np.divide(b, scale, out=np.zeros(b.shape), where=scale > 0)), -127, 127)
    return (q * scale).reshape(x.shape)


def matmul_input(p, x):
    """x [T, n] as ./run multiplies it by p's weights: int8 weights take the input rounded to int8 blocks
    of 32 (round_kv's int8 rounding); f32 and f16 weights take it as it is."""
    return round_kv(x, "int8") if p.get("weight_type") == "int8" else x


def hidden(p, ids, kv="f32", keys_values=None):
    """Final LayerNorm output [T, C] for a sequence of at most n_ctx tokens. keys_values: a list that gets
    each layer's (k, v), each [T, C], as the cache holds them."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    assert 0 < T <= p["n_ctx"], T
    w, C, H, eps = p["w"], p["n_embd"], p["n_head"], p["eps"]
    hs = C // H
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    for i in range(p["n_layer"]):
        g = lambda n: w[f"h.{i}.{n}"]  # noqa: E731
        h = layernorm(x, g("ln_1.weight"), g("ln_1.bias"), eps)
        qkv = matmul_input(p, h) @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        if kv != "f32":
            k, v = round_kv(k, kv), round_kv(v, kv)
        if keys_values is not None:
            keys_values.append((k, v))
        y = np.empty((T, C))
        for j in range(H):
            s = slice(j * hs, (j + 1) * hs)
            sc = q[:, s] @ k[:, s].T / math.sqrt(hs)
            sc[future] = -np.inf
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            y[:, s] = sc @ v[:, s]
        x = x + matmul_input(p, y) @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        h = layernorm(x, g("ln_2.weight"), g("ln_2.bias"), eps)
        u = gelu_new(matmul_input(p, h) @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias"))
        x = x + matmul_input(p, u) @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    return layernorm(x, w["ln_f.weight"], w["ln_f.bias"], eps)


def logits(p, ids, kv="f32"):
    return matmul_input(p, hidden(p, ids, kv)) @ p["w"]["wte.weight"].T


def last_logits(p, ids, kv="f32"):
    return (matmul_input(p, hidden(p, ids, kv)[-1:]) @ p["w"]["wte.weight"].T)[0]


def shift(window, keep):
    """The context-shift rule (llama.cpp's): drop the (len - keep) // 2 tokens after the first keep."""
    drop = (len(window) - keep) // 2
    return window[:keep] + window[keep + drop:]


def windows(prompt, ids, n_ctx, keep=None):
    """The token window each step of a generation saw: step i chose ids[i] from windows(...)[i]. With keep
    (context shift) a full window is shifted before the next token is appended."""
    seq, out = list(prompt), []
    for t in ids:
        out.append(list(seq))
        if keep is not None and len(seq) == n_ctx:
            seq = shift(seq, keep)
        seq.append(t)
    return out


def greedy_steps(p, prompt, n, stop_at_eot=True, kv="f32", keep=None):
    """(generated ids, [k, V] logits each was chosen from); stops when the sequence fills n_ctx (unless
    keep is given: then the window shifts), and with stop_at_eot when the choice is <|endoftext|> (EOT):
    that token and its row are not returned."""
    seq, out, rows = list(prompt), [], []
    while len(out) < n and (keep is not None or len(seq) < p["n_ctx"]):
        lg = last_logits(p, seq, kv)
        t = int(np.argmax(lg))  # first maximum = lowest id on ties
        if stop_at_eot and t == EOT:
            break
        rows.append(lg)
        out.append(t)
        if keep is not None and len(seq) == p["n_ctx"]:
            seq = shift(seq, keep)
        seq.append(t)
    return out, np.array(rows).reshape(len(rows), p["vocab_size"])


def greedy(p, prompt, n, stop_at_eot=True, kv="f32", keep=None):
    return greedy_steps(p, prompt, n, stop_at_eot, kv, keep)[0]


def ppl(p, ids, kv="f32"):
    """s = [EOT] + ids; chunks s[k*(n_ctx-1) : k*(n_ctx-1)+n_ctx], each scoring its len-1
    next-token predictions, so every text token is predicted exactly once."""
    s = [EOT] + list(ids)
    n_ctx = p["n_ctx"]
    assert n_ctx >= 2
    total, count, start = 0.0, 0, 0
    while start < len(s) - 1:
        chunk = s[start:start + n_ctx]
        lg = logits(p, chunk[:-1], kv)
        m = lg.max(-1, keepdims=True)
        logp = lg - m - np.log(np.exp(lg - m).sum(-1, keepdims=True))
        total -= logp[np.arange(len(chunk) - 1), chunk[1:]].sum()
        count += len(chunk) - 1
        start += n_ctx - 1
    assert count == len(ids)
    mean = total / count
    return count, mean, math.exp(mean)
