#!/usr/bin/python3
"""Why --kv-type int8 gives a scale to each block of 32 numbers rather than to each head's 64.

    /usr/bin/python3 bench/int8_blocks.py        (about a minute; numpy; not part of `make bench`)

The float64 reference (tests/reference.py) scores bench/quality.txt (576 positions, teacher-forced) on
random models with heads of 64 numbers, its keys and values rounded to int8 with one scale per block of 32
(what run.c does) or one per head, and compares the logits with unrounded ones: relative logit error
(median and worst over the positions) and top-1 agreement.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import make_hf_model as mk  # noqa: E402
import reference as ref  # noqa: E402

MODELS = [("4 layers, 2 heads of 64, default std", dict(seed=7)),
          ("4 layers, 2 heads of 64, std 0.2 (peaked attention)", dict(seed=6, std=0.2))]


def int8_blocks(x, block):
    """x [T, C] rounded as int8 with one half-precision scale per `block` numbers of a row."""
    b = x.astype(np.float32).reshape(x.shape[0], -1, block)
    scale = (np.abs(b).max(-1, keepdims=True) / np.float32(127)).astype(np.float16).astype(np.float64)
    q = np.clip(np.rint(np.divide(b, scale, out=np.zeros(b.shape), where=scale > 0)), -127, 127)
    return (q * scale).reshape(x.shape)


def main():
    ids = [int(x) for x in subprocess.run([os.path.join(ROOT, "run"), "--tokenize", "-f", os.path.join(ROOT, "bench", "quality.txt")],
                                          capture_output=True, text=True, check=True).stdout.split()]
    seq = [ref.EOT] + ids[:-1]
    print("| model | scale per | bytes per token, GPT-2 small | logit error, median | worst | top-1 agrees |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in MODELS:
            mk.make_model(tmp, layers=4, heads=2, embd=128, ctx=1024, vocab=50257, keep=False, **opts)
            p = ref.load(tmp)
            exact = ref.logits(p, seq)
            for block, label in ((32, "block of 32"), (64, "head (64)")):
                ref.round_kv = lambda x, kv, block=block: int8_blocks(x, block)
                lg = ref.logits(p, seq, kv="int8")
                err = np.abs(lg - exact).max(1) / np.abs(exact).max(1)
                per_token = 2 * 12 * (768 + 768 // block * 2)
                print(f"| {name} | {label} | {per_token:,} | {np.median(err):.1e} | {err.max():.1e} | "
                      f"{100 * (lg.argmax(1) == exact.argmax(1)).mean():.1f}% |")


if __name__ == "__main__":
    main()
