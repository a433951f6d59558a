#!/usr/bin/python3
"""Write a random GPT-2 checkpoint in the exact Hugging Face layout (numpy only, no torch).

    /usr/bin/python3 tests/make_hf_model.py DIR [--layers 2 --heads 2 --embd 48 --ctx 32 --vocab 101]
        [--dtype F32|F16|BF16] [--no-prefix] [--mask-buffers] [--format safetensors|pytorch]
        [--seed 0] [--std S] [--eps 1e-5] [--gpt2-124m]

DIR gets config.json and model.safetensors (or pytorch_model.bin, a torch.save-style zip
written without torch). As a module: make_model(dir, **opts) returns the weights as float64
numpy arrays keyed by HF name without prefix, holding exactly the stored (dtype-rounded) values;
export(dir, out, args=()) runs export_gpt2.py on it; exported_model(cache_dir, weights="f32", **opts)
gives the path of a model.bin made both ways (weights: the exporter's --dtype), once per cache_dir
and options. This is the one writer of random models for the tests: they all go through the
exporter, as a real checkpoint would.

Weights: matrices N(0, std) with std = 0.02 * sqrt(768 / n_embd) by default (GPT-2's init,
rescaled so that activations have GPT-2-like sizes at any width); wte N(0, 2/sqrt(C)) and
wpe N(0, 1/sqrt(C)) so logits spread over a few units (not flat); LayerNorm weights 1 + N(0, 0.1);
all biases N(0, 0.02).

--gpt2-124m writes a 124M-parameter-shaped model (12 layers, 12 heads, 768, ctx 1024,
vocab 50257, about 500 MB) for benchmarks; it streams tensor by tensor in float32.
"""

import argparse
import collections
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np

EXPORTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "export_gpt2.py")
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U8": np.uint8,
             "BOOL": np.bool_}


def layer_names(i):
    h = f"h.{i}."
    return [h + n for n in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]


def hf_shapes(L, C, P, V):
    """Canonical (unprefixed) HF name -> shape for the trainable tensors."""
    s = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(L):
        h = f"h.{i}."
        s.update({h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
                  h + "attn.c_attn.weight": (C, 3 * C), h + "attn.c_attn.bias": (3 * C,),
                  h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
                  h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
                  h + "mlp.c_fc.weight": (C, 4 * C), h + "mlp.c_fc.bias": (4 * C,),
                  h + "mlp.c_proj.weight": (4 * C, C), h + "mlp.c_proj.bias": (C,)})
    return s


def to_bf16_bits(x32):
    """float32 array -> uint16 bfloat16 bits, round to nearest even."""
    b = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32)
    return ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(u16):
    return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(x32, dtype):
    """float32 array -> (array as stored in the file, float32 view of the stored values)."""
    if dtype == "F32":
        return x32, x32
    if dtype == "F16":
        h = x32.astype(np.float16)
        return h, h.astype(np.float32)
    if dtype == "BF16":
        u = to_bf16_bits(x32)
        return u, from_bf16_bits(u)
    raise ValueError(dtype)


def gen_tensor(rng, name, shape, C, std):
    short = name.split(".", 2)[-1] if name.startswith("h.") else name
    if name == "wte.weight":
        s = 2.0 / np.sqrt(C)
    elif name == "wpe.weight":
        s = 1.0 / np.sqrt(C)
    elif short.endswith("bias"):
        s = 0.02
    elif "ln_" in short:
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    else:
        s = std
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(s)


# ----------------------------------------------------------------------------
# safetensors writer

def write_safetensors(path, items, metadata=None):
    """items: list of (name, dtype string, shape, bytes-like). Writes them in the given order."""
    header, off = {}, 0
    for name, dt, shape, data in items:
        n = memoryview(data).nbytes
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for _, _, _, data in items:
            f.write(data)


def read_safetensors(path):
    """name -> (dtype string, shape, raw bytes), plus metadata; for tests that edit files."""
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), buf[8 + n + b:8 + n + end])
    return out, meta


# ----------------------------------------------------------------------------
# torch.save-style zip writer (no torch): data.pkl pickles an OrderedDict of tensors as
# torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks),
# storages as persistent ids ('storage', torch.<X>Storage, key, 'cpu', numel), data in data/<key>.

_STORAGE_CLASS = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
                  "U8": "ByteStorage", "BOOL": "BoolStorage"}


class _FakeStorage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class _FakeTensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)


def write_pytorch(path, items):
    """items: list of (name, dtype string, shape, bytes). Same contents as write_safetensors."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):
        raise RuntimeError("placeholder")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    for cls_name in _STORAGE_CLASS.values():
        c = type(cls_name, (), {"__module__": "torch"})
        setattr(torch_mod, cls_name, c)

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", obj.cls, obj.key, "cpu", obj.numel)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _FakeTensor):
                stride, acc = [], 1
                for d in reversed(obj.shape):
                    stride.insert(0, acc)
                    acc *= d
                return (_rebuild_tensor_v2,
                        (obj.storage, 0, obj.shape, tuple(stride), False, collections.OrderedDict()))
            return NotImplemented

    state, blobs = collections.OrderedDict(), []
    for k, (name, dt, shape, data) in enumerate(items):
        numel = int(np.prod(shape, dtype=np.int64))
        st = _FakeStorage(getattr(torch_mod, _STORAGE_CLASS[dt]), str(k), numel)
        state[name] = _FakeTensor(st, shape)
        blobs.append((str(k), data))
    saved = {m: sys.modules.get(m) for m in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        import io
        bio = io.BytesIO()
        P(bio, protocol=2).dump(state)
    finally:
        for m, v in saved.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", bio.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in blobs:
            z.writestr(f"archive/data/{key}", bytes(data))
        z.writestr("archive/version", "3\n")


# ----------------------------------------------------------------------------

def make_model(out_dir, layers=2, heads=2, embd=48, ctx=32, vocab=101, dtype="F32", prefix=True,
               mask_buffers=False, seed=0, std=None, format="safetensors", eps=1e-5,
               activation="gelu_new", keep=True, config_extra=None):
    """Write config.json + weights into out_dir; return {name: float64 array} (stored values)
    or None when keep=False (large models)."""
    L, H, C, P, V = layers, heads, embd, ctx, vocab
    if std is None:
        std = 0.02 * np.sqrt(768.0 / C)
    os.makedirs(out_dir, exist_ok=True)
    cfg = {"activation_function": activation, "architectures": ["GPT2LMHeadModel"],
           "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
           "initializer_range": 0.02, "layer_norm_epsilon": eps, "model_type": "gpt2",
           "n_ctx": P, "n_embd": C, "n_head": H, "n_inner": None, "n_layer": L, "n_positions": P,
           "resid_pdrop": 0.1, "vocab_size": V}
    cfg.update(config_extra or {})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    rng = np.random.default_rng(seed)
    shapes = hf_shapes(L, C, P, V)
    pre = "transformer." if prefix else ""
    weights = {} if keep else None

    # Generate in canonical order (so a seed always gives the same weights), store sorted by
    # name like Hugging Face does (h.10 before h.2), so readers must look tensors up by name.
    generated = {}
    for name in ["wte.weight", "wpe.weight"] + [n for i in range(L) for n in layer_names(i)] + \
            ["ln_f.weight", "ln_f.bias"]:
        x32 = gen_tensor(rng, name, shapes[name], C, std)
        stored, vals = encode(x32, dtype)
        if keep:
            weights[name] = vals.astype(np.float64)
        generated[pre + name] = (dtype, shapes[name], np.ascontiguousarray(stored))
    if mask_buffers:
        mask_dt = "U8" if format == "pytorch" else dtype
        tri = np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)
        for i in range(L):
            if mask_dt == "U8":
                generated[f"{pre}h.{i}.attn.bias"] = ("U8", tri.shape, tri.astype(np.uint8))
            else:
                generated[f"{pre}h.{i}.attn.bias"] = (dtype, tri.shape, encode(tri, dtype)[0])
            generated[f"{pre}h.{i}.attn.masked_bias"] = (
                dtype, (), encode(np.array(-1e4, dtype=np.float32), dtype)[0].reshape(()))
        # lm_head is tied: same values as wte
        generated["lm_head.weight"] = generated[pre + "wte.weight"]
    items = [(n, dt, shape, arr.tobytes()) for n, (dt, shape, arr) in sorted(generated.items())]
    if format == "safetensors":
        write_safetensors(os.path.join(out_dir, "model.safetensors"), items, {"format": "pt"})
    elif format == "pytorch":
        write_pytorch(os.path.join(out_dir, "pytorch_model.bin"), items)
    else:
        raise ValueError(format)
    return weights


def make_124m(out_dir, dtype="F32", seed=0):
    """124M-shaped model without holding everything: tensors are generated and written one by one."""
    L, H, C, P, V = 12, 12, 768, 1024, 50257
    os.makedirs(out_dir, exist_ok=True)
    cfg = {"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "model_type": "gpt2",
           "n_ctx": P, "n_embd": C, "n_head": H, "n_inner": None, "n_layer": L, "n_positions": P,
           "vocab_size": V}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shapes = hf_shapes(L, C, P, V)
    names = sorted(shapes)
    size = 2 if dtype in ("F16", "BF16") else 4
    header, off = {}, 0
    for n in names:
        nb = int(np.prod(shapes[n])) * size
        header[n] = {"dtype": dtype, "shape": list(shapes[n]), "data_offsets": [off, off + nb]}
        off += nb
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(seed)
    std = 0.02
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for n in names:
            x32 = gen_tensor(rng, n, shapes[n], C, std)
            f.write(np.ascontiguousarray(encode(x32, dtype)[0]).tobytes())
            del x32


def export(src_dir, out_bin, env=None, timeout=300, args=()):
    """Runs export_gpt2.py SRC_DIR OUT_BIN [ARGS] under `python -S` (so numpy cannot be imported: the
    exporter must need the standard library only). Returns the CompletedProcess, stdout and stderr as text."""
    return subprocess.run([sys.executable, "-S", EXPORTER, src_dir, out_bin, *args], capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=timeout)


def exported_model(cache_dir, weights="f32", **opts):
    """Path of the model.bin that export_gpt2.py --dtype WEIGHTS makes from make_model(**opts). Made on the
    first call for these options and reused after that, so a test can ask for the same shape many times."""
    name = "_".join(f"{k}{v}" for k, v in sorted(opts.items())) or "default"
    src = os.path.join(cache_dir, name)
    out = os.path.join(cache_dir, name + ("" if weights == "f32" else "_" + weights) + ".bin")
    if not os.path.exists(out):
        if not os.path.exists(src):
            make_model(src, keep=False, **opts)
        r = export(src, out, args=("--dtype", weights))
        if r.returncode != 0:
            raise RuntimeError(f"export_gpt2.py {src} failed: {r.stderr.strip()}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--embd", type=int, default=48)
    ap.add_argument("--ctx", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=101)
    ap.add_argument("--dtype", choices=("F32", "F16", "BF16"), default="F32")
    ap.add_argument("--prefix", dest="prefix", action="store_true", default=True,
                    help="names start with 'transformer.' (default)")
    ap.add_argument("--no-prefix", dest="prefix", action="store_false")
    ap.add_argument("--mask-buffers", action="store_true",
                    help="also write attn.bias, attn.masked_bias and lm_head.weight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=None,
                    help="std of weight matrices (default 0.02*sqrt(768/embd))")
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--format", choices=("safetensors", "pytorch"), default="safetensors")
    ap.add_argument("--gpt2-124m", action="store_true",
                    help="12 layers, 12 heads, 768, ctx 1024, vocab 50257, streamed (ignores shape options)")
    a = ap.parse_args()
    if a.gpt2_124m:
        make_124m(a.dir, dtype=a.dtype, seed=a.seed)
    else:
        make_model(a.dir, layers=a.layers, heads=a.heads, embd=a.embd, ctx=a.ctx, vocab=a.vocab,
                   dtype=a.dtype, prefix=a.prefix, mask_buffers=a.mask_buffers, seed=a.seed,
                   std=a.std, format=a.format, eps=a.eps, keep=False)


if __name__ == "__main__":
    main()
