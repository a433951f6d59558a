#!/usr/bin/python3
"""Fallback for bench.py: write a random-weight model.bin (format in README.md) directly with numpy.

    /usr/bin/python3 bench/make_random_model.py OUT.bin [--layers 12 --heads 12 --embd 768 --ctx 1024 --vocab 50257]

bench.py normally builds its random checkpoint through the real path (tests/make_hf_model.py, then
export_gpt2.py); this is only used when that path is missing or fails. Speed does not depend on the values.
"""
import argparse
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    L, C, P, V = a.layers, a.embd, a.ctx, a.vocab
    rng = np.random.default_rng(a.seed)
    with open(a.out, "wb") as f:
        f.write((b"GPT2" + struct.pack("<6I", 1, L, a.heads, C, P, V) + struct.pack("<f", 1e-5)).ljust(256, b"\0"))

        def put(shape, std, mean=0.0):
            f.write(b"\0" * (-f.tell() % 64))
            f.write((mean + std * rng.standard_normal(shape, dtype=np.float32)).astype("<f4").tobytes())

        put((V, C), 2 / np.sqrt(C))
        put((P, C), 1 / np.sqrt(C))
        for _ in range(L):
            for shape, std, mean in [((C,), 0.1, 1.0), ((C,), 0.02, 0.0), ((3 * C, C), 0.02, 0.0), ((3 * C,), 0.02, 0.0),
                                     ((C, C), 0.02, 0.0), ((C,), 0.02, 0.0), ((C,), 0.1, 1.0), ((C,), 0.02, 0.0),
                                     ((4 * C, C), 0.02, 0.0), ((4 * C,), 0.02, 0.0), ((C, 4 * C), 0.02, 0.0), ((C,), 0.02, 0.0)]:
                put(shape, std, mean)
        put((C,), 0.1, 1.0)
        put((C,), 0.02)


if __name__ == "__main__":
    main()
