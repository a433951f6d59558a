#!/usr/bin/python3
"""A float32 numpy GPT-2 with its own KV cache, greedy: the "numpy + BLAS" baseline for bench.py.

    /usr/bin/python3 bench/baseline_numpy.py MODEL.bin --prompt-ids "1 2 3" -n 64

Reads a float32 model.bin (format in README.md) through np.memmap, so nothing is copied. Same algorithm
as run.c: prefill the prompt in one pass, then one token at a time against the cache; greedy argmax (ties
-> lowest id). Prints one JSON line: prefill and decode seconds and tok/s, the generated ids, and which BLAS
library numpy actually loaded (read from /proc/self/maps).
"""
import argparse
import json
import sys
import time

import numpy as np


def load(path):
    hdr = np.fromfile(path, dtype="<u4", count=9)
    if hdr[0] != 0x32545047 or hdr[1] not in (1, 2, 3) or (hdr[1] >= 2 and hdr[8] != 0):
        sys.exit(f"error: {path} is not a model.bin with float32 weights (version 1, or 2 or 3 with weight_type 0)")
    L, NH, C, P, V = (int(x) for x in hdr[2:7])
    eps = float(np.fromfile(path, dtype="<f4", count=8)[7])
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    off = 256

    def take(*shape):
        nonlocal off
        off = (off + 63) // 64 * 64
        n = int(np.prod(shape))
        a = np.ndarray(shape, dtype="<f4", buffer=mm, offset=off)
        off += 4 * n
        return a

    w = {"wte": take(V, C), "wpe": take(P, C), "layers": []}
    for _ in range(L):
        w["layers"].append(dict(ln1_w=take(C), ln1_b=take(C), attn_w=take(3 * C, C), attn_b=take(3 * C),
                                proj_w=take(C, C), proj_b=take(C), ln2_w=take(C), ln2_b=take(C),
                                fc_w=take(4 * C, C), fc_b=take(4 * C), fcp_w=take(C, 4 * C), fcp_b=take(C)))
    w["lnf_w"], w["lnf_b"] = take(C), take(C)
    return (L, NH, C, P, V, eps), w


def layernorm(x, g, b, eps):
    m = x.mean(-1, keepdims=True)
    d = x - m
    v = (d * d).mean(-1, keepdims=True)
    return d / np.sqrt(v + eps) * g + b


def gelu(u):
    return 0.5 * u * (1.0 + np.tanh(np.float32(0.7978845608028654) * (u + np.float32(0.044715) * u * u * u)))


def forward(cfg, w, kc, vc, tokens, pos):
    """tokens at positions pos.. through the model; caches hold 0..pos-1. Returns the last row's logits."""
    L, NH, C, P, V, eps = cfg
    T, hs = len(tokens), C // NH
    x = w["wte"][tokens] + w["wpe"][pos:pos + T]
    mask = np.triu(np.full((T, pos + T), -np.inf, dtype=np.float32), k=pos + 1)
    for l, lw in enumerate(w["layers"]):
        h = layernorm(x, lw["ln1_w"], lw["ln1_b"], eps)
        qkv = h @ lw["attn_w"].T + lw["attn_b"]
        kc[l, pos:pos + T] = qkv[:, C:2 * C]
        vc[l, pos:pos + T] = qkv[:, 2 * C:]
        q = qkv[:, :C].reshape(T, NH, hs).transpose(1, 0, 2)             # (NH, T, hs)
        k = kc[l, :pos + T].reshape(pos + T, NH, hs).transpose(1, 2, 0)  # (NH, hs, S)
        v = vc[l, :pos + T].reshape(pos + T, NH, hs).transpose(1, 0, 2)  # (NH, S, hs)
        s = (q @ k) * np.float32(1.0 / np.sqrt(hs)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        y = (s @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + (y @ lw["proj_w"].T + lw["proj_b"])
        h = layernorm(x, lw["ln2_w"], lw["ln2_b"], eps)
        x = x + (gelu(h @ lw["fc_w"].T + lw["fc_b"]) @ lw["fcp_w"].T + lw["fcp_b"])
    xf = layernorm(x[-1], w["lnf_w"], w["lnf_b"], eps)
    return w["wte"] @ xf


def blas_library():
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() or "mkl" in line.lower()}
        return ", ".join(sorted(libs)) or "unknown"
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("-n", type=int, default=64)
    a = ap.parse_args()
    cfg, w = load(a.model)
    L, NH, C, P, V, eps = cfg
    prompt = [int(t) for t in a.prompt_ids.replace(",", " ").split()]
    n = min(a.n, P - len(prompt))
    kc = np.zeros((L, P, C), dtype=np.float32)
    vc = np.zeros((L, P, C), dtype=np.float32)
    t0 = time.perf_counter()
    logits = forward(cfg, w, kc, vc, np.array(prompt), 0)
    t1 = time.perf_counter()
    ids = []
    for i in range(n):  # like run.c: every generated token goes through the model (n forwards)
        ids.append(int(np.argmax(logits)))
        logits = forward(cfg, w, kc, vc, np.array(ids[-1:]), len(prompt) + i)
    t2 = time.perf_counter()
    print(json.dumps({"prefill_tokens": len(prompt), "prefill_s": t1 - t0, "prefill_tok_s": len(prompt) / (t1 - t0),
                      "decode_tokens": n, "decode_s": t2 - t1, "decode_tok_s": n / (t2 - t1) if n else 0.0,
                      "ids": ids, "numpy": np.__version__, "blas": blas_library()}))


if __name__ == "__main__":
    main()
