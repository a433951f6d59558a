"""Tokenizer speed: `./run --tokenize -f FILE` on inputs that are slow for a naive BPE.

A 20,000-character word is one pre-tokenizer piece, so the BPE merges run over 20,000 symbols at once
(quadratic without run.c's heap); 3,000 emoji without separators are one piece of 12,000 bytes. Each
input is timed as a whole process, best of the repeats; "hello" gives the startup time to subtract.
"""
import os

from common import BenchError, ROOT, log, read_text, shown, spawn, table


def inputs():
    x, word = 2024, []
    for _ in range(20000):  # a fixed LCG: the same word on every machine
        x = (x * 1103515245 + 12345) % 2**31
        word.append(chr(ord("a") + (x >> 16) % 26))
    return [('startup ("hello")', "hello"),
            ("20,000-character word (random a-z)", "".join(word)),
            ("20,000 x 'a'", "a" * 20000),
            ("3,000 emoji (one piece)", "".join(chr(0x1F600 + i % 80) for i in range(3000)))]  # U+1F600..U+1F64F


def measure(run_exe, out_dir, runs_dir, repeats):
    tok_bin = os.path.join(ROOT, "tokenizer.bin")
    if not os.path.exists(tok_bin):
        log("tokenizer.bin not found: tokenizer timings skipped")
        return None
    rows = []
    for i, (name, text) in enumerate(inputs()):
        path = os.path.join(out_dir, f"tokenize-{i}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        cmd = [run_exe, "--tokenize", "-f", path, "-z", tok_bin]
        best = None
        for rep in range(max(3, repeats)):
            base = os.path.join(runs_dir, f"tokenize-{i}-{rep}")
            r = spawn(cmd, base)
            if r["rc"] != 0:
                raise BenchError(f"tokenizer on {name}: exit {r['rc']}: {read_text(base + '.err').strip()}")
            best = min(best or r["wall_s"], r["wall_s"])
        tokens = len(read_text(base + ".out").split())
        rows.append(dict(input=name, chars=len(text), bytes=len(text.encode()), tokens=tokens, ms=best * 1e3,
                         cmd=shown(cmd)))
        log(f"tokenize {name}: {tokens} tokens, {best * 1e3:.1f} ms")
    for r in rows:
        r["net_ms"] = max(0.0, r["ms"] - rows[0]["ms"])
    return rows


def report(rows):
    return ["## Tokenizer (`./run --tokenize -f FILE`, whole process, best of repeats)\n",
            table(["input", "characters", "UTF-8 bytes", "tokens", "ms", "ms minus startup"],
                  [[t["input"], f"{t['chars']:,}", f"{t['bytes']:,}", f"{t['tokens']:,}", f"{t['ms']:.1f}", f"{t['net_ms']:.1f}"]
                   for t in rows]),
            f"\nCommand, e.g.: `{rows[1]['cmd']}`"]
