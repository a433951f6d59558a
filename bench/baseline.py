"""The numpy baseline: ./run against bench/baseline_numpy.py, a float32 numpy GPT-2 with its own KV cache.

Both decode the same prompt greedily for the same number of tokens; the figure is decode tok/s, best
of the repeats, and their ratio. numpy's speed is its BLAS library's, so the report names the library
numpy actually loaded. The generated ids are compared too: float32 rounding differs between the two, so
they may part late on, which is not a bug; an early split would be.
"""
import json
import os

from common import BenchError, log, numpy_python, read_text, spawn, table

HERE = os.path.dirname(os.path.abspath(__file__))


def blas_name(maps):
    """A readable name for the BLAS library paths numpy reported (from its /proc/self/maps)."""
    for key, name in (("openblas", "OpenBLAS"), ("blis", "BLIS"), ("mkl", "MKL"), ("atlas", "ATLAS"),
                      ("/blas/libblas", "reference BLAS (Netlib, one thread)")):
        if key in maps.lower():
            return name
    return os.path.basename(maps.split(",")[0]) if maps and maps != "unknown" else "unknown BLAS"


def measure(engine, prompt, n, repeats, runs_dir):
    py = numpy_python()
    if py is None:
        log("no python with numpy: the numpy baseline is skipped")
        return None
    cmd = [py, os.path.join(HERE, "baseline_numpy.py"), engine.model, "--prompt-ids", prompt, "-n", str(n)]
    ours, theirs = [], []
    for rep in range(repeats):  # alternating, so that both see the same machine
        ours.append(engine.run("greedy", prompt, n, "-t", "0", timings=False))  # the later -t wins
        base = os.path.join(runs_dir, f"numpy-{rep}")
        r = spawn(cmd, base)
        if r["rc"] != 0:
            raise BenchError(f"bench/baseline_numpy.py failed: {read_text(base + '.err').strip()}")
        theirs.append(json.loads(read_text(base + ".out").strip().splitlines()[-1]))
        log(f"numpy baseline {n} tokens: decode {theirs[-1]['decode_tok_s']:.1f} tok/s "
            f"(./run greedy: {ours[-1]['decode_tok_s']:.1f})")
    o = max(ours, key=lambda r: r["decode_tok_s"])
    b = max(theirs, key=lambda r: r["decode_tok_s"])
    ids = [int(x) for x in o["stdout"].split()]
    agree = next((i for i, (x, y) in enumerate(zip(ids, b["ids"])) if x != y), min(len(ids), len(b["ids"])))
    return dict(tokens=n, ours_tok_s=o["decode_tok_s"], numpy_tok_s=b["decode_tok_s"], ratio=o["decode_tok_s"] / b["decode_tok_s"],
                numpy=b["numpy"], blas=blas_name(b["blas"]), blas_path=b["blas"], ids_agree=agree,
                cmd=engine.shown(cmd), ours_cmd=o["cmd"])


def report(b):
    return ["## Baseline: float32 numpy with its own KV cache (bench/baseline_numpy.py)\n",
            table(["", "decode tok/s", "ratio"], [
                [f"./run, greedy, {b['tokens']} tokens", f"{b['ours_tok_s']:.1f}", f"**{b['ratio']:.1f}x**"],
                [f"numpy {b['numpy']} + {b['blas']}", f"{b['numpy_tok_s']:.1f}", "1.0x"]]),
            f"\nSame prompt, same greedy algorithm, numpy on float32 through np.memmap. The generated ids agree on "
            f"the first {b['ids_agree']} of {b['tokens']} tokens (float32 rounding differs, so a late split is not a bug).\n",
            f"    {b['ours_cmd']}", f"    {b['cmd']}"]
