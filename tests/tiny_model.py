"""Writes small model.bin files in the exact model.bin format of README.md (numpy only), for the CLI, leak
and fuzz tests. Not a test itself (run_all.sh only runs tests/test_*.py).

    from tiny_model import write_model, model_bytes, HEADER_FIELDS
    write_model(path, n_layer=1, n_head=2, n_embd=16, n_ctx=16, vocab=64)

model_bytes(...) returns the file image so callers can corrupt it; header_bytes(...) builds just the
256-byte header with any values (including invalid ones).
"""
import struct

import numpy as np

HEADER_BYTES = 256
ALIGN = 64


def header_bytes(n_layer, n_head, n_embd, n_ctx, vocab, eps=1e-5, magic=b"GPT2", version=1):
    h = magic + struct.pack("<6I", version, n_layer, n_head, n_embd, n_ctx, vocab) + struct.pack("<f", eps)
    return h + bytes(HEADER_BYTES - len(h))


def tensor_shapes(n_layer, n_embd, n_ctx, vocab):
    C = n_embd
    shapes = [("wte", (vocab, C)), ("wpe", (n_ctx, C))]
    for l in range(n_layer):
        p = "h%d." % l
        shapes += [(p + "ln_1.w", (C,)), (p + "ln_1.b", (C,)),
                   (p + "attn.w", (3 * C, C)), (p + "attn.b", (3 * C,)),
                   (p + "attn_proj.w", (C, C)), (p + "attn_proj.b", (C,)),
                   (p + "ln_2.w", (C,)), (p + "ln_2.b", (C,)),
                   (p + "fc.w", (4 * C, C)), (p + "fc.b", (4 * C,)),
                   (p + "fc_proj.w", (C, 4 * C)), (p + "fc_proj.b", (C,))]
    shapes += [("ln_f.w", (C,)), ("ln_f.b", (C,))]
    return shapes


def expected_size(n_layer, n_embd, n_ctx, vocab):
    off = HEADER_BYTES
    for _, shape in tensor_shapes(n_layer, n_embd, n_ctx, vocab):
        off = (off + ALIGN - 1) // ALIGN * ALIGN + 4 * int(np.prod(shape))
    return off


def model_bytes(n_layer=1, n_head=2, n_embd=16, n_ctx=16, vocab=64, eps=1e-5, seed=0):
    rng = np.random.default_rng(seed)
    out = bytearray(header_bytes(n_layer, n_head, n_embd, n_ctx, vocab, eps))
    for name, shape in tensor_shapes(n_layer, n_embd, n_ctx, vocab):
        pad = (-len(out)) % ALIGN
        out += bytes(pad)
        if name.endswith("ln_1.w") or name.endswith("ln_2.w") or name == "ln_f.w":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("wte", "wpe"):
            a = rng.standard_normal(shape) / np.sqrt(n_embd)
        else:
            a = 0.1 * rng.standard_normal(shape)
        out += a.astype("<f4").tobytes()
    assert len(out) == expected_size(n_layer, n_embd, n_ctx, vocab)
    return bytes(out)


def write_model(path, **kw):
    data = model_bytes(**kw)
    with open(path, "wb") as f:
        f.write(data)
    return data
