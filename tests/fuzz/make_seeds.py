#!/usr/bin/python3
"""Writes the committed seed corpora of the fuzz targets (deterministic; rerun after a format change):
    /usr/bin/python3 tests/fuzz/make_seeds.py
  seeds/model/           small valid model.bin files of several shapes (random checkpoints from
                         tests/make_hf_model.py, exported by export_gpt2.py), plus a few near-misses
  seeds/tokenizer/       texts: ASCII, contractions, whitespace runs, digits, Unicode, invalid UTF-8
  seeds/tokenizer_file/  small valid tokenizer.bin files (256 byte tokens + a few merges), plus near-misses
"""
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_hf_model import exported_model  # noqa: E402


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def model_bytes(cache, **opts):
    with open(exported_model(cache, **opts), "rb") as f:
        return f.read()


def model_seeds(d):
    with tempfile.TemporaryDirectory(prefix="make_seeds_") as cache:
        model_seeds_in(d, cache)


def model_seeds_in(d, cache):
    shapes = [(1, 1, 1, 1, 1), (1, 1, 2, 3, 5), (2, 2, 4, 4, 7), (1, 2, 8, 2, 3), (1, 4, 4, 1, 2), (3, 1, 3, 2, 2)]
    for (L, H, C, P, V) in shapes:
        data = model_bytes(cache, layers=L, heads=H, embd=C, ctx=P, vocab=V, seed=L * 100 + C)
        write(d, "valid_L%d_H%d_C%d_P%d_V%d.bin" % (L, H, C, P, V), data)
    base = model_bytes(cache, layers=1, heads=1, embd=2, ctx=2, vocab=3)
    write(d, "truncated.bin", base[:-4])
    write(d, "extra.bin", base + bytes(4))
    write(d, "header_only.bin", base[:256])
    write(d, "bad_version.bin", base[:4] + struct.pack("<I", 4) + base[8:])


def tokenizer_file(merges_spec, ranges=None, order=None):
    """A tokenizer.bin: tokens 0..255 are the bytes (in `order`), then one token per merge."""
    order = order or list(range(256))
    tokens = [bytes([b]) for b in order]
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for left, right in merges_spec:
        res = left + right
        index[res] = len(tokens)
        tokens.append(res)
        merges.append((index[left], index[right], index[res]))
    if ranges is None:
        ranges = ([(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x391, 0x3C9), (0x4E00, 0x9FFF)],  # letters
                  [(0x30, 0x39), (0x660, 0x669)],                                              # numbers
                  [(0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x2000, 0x200A), (0x3000, 0x3000)])
    offsets = [0]
    for t in tokens:
        offsets.append(offsets[-1] + len(t))
    blob = b"".join(tokens)
    out = [b"GTOK", struct.pack("<8I", 1, len(tokens), len(merges), 0x0E0000, len(ranges[0]), len(ranges[1]),
                                len(ranges[2]), len(blob))]
    out.append(struct.pack("<%dI" % len(offsets), *offsets))
    out += [struct.pack("<3I", *m) for m in merges]
    for cls in ranges:
        out += [struct.pack("<2I", a, b) for a, b in cls]
    out.append(blob)
    return b"".join(out)


def tokenizer_file_seeds(d):
    m = [(b"t", b"h"), (b"th", b"e"), (b" ", b"t"), (b" t", b"h"), (b" th", b"e"), (b"i", b"n"), (b" ", b"a"), (b"e", b"r"),
         (b"\xc3", b"\xa9"), (b"1", b"2"), (b" ", b" "), (b"'", b"s"), (b"in", b"g")]
    write(d, "small.bin", tokenizer_file(m))
    write(d, "bytes_only.bin", tokenizer_file([]))
    write(d, "no_ranges.bin", tokenizer_file(m[:3], ranges=([], [], [])))
    write(d, "reversed_bytes.bin", tokenizer_file(m[:4], order=list(range(255, -1, -1))))
    chain = [(b"a", b"a")] + [(b"a" * (2 ** i), b"a" * (2 ** i)) for i in range(1, 6)]
    write(d, "chain.bin", tokenizer_file(chain))
    good = tokenizer_file(m)
    write(d, "truncated.bin", good[:-1])
    bad = bytearray(good)
    struct.pack_into("<I", bad, 36 + 4 * (256 + len(m) + 1) + 8, 7)  # first merge's result = a byte token
    write(d, "merge_result_is_byte.bin", bytes(bad))


def tokenizer_text_seeds(d):
    texts = {
        "ascii.txt": b"Hello, world! The quick brown fox jumps over the lazy dog.",
        "contractions.txt": b"I'm sure they'll say it's what we've done, isn't it? You'd've 'Re 'S",
        "spaces.txt": b"a  b   c\t\td\n\n\ne \r\n  \n   x    ",
        "digits.txt": b"In 2023, 1234567890 people paid $3.50 each (12%).",
        "unicode.txt": "Caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u0391\u03b2\u03b3 \U0001F600 \u00a0nbsp \u2003em \u0085nel".encode(),
        "invalid_utf8.txt": b"\xff\xfe a\x80b \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \xf0\x9f\x98",
        "code.txt": b"for (int i = 0; i < n; i++) {\n    x[i] += y[i] * 2;\n}\n",
        "endoftext.txt": b"<|endoftext|>Next document",
        "empty.txt": b"",
        "long_word.txt": b"a" * 300 + b" " + b"\xe3\x81\x82" * 50,
    }
    for name, data in texts.items():
        write(d, name, data)


if __name__ == "__main__":
    seeds = os.path.join(HERE, "seeds")
    model_seeds(os.path.join(seeds, "model"))
    tokenizer_text_seeds(os.path.join(seeds, "tokenizer"))
    tokenizer_file_seeds(os.path.join(seeds, "tokenizer_file"))
