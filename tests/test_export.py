#!/usr/bin/python3
"""Tests of export_gpt2.py: exact output bytes against an independent numpy writer (for every
--dtype: f32, f16 and int8), and every error path (one "error: " line, exit 1, nothing left behind).

    /usr/bin/python3 tests/test_export.py          (about 10 s)
    GPT2C_BIG=1 /usr/bin/python3 tests/test_export.py   also exports a 124M-shaped model (~500 MB) in
                                                         f32, f16 and int8

export_gpt2.py runs under `python -S`, where numpy is not importable: that proves it is stdlib-only.
Prints "ok - name" / "not ok - name: why" per assertion; exits 1 if any failed.
"""

import functools
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import make_hf_model as mk  # noqa: E402
import reference  # noqa: E402
from tap import check, exit_status  # noqa: E402

run_export = mk.export


# ----------------------------------------------------------------------------
# independent writer of the model.bin format (README.md, "model.bin")

WEIGHT_TYPE = {"f32": 0, "f16": 1, "int8": 2}


def file_order(L, C, P, V):
    """(name, kind, HF shape) in file order. kind: "vector" (always float32), "matrix" (wte: stored
    as is, in the weight type) or "conv1d" (stored transposed, in the weight type)."""
    order = [("wte.weight", "matrix", (V, C)), ("wpe.weight", "vector", (P, C))]
    for i in range(L):
        for n, kind, shape in (("ln_1.weight", "vector", (C,)), ("ln_1.bias", "vector", (C,)),
                               ("attn.c_attn.weight", "conv1d", (C, 3 * C)), ("attn.c_attn.bias", "vector", (3 * C,)),
                               ("attn.c_proj.weight", "conv1d", (C, C)), ("attn.c_proj.bias", "vector", (C,)),
                               ("ln_2.weight", "vector", (C,)), ("ln_2.bias", "vector", (C,)),
                               ("mlp.c_fc.weight", "conv1d", (C, 4 * C)), ("mlp.c_fc.bias", "vector", (4 * C,)),
                               ("mlp.c_proj.weight", "conv1d", (4 * C, C)), ("mlp.c_proj.bias", "vector", (C,))):
            order.append((f"h.{i}.{n}", kind, shape))
    return order + [("ln_f.weight", "vector", (C,)), ("ln_f.bias", "vector", (C,))]


def stored_shape(kind, shape):
    return shape[::-1] if kind == "conv1d" else shape


def layout(L, C, P, V, weights="f32"):
    """({name: [(offset, numpy dtype, count) of each array it is stored as]}, file size)."""
    places, pos = {}, 256
    for name, kind, shape in file_order(L, C, P, V):
        n = int(np.prod(shape))
        if kind == "vector" or weights == "f32":
            parts = [("<f4", n)]
        elif weights == "f16":
            parts = [("<f2", n)]
        else:  # q, then one scale per block of 32, the rows padded to whole groups of 16
            rows, cols = stored_shape(kind, shape)
            padded = -(-rows // 16) * 16 * cols
            parts = [("i1", padded), ("<f2", padded // 32)]
        places[name] = []
        for dt, count in parts:
            pos += -pos % 64
            places[name].append((pos, dt, count))
            pos += np.dtype(dt).itemsize * count
    return places, pos


def q8_0(m):
    """Q8_0 of a matrix (rows, cols), cols % 32 == 0, as the format says: (q int8 (rows*cols),
    d float16 (rows*cols/32))."""
    blocks = np.asarray(m, dtype=np.float32).reshape(-1, 32).astype(np.float64)
    d = (np.abs(blocks).max(axis=1) / 127).astype(np.float16)
    d64 = d.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d64 > 0, np.rint(blocks / d64), 0.0)  # rint: half to even
    return np.clip(q, -127, 127).astype(np.int8).reshape(-1), d


def interleave(q, d, cols):
    """Row-major Q8_0 (q, d) -> the file's order: rows padded with zeros to groups of 16, then
    q[group][block][word of 4][row in group][4] and d[group][block][row in group]."""
    nb = cols // 32
    rows = len(q) // cols
    pad = -rows % 16
    q = np.concatenate([q, np.zeros(pad * cols, np.int8)]).reshape(-1, 16, nb, 8, 4)
    d = np.concatenate([d, np.zeros(pad * nb, np.float16)]).reshape(-1, 16, nb)
    return q.transpose(0, 2, 3, 1, 4).reshape(-1), d.transpose(0, 2, 1).reshape(-1)


def rows_of(q, d, cols):
    """interleave()'s inverse, padding rows included: ((rows, cols) int8, (rows, cols / 32) float16)."""
    nb = cols // 32
    q = np.asarray(q).reshape(-1, nb, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(-1, cols)
    return q, np.asarray(d).reshape(-1, nb, 16).transpose(0, 2, 1).reshape(-1, nb)


def stored_arrays(a, kind, weights):
    """The arrays a tensor (already in its stored orientation) becomes."""
    if kind == "vector" or weights == "f32":
        return [np.asarray(a, dtype=np.float32)]
    if weights == "f16":
        return [np.asarray(a, dtype=np.float32).astype(np.float16)]
    return list(interleave(*q8_0(a), np.shape(a)[1]))


def expected_bin(w, L, H, C, P, V, eps, weights="f32"):
    """(the exact bytes of model.bin for the HF weights w, {name: offset of its first array})."""
    places, size = layout(L, C, P, V, weights)
    out = bytearray(size)
    out[0:4] = b"GPT2"
    out[4:28] = np.array([3, L, H, C, P, V], dtype="<u4").tobytes()
    out[28:32] = np.array([eps], dtype="<f4").tobytes()
    out[32:36] = np.array([WEIGHT_TYPE[weights]], dtype="<u4").tobytes()
    for name, kind, _ in file_order(L, C, P, V):
        a = w[name].T if kind == "conv1d" else w[name]
        for (off, dt, count), arr in zip(places[name], stored_arrays(a, kind, weights)):
            b = np.ascontiguousarray(arr, dtype=dt).tobytes()
            assert len(b) == np.dtype(dt).itemsize * count
            out[off:off + len(b)] = b
    return bytes(out), {name: p[0][0] for name, p in places.items()}


def dequantized(w, L, C, P, V, weights):
    """The values load_bin must give back: HF layout, float64."""
    out = {}
    for name, kind, shape in file_order(L, C, P, V):
        a = w[name].T if kind == "conv1d" else w[name]
        if kind != "vector" and weights == "int8":  # q * d per block
            q, d = q8_0(a)
            m = (q.reshape(-1, 32).astype(np.float64) * d.astype(np.float64)[:, None])
        else:
            m = stored_arrays(a, kind, weights)[0].astype(np.float64)
        m = m.reshape(stored_shape(kind, shape))
        out[name] = m.T if kind == "conv1d" else m
    return out


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n


# ----------------------------------------------------------------------------

def valid_cases(tmp):
    cases = [
        ("1L 1H C8 ctx16 V50 F32 prefix", dict(layers=1, heads=1, embd=8, ctx=16, vocab=50)),
        ("2L 2H C48 ctx32 V101 F32 no-prefix mask-buffers",
         dict(layers=2, heads=2, embd=48, ctx=32, vocab=101, prefix=False, mask_buffers=True)),
        ("3L 4H C64 ctx64 V50257 F16 prefix",
         dict(layers=3, heads=4, embd=64, ctx=64, vocab=50257, dtype="F16")),
        ("3L 4H C64 ctx64 V50257 BF16 no-prefix mask-buffers",
         dict(layers=3, heads=4, embd=64, ctx=64, vocab=50257, dtype="BF16", prefix=False,
              mask_buffers=True)),
        ("3L 3H C24 ctx20 V77 F16 no-prefix",
         dict(layers=3, heads=3, embd=24, ctx=20, vocab=77, dtype="F16", prefix=False)),
        ("pytorch_model.bin F32 prefix mask-buffers",
         dict(layers=2, heads=2, embd=48, ctx=32, vocab=101, format="pytorch", mask_buffers=True)),
        ("pytorch_model.bin F16 no-prefix",
         dict(layers=2, heads=4, embd=32, ctx=24, vocab=90, format="pytorch", dtype="F16",
              prefix=False)),
        ("pytorch_model.bin BF16 mask-buffers",
         dict(layers=1, heads=2, embd=16, ctx=8, vocab=60, format="pytorch", dtype="BF16",
              mask_buffers=True)),
        ("eps 1e-6, gelu_pytorch_tanh, n_inner=4C",
         dict(layers=1, heads=2, embd=16, ctx=8, vocab=60, eps=1e-6, activation="gelu_pytorch_tanh",
              config_extra={"n_inner": 64})),
    ]
    for k, (name, opts) in enumerate(cases):
        src = os.path.join(tmp, f"valid{k}")
        w = mk.make_model(src, seed=k, **opts)
        out = os.path.join(tmp, f"valid{k}.bin")
        r = run_export(src, out)
        if not check(f"export {name}: exit 0", r.returncode == 0, r.stderr.strip()[-300:]):
            continue
        check(f"export {name}: summary on stderr, nothing on stdout",
              r.stdout == "" and "n_layer=" in r.stderr and "error" not in r.stderr, r.stderr)
        exp, _ = expected_bin(w, opts["layers"], opts["heads"], opts["embd"], opts["ctx"],
                              opts["vocab"], opts.get("eps", 1e-5))
        got = open(out, "rb").read()
        check(f"export {name}: bytes identical to independent writer", got == exp,
              f"size {len(got)} vs {len(exp)}, first difference at byte {first_diff(got, exp)}")
        check(f"export {name}: no tmp file left", not os.path.exists(out + ".tmp"))

    # config with the legacy n_ctx key only
    src = os.path.join(tmp, "nctx_only")
    w = mk.make_model(src, layers=1, heads=1, embd=8, ctx=12, vocab=30, seed=9)
    cfg = json.load(open(os.path.join(src, "config.json")))
    del cfg["n_positions"]
    json.dump(cfg, open(os.path.join(src, "config.json"), "w"))
    out = os.path.join(tmp, "nctx_only.bin")
    r = run_export(src, out)
    check("export config with n_ctx but no n_positions", r.returncode == 0 and
          open(out, "rb").read() == expected_bin(w, 1, 1, 8, 12, 30, 1e-5)[0], r.stderr.strip())


def layout_checks(tmp):
    """Spell out the format facts on one model (the byte comparison already implies them)."""
    src = os.path.join(tmp, "layout")
    L, H, C, P, V = 2, 3, 24, 10, 37
    w = mk.make_model(src, layers=L, heads=H, embd=C, ctx=P, vocab=V, eps=3e-5, seed=5)
    out = os.path.join(tmp, "layout.bin")
    r = run_export(src, out)
    if not check("layout: export", r.returncode == 0, r.stderr.strip()):
        return
    b = open(out, "rb").read()
    magic, ver, l, h, c, p, v, eps, wt = struct.unpack_from("<4s6IfI", b, 0)
    check("layout: header magic/version/dims", (magic, ver, l, h, c, p, v) == (b"GPT2", 3, L, H, C, P, V),
          str((magic, ver, l, h, c, p, v)))
    check("layout: header eps is float32(3e-5)", eps == float(np.float32(3e-5)), repr(eps))
    check("layout: weight_type 0 (f32) without --dtype", wt == 0, str(wt))
    check("layout: header bytes 36..255 are zero", b[36:256] == bytes(220))
    _, offs = expected_bin(w, L, H, C, P, V, 3e-5)
    check("layout: every tensor offset is a multiple of 64", all(o % 64 == 0 for o in offs.values()))
    o = offs["h.1.attn.c_attn.weight"]
    got = np.frombuffer(b, dtype="<f4", count=3 * C * C, offset=o).reshape(3 * C, C)
    check("layout: c_attn.weight stored transposed [3C][C]",
          np.array_equal(got, w["h.1.attn.c_attn.weight"].T.astype(np.float32)))
    o = offs["h.0.mlp.c_proj.weight"]
    got = np.frombuffer(b, dtype="<f4", count=4 * C * C, offset=o).reshape(C, 4 * C)
    check("layout: mlp.c_proj.weight stored transposed [C][4C]",
          np.array_equal(got, w["h.0.mlp.c_proj.weight"].T.astype(np.float32)))
    end = offs["ln_f.bias"] + 4 * C
    check("layout: file ends exactly after ln_f.bias", len(b) == end, f"{len(b)} vs {end}")


# ----------------------------------------------------------------------------
# --dtype f16 and int8

def export_checks(label, src, w, dims, weights, eps=1e-5):
    """Export src with --dtype weights; the file must be expected_bin's bytes, and reference.load_bin
    must give back the dequantized weights."""
    L, H, C, P, V = dims
    out = src + "_" + weights + ".bin"
    r = run_export(src, out, args=("--dtype", weights))
    if not check(f"{label} --dtype {weights}: exit 0", r.returncode == 0, r.stderr.strip()[-300:]):
        return None
    size = os.path.getsize(out)
    check(f"{label} --dtype {weights}: the summary gives the type and the size",
          f" as {weights}, {size:,} bytes" in r.stderr, r.stderr.strip())
    exp, _ = expected_bin(w, L, H, C, P, V, eps, weights)
    got = open(out, "rb").read()
    check(f"{label} --dtype {weights}: bytes identical to independent writer", got == exp,
          f"size {len(got)} vs {len(exp)}, first difference at byte {first_diff(got, exp)}")
    p = reference.load_bin(out)
    want = dequantized(w, L, C, P, V, weights)
    bad = [n for n in want if not np.array_equal(p["w"][n], want[n])]
    check(f"{label} --dtype {weights}: reference.load_bin gives the dequantized weights",
          not bad and p["weight_type"] == weights and (p["n_layer"], p["n_head"], p["n_embd"], p["n_ctx"],
                                                      p["vocab_size"]) == dims, f"differ: {bad[:5]}")
    return got


def weight_type_cases(tmp):
    cases = [("F32 safetensors C64 V101", dict(layers=2, heads=2, embd=64, ctx=16, vocab=101)),
             ("F16 pytorch_model.bin C32 V50257",
              dict(layers=1, heads=2, embd=32, ctx=8, vocab=50257, dtype="F16", format="pytorch")),
             ("BF16 no-prefix mask-buffers C96",
              dict(layers=2, heads=3, embd=96, ctx=12, vocab=77, dtype="BF16", prefix=False,
                   mask_buffers=True))]
    for k, (label, opts) in enumerate(cases):
        src = os.path.join(tmp, f"wt{k}")
        w = mk.make_model(src, seed=20 + k, **opts)
        dims = (opts["layers"], opts["heads"], opts["embd"], opts["ctx"], opts["vocab"])
        for weights in ("f16", "int8"):
            export_checks(label, src, w, dims, weights)
    # "f32" spelled out is the default
    r = run_export(src, src + "_f32.bin", args=("--dtype", "f32"))
    check("--dtype f32: same bytes as no --dtype", r.returncode == 0 and open(src + "_f32.bin", "rb").read()
          == expected_bin(w, *dims, 1e-5)[0], r.stderr.strip())


def edge_weights(w):
    """Edits h.0.mlp.c_fc.weight (HF (C, 4C); stored row o is HF column o, its blocks run down the column)
    to hit every rule of the int8 and f16 conversions; returns what each edited block must become."""
    m = w["h.0.mlp.c_fc.weight"]
    m[0:32, 0] = 0.0                          # row 0, block 0: all zero -> d = 0, q = 0
    amax = np.float32(127 * 1.4 * 2.0 ** -24)  # row 0, block 1: amax/127 rounds to the subnormal 2^-24,
    tiny = np.zeros(32, dtype=np.float32)     # so w / d reaches 177.8 and q must be clamped
    tiny[:3] = [amax, -0.9 * amax, 0.3 * amax]
    m[32:64, 0] = tiny
    ties = np.zeros(32)                       # row 1, block 0: d = 2^-8 exactly, w / d = k + 1/2
    ties[:7] = [127, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5]
    m[0:32, 1] = ties / 256
    m[0:2, 2] = [1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11]  # row 2: f16 ties -> 1 and 1 + 2^-9 (even)
    return {"zero": ([0] * 32, 0.0), "tiny": ([127, -127, 53] + [0] * 29, 2.0 ** -24),
            "ties": ([127, 2, 4, -2, -4, 0, 2] + [0] * 25, 2.0 ** -8)}


def rewrite_checkpoint(src, w, names, prefix="transformer."):
    """Store w[name] for the given names back into src's F32 model.safetensors."""
    path = os.path.join(src, "model.safetensors")
    items, meta = mk.read_safetensors(path)
    for n in names:
        dt, shape, _ = items[prefix + n]
        items[prefix + n] = (dt, shape, np.ascontiguousarray(w[n], dtype="<f4").tobytes())
    mk.write_safetensors(path, [(n, dt, sh, b) for n, (dt, sh, b) in items.items()], meta)


def edge_cases(tmp):
    src = os.path.join(tmp, "edge")
    dims = (1, 2, 64, 8, 50)
    w = mk.make_model(src, layers=1, heads=2, embd=64, ctx=8, vocab=50, seed=7)
    want = edge_weights(w)
    rewrite_checkpoint(src, w, ["h.0.mlp.c_fc.weight"])
    got = export_checks("edge blocks", src, w, dims, "int8")
    if got is not None:
        places, _ = layout(*dims[:1], *dims[2:], "int8")
        (q_off, _, n), (d_off, _, nd) = places["h.0.mlp.c_fc.weight"]
        q, d = rows_of(np.frombuffer(got, "i1", n, q_off), np.frombuffer(got, "<f2", nd, d_off), 64)
        q, d = q.reshape(-1, 32), d.reshape(-1)  # block by block, rows one after another
        per_row = 64 // 32
        for label, block in (("zero", 0), ("tiny", 1), ("ties", per_row)):
            check(f"edge blocks int8: the {label} block is q={want[label][0][:7]}..., d={want[label][1]:g}",
                  q[block].tolist() == want[label][0] and float(d[block]) == want[label][1],
                  f"q={q[block].tolist()} d={float(d[block])!r}")
        check("edge blocks int8: every scale offset and q offset is a multiple of 64",
              all(off % 64 == 0 for parts in places.values() for off, _, _ in parts))
    got = export_checks("edge blocks", src, w, dims, "f16")
    if got is not None:
        places, _ = layout(*dims[:1], *dims[2:], "f16")
        row2 = np.frombuffer(got, "<f2", 2, places["h.0.mlp.c_fc.weight"][0][0] + 2 * 2 * 64)
        check("edge blocks f16: halfway values round to even", row2.tolist() == [1.0, 1 + 2.0 ** -9],
              str(row2.tolist()))


def refused(label, src, args, words):
    """Export must fail with exit 1, one 'error: ' line containing words, and leave nothing behind."""
    outdir = os.path.join(os.path.dirname(src), "refused_" + label.replace(" ", "_"))
    os.makedirs(outdir)
    r = run_export(src, os.path.join(outdir, "model.bin"), args=args)
    lines = r.stderr.splitlines()
    check(f"refused {label}: exit 1, one 'error: ' line naming {words}", r.returncode == 1 and len(lines) == 1
          and lines[0].startswith("error: ") and all(x in lines[0] for x in words) and r.stdout == "",
          f"rc={r.returncode} stderr={r.stderr.strip()[-300:]!r}")
    check(f"refused {label}: nothing left behind", os.listdir(outdir) == [], str(os.listdir(outdir)))


def weight_type_errors(tmp):
    src = os.path.join(tmp, "c48")
    mk.make_model(src, layers=1, heads=2, embd=48, ctx=8, vocab=40, seed=8)
    refused("int8 with n_embd 48", src, ("--dtype", "int8"),
            ["error: --dtype int8 needs n_embd to be a multiple of 32 (this model has 48)"])
    refused("--dtype bogus", src, ("--dtype", "bogus"), ["--dtype", "bogus"])
    refused("--dtype with --tokenizer", src, ("--dtype", "f16", "--tokenizer"), ["--dtype", "--tokenizer"])
    src = os.path.join(tmp, "huge")
    w = mk.make_model(src, layers=1, heads=2, embd=32, ctx=8, vocab=40, seed=9)
    w["h.0.attn.c_proj.weight"][3, 5] = 70000.0
    rewrite_checkpoint(src, w, ["h.0.attn.c_proj.weight"])
    refused("f16 with a weight of 70000", src, ("--dtype", "f16"), ["h.0.attn.c_proj.weight", "70000"])
    export_checks("weight of 70000", src, w, (1, 2, 32, 8, 40), "int8")  # within an f16 scale's range
    w["h.0.attn.c_proj.weight"][3, 5] = np.nan
    rewrite_checkpoint(src, w, ["h.0.attn.c_proj.weight"])
    refused("int8 with a NaN weight", src, ("--dtype", "int8"), ["h.0.attn.c_proj.weight", "NaN"])


# ----------------------------------------------------------------------------
# error cases

def error_cases(tmp):
    base = os.path.join(tmp, "base")
    mk.make_model(base, layers=2, heads=2, embd=48, ctx=32, vocab=101, seed=1)
    base_pt = os.path.join(tmp, "base_pt")
    mk.make_model(base_pt, layers=2, heads=2, embd=48, ctx=32, vocab=101, seed=1, format="pytorch")
    st_items, st_meta = mk.read_safetensors(os.path.join(base, "model.safetensors"))

    def clone(name, src=base):
        d = os.path.join(tmp, "err_" + name)
        shutil.copytree(src, d)
        return d

    def edit_config(name, **changes):
        d = clone(name)
        p = os.path.join(d, "config.json")
        cfg = json.load(open(p))
        for k, v in changes.items():
            if v is KeyError:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        json.dump(cfg, open(p, "w"))
        return d

    def edit_tensors(name, fn):
        d = clone(name)
        items = dict(st_items)
        fn(items)
        mk.write_safetensors(os.path.join(d, "model.safetensors"),
                             [(n, dt, s, b) for n, (dt, s, b) in items.items()], st_meta)
        return d

    def edit_bytes(name, fn, fname="model.safetensors", src=base):
        d = clone(name, src)
        p = os.path.join(d, fname)
        b = fn(open(p, "rb").read())
        open(p, "wb").write(b)
        return d

    def drop(items):
        del items["transformer.h.1.ln_2.bias"]

    def transposed_shape(items):
        dt, s, b = items["transformer.h.0.attn.c_attn.weight"]
        items["transformer.h.0.attn.c_attn.weight"] = (dt, (s[1], s[0]), b)

    def bad_offsets(items):
        dt, s, b = items["transformer.h.0.ln_1.bias"]
        items["transformer.h.0.ln_1.bias"] = (dt, s, b[:-4])

    def as_f64(items):
        dt, s, b = items["transformer.h.0.ln_1.weight"]
        items["transformer.h.0.ln_1.weight"] = ("F64", s, np.frombuffer(b, "<f4").astype("<f8").tobytes())

    def unknown_dtype(items):
        dt, s, b = items["transformer.h.0.ln_1.weight"]
        items["transformer.h.0.ln_1.weight"] = ("Q7", s, b)

    def duplicate(items):
        items["wpe.weight"] = items["transformer.wpe.weight"]

    def truncate(b):
        return b[:-100]

    def huge_header(b):
        return (10**9).to_bytes(8, "little") + b[8:]

    def garbage_header(b):
        g = b"{\"transformer.w\x00\x01 not json"
        return b[:8] + g + b[8 + len(g):]

    def header_not_object(b):
        h = b"[1, 2, 3]" + b" " * 7
        return len(h).to_bytes(8, "little") + h

    def corrupt_entry(b):
        n = int.from_bytes(b[:8], "little")
        h = json.loads(b[8:8 + n])
        h["transformer.wte.weight"]["data_offsets"] = "zero"
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        return len(hb).to_bytes(8, "little") + hb + b[8 + n:]

    # pytorch_model.bin whose pickle calls os.system: must be refused, never executed
    sentinel = os.path.join(tmp, "PWNED")

    def evil_pickle(_):
        import io
        bio = io.BytesIO()
        with zipfile.ZipFile(bio, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nq\x00X" +
                       struct.pack("<I", len("touch " + sentinel)) + ("touch " + sentinel).encode() +
                       b"\x85R.")
            z.writestr("archive/version", "3\n")
        return bio.getvalue()

    def drop_storage(b):
        import io
        zin = zipfile.ZipFile(io.BytesIO(b))
        bio = io.BytesIO()
        with zipfile.ZipFile(bio, "w") as z:
            for info in zin.infolist():
                if info.filename != "archive/data/3":
                    z.writestr(info, zin.read(info))
        return bio.getvalue()

    only_config = clone("only_config")
    os.remove(os.path.join(only_config, "model.safetensors"))
    no_config = clone("no_config")
    os.remove(os.path.join(no_config, "config.json"))
    bad_json = clone("bad_json")
    open(os.path.join(bad_json, "config.json"), "w").write('{"n_layer": 2, "n_head": ')
    a_file = os.path.join(tmp, "a_file")
    open(a_file, "w").write("x")

    cases = [
        ("missing directory", os.path.join(tmp, "does_not_exist"), "no such directory"),
        ("SOURCE is a file", a_file, "not a directory"),
        ("unknown model name (no network attempted)", "gpt3-mega", "not a known model name"),
        ("no weights file", only_config, "neither"),
        ("missing config.json", no_config, "config.json"),
        ("config.json not JSON", bad_json, "config.json"),
        ("config missing n_head", edit_config("no_n_head", n_head=KeyError), "n_head"),
        ("config missing n_positions and n_ctx",
         edit_config("no_npos", n_positions=KeyError, n_ctx=KeyError), "n_positions"),
        ("config n_embd not a multiple of n_head", edit_config("heads5", n_head=5), "multiple"),
        ("config n_inner not null/4C", edit_config("n_inner", n_inner=100), "n_inner"),
        ("config activation relu", edit_config("relu", activation_function="relu"), "activation"),
        ("config n_layer 0", edit_config("layers0", n_layer=0), "n_layer"),
        ("config n_head is a string", edit_config("heads_str", n_head="2"), "n_head"),
        ("config negative eps", edit_config("eps", layer_norm_epsilon=-1), "layer_norm_epsilon"),
        ("config model_type gpt_neo", edit_config("neo", model_type="gpt_neo"), "model_type"),
        ("config vocab_size does not match wte", edit_config("vocab", vocab_size=100), "shape"),
        ("config n_positions does not match wpe", edit_config("npos", n_positions=64), "shape"),
        ("config n_embd does not match tensors", edit_config("embd", n_embd=64, n_head=2), "shape"),
        ("config n_layer smaller than checkpoint", edit_config("fewer", n_layer=1), "n_layer=1"),
        ("config n_layer larger than checkpoint", edit_config("more", n_layer=3), "missing"),
        ("missing tensor", edit_tensors("missing", drop), "h.1.ln_2.bias"),
        ("wrong shape (c_attn stored [3C,C])", edit_tensors("shape", transposed_shape), "shape"),
        ("data size does not match shape", edit_tensors("offsets", bad_offsets), "bytes"),
        ("unsupported dtype F64", edit_tensors("f64", as_f64), "F64"),
        ("unknown dtype Q7", edit_tensors("q7", unknown_dtype), "Q7"),
        ("tensor with and without prefix", edit_tensors("dup", duplicate), "twice"),
        ("truncated safetensors (data offsets beyond file)", edit_bytes("trunc", truncate), "beyond"),
        ("header length beyond file", edit_bytes("hlen", huge_header), "header length"),
        ("safetensors shorter than 8 bytes", edit_bytes("tiny", lambda b: b[:5]), "short"),
        ("corrupt header JSON", edit_bytes("hjson", garbage_header), "JSON"),
        ("header not an object", edit_bytes("harr", header_not_object), "header"),
        ("header entry malformed", edit_bytes("hentry", corrupt_entry), "wte"),
        ("pytorch_model.bin not a zip", edit_bytes("ptzip", lambda b: b"\x80\x02}q\x00." + b[:50],
                                                   "pytorch_model.bin", base_pt), "zip"),
        ("pytorch_model.bin with os.system global", edit_bytes("evil", evil_pickle,
                                                               "pytorch_model.bin", base_pt), "os.system"),
        ("pytorch_model.bin storage missing", edit_bytes("ptstore", drop_storage,
                                                         "pytorch_model.bin", base_pt), "data/3"),
        ("pytorch_model.bin truncated storage",
         edit_bytes("pttrunc", lambda b: b[:len(b) // 2], "pytorch_model.bin", base_pt), "truncated"),
    ]
    for name, src, word in cases:
        outdir = os.path.join(tmp, "out_" + name.replace(" ", "_").replace("/", "_"))
        os.makedirs(outdir)
        out = os.path.join(outdir, "model.bin")
        r = run_export(src, out)
        lines = r.stderr.splitlines()
        ok = (r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ")
              and word.lower() in lines[0].lower() and r.stdout == "")
        check(f"error {name}: exit 1, one 'error: ' line", ok,
              f"rc={r.returncode} stderr={r.stderr.strip()[-400:]!r} (expected the word {word!r})")
        check(f"error {name}: nothing left behind", os.listdir(outdir) == [], str(os.listdir(outdir)))
    check("error pytorch_model.bin with os.system global: code not executed", not os.path.exists(sentinel))

    # output problems
    r = run_export(base, os.path.join(tmp, "no_such_dir", "model.bin"))
    check("error output directory missing", r.returncode == 1 and r.stderr.startswith("error: ")
          and len(r.stderr.splitlines()) == 1, r.stderr)
    r = run_export(base, tmp)
    check("error output path is a directory", r.returncode == 1 and r.stderr.startswith("error: ")
          and len(r.stderr.splitlines()) == 1, r.stderr)
    r = subprocess.run([sys.executable, "-S", mk.EXPORTER], capture_output=True, text=True)
    check("error no arguments: exit 1, one 'error: ' line", r.returncode == 1 and
          r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr)

    # a failed export leaves an existing OUT.bin alone
    outdir = os.path.join(tmp, "keep")
    os.makedirs(outdir)
    out = os.path.join(outdir, "model.bin")
    open(out, "wb").write(b"previous")
    r = run_export(edit_config("keep", n_head=5), out)
    check("failed export keeps the previous OUT.bin", r.returncode == 1 and
          open(out, "rb").read() == b"previous" and os.listdir(outdir) == ["model.bin"])

    # KeyboardInterrupt in the middle of writing: tmp removed, no OUT.bin
    outdir = os.path.join(tmp, "interrupt")
    os.makedirs(outdir)
    out = os.path.join(outdir, "model.bin")
    code = ("import sys; sys.path.insert(0, %r); import export_gpt2 as e\n"
            "orig = e.to_float32; n = [0]\n"
            "def boom(*a):\n"
            "    n[0] += 1\n"
            "    if n[0] == 5: raise KeyboardInterrupt\n"
            "    return orig(*a)\n"
            "e.to_float32 = boom\n"
            "sys.exit(e.main([%r, %r]))\n") % (ROOT, base, out)
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    check("KeyboardInterrupt while writing: 'error: interrupted', nothing left behind",
          r.returncode != 0 and r.stderr.strip() == "error: interrupted" and os.listdir(outdir) == [],
          f"rc={r.returncode} stderr={r.stderr.strip()!r} left={os.listdir(outdir)}")


# ----------------------------------------------------------------------------
# download path, against a local HTTP server standing in for huggingface.co (HF_ENDPOINT)

def download_checks(tmp):
    site = os.path.join(tmp, "site")
    # HF_ENDPOINT is a base URL replacing https://huggingface.co (huggingface_hub's meaning): a mirror
    # may serve below a path, and a trailing slash is dropped.
    repo = os.path.join(site, "mirror", "gpt2", "resolve", "main")
    w = mk.make_model(repo, layers=1, heads=2, embd=16, ctx=8, vocab=40, seed=3)
    open(os.path.join(repo, "vocab.json"), "w").write("{}")
    open(os.path.join(repo, "merges.txt"), "w").write("#version: 0.2\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}/mirror/"
    cache = os.path.join(tmp, "cache")
    env = {"HF_ENDPOINT": endpoint, "GPT2C_CACHE": cache, "no_proxy": "127.0.0.1,localhost",
           "NO_PROXY": "127.0.0.1,localhost"}
    try:
        out = os.path.join(tmp, "dl.bin")
        r = run_export("gpt2", out, env)
        check("download: export gpt2 from (local) HF endpoint", r.returncode == 0 and
              open(out, "rb").read() == expected_bin(w, 1, 2, 16, 8, 40, 1e-5)[0], r.stderr.strip())
        got = sorted(os.listdir(os.path.join(cache, "gpt2"))) if os.path.isdir(cache) else []
        check("download: cache holds the four files, no .part", got ==
              ["config.json", "merges.txt", "model.safetensors", "vocab.json"], str(got))
        out2 = os.path.join(tmp, "dl_missing.bin")
        r = run_export("distilgpt2", out2, env)
        lines = r.stderr.splitlines()
        check("download: failure -> one line telling what to do instead",
              r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: could not download "
                                                                            "distilgpt2")
              and not os.path.exists(out2), r.stderr.strip())
        alternatives = ("config.json and model.safetensors from https://huggingface.co/distilgpt2",
                        f"python3 export_gpt2.py DIR {out2};",
                        f"HF_ENDPOINT=https://your-mirror python3 export_gpt2.py distilgpt2 {out2};",
                        f"make random-model MODEL={out2}")
        check("download: failure names the checkpoint files, the mirror and random-model commands",
              all(a in r.stderr for a in alternatives),
              f"missing {[a for a in alternatives if a not in r.stderr]} in {r.stderr.strip()}")
        left = os.listdir(os.path.join(cache, "distilgpt2")) if os.path.isdir(
            os.path.join(cache, "distilgpt2")) else []
        check("download: failure leaves no .part file", not any(f.endswith(".part") for f in left), str(left))
    finally:
        srv.shutdown()
        srv.server_close()
    r = run_export("gpt2", os.path.join(tmp, "dl2.bin"), env)
    check("download: second export uses the cache (server down)", r.returncode == 0, r.stderr.strip())


def big_check(tmp):
    """The 124M shape in each weight type: exit 0 and the size the layout implies (times are printed,
    not asserted)."""
    src = os.path.join(tmp, "big")
    mk.make_124m(src)
    for weights in WEIGHT_TYPE:
        out = os.path.join(tmp, f"big_{weights}.bin")
        t = time.time()
        r = run_export(src, out, timeout=900, args=("--dtype", weights))
        size = layout(12, 768, 1024, 50257, weights)[1]
        check(f"124M --dtype {weights}: exit 0, {size:,} bytes", r.returncode == 0 and
              os.path.getsize(out) == size, r.stderr.strip())
        print(f"# {time.time() - t:.1f} s: " + r.stderr.strip().replace("\n", "\n# "))
        os.remove(out)


def main():
    r = subprocess.run([sys.executable, "-S", "-c", "import numpy"], capture_output=True)
    check("numpy is not importable under python -S (so the exporter is proven stdlib-only)",
          r.returncode != 0)
    tmp = tempfile.mkdtemp(prefix="test_export_")
    try:
        valid_cases(tmp)
        layout_checks(tmp)
        weight_type_cases(tmp)
        edge_cases(tmp)
        weight_type_errors(tmp)
        error_cases(tmp)
        download_checks(tmp)
        if os.environ.get("GPT2C_BIG"):
            big_check(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
