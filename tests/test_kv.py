#!/usr/bin/python3
"""The KV cache as a tool: --kv-type f16|int8, --prompt-cache FILE, --context-shift and --keep K.

    /usr/bin/python3 tests/test_kv.py        (uses ./run, built by `make`; about 20 s)
    GPT2C_RUN=/path/to/run /usr/bin/python3 tests/test_kv.py   (test that binary)

Against the independent float64 reference (tests/reference.py, which rounds keys and values the way each
--kv-type stores them, and applies the context-shift window rule on its own): logits, greedy ids,
perplexity. Against ./run itself only where the claim is identity: cached vs --no-cache, with vs without
--prompt-cache (cold, warm, extended and partly shared prompts), the tuned vs the plain kernels' cache
files. Every bad input the README lists for these flags: one-line error and exit 1, or one warning line
and a recomputed prompt, as documented.
Prints "ok - name" / "not ok - name: why" per assertion; exits 1 if any failed.
"""
import os
import re
import shutil
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUN = os.environ.get("GPT2C_RUN") or os.path.join(ROOT, "run")
TOKENIZER = os.path.join(ROOT, "tokenizer.bin")
sys.path.insert(0, HERE)
import make_hf_model as mk  # noqa: E402
import reference as ref  # noqa: E402
from tap import check, exit_status  # noqa: E402
from test_engine import ids_of, read_logits, rel_err, run  # noqa: E402  (running ./run, reading its output)

KV_TYPES = ("f32", "f16", "int8")
BYTES_PER_NUMBER = {"f32": 4, "f16": 2, "int8": 1}
# Logits against the reference with keys and values rounded the same way. The engine's K and V differ from
# the reference's float64 ones by float32 rounding (~1e-7 relative), so now and then a number sits on a
# rounding boundary and the two round it to neighbouring halves (or int8 steps). Measured over 384 f16 and
# 288 int8 teacher-forced steps on four random models: the median step within 5.2e-7 (f16) and 1.7e-7
# (int8), 93% and 99% of steps within 1e-5, the worst 4.1e-5 (f16) and 4.1e-4 (int8, one flipped int8
# step). The same runs against the unrounded reference: median 8.0e-5 (f16) and 2.3e-3 (int8), no step
# within 1e-5. So: the median step within 1e-5, every step within 1e-3.
KV_MEDIAN, KV_WORST = 1e-5, 1e-3




def stderr_lines(r):
    return r.stderr.decode(errors="replace").splitlines()


def one_error_line(r, *keywords):
    """Exit 1, stderr exactly one 'error: ' line that mentions every keyword, nothing on stdout."""
    lines = stderr_lines(r)
    return (r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and r.stdout == b""
            and all(k.lower() in lines[0].lower() for k in keywords))


def decided_steps(rows, tol):
    """Leading greedy steps whose top-two margin exceeds 2 * tol * max|logit|: an engine within tol of the
    reference must choose the same token there."""
    for i, lg in enumerate(rows):
        a, b = np.sort(lg)[-2:]
        if b - a <= 2 * tol * np.max(np.abs(lg)):
            return i
    return len(rows)


# ---------------------------------------------------------------------------------------- --kv-type

def kv_type_checks(tag, mbin, p, tmp, rng):
    """Each type: logits and greedy ids against the reference rounded the same way, cached = --no-cache
    (tuned and plain kernels), the summary's and --timings' bytes per token, --ppl."""
    L, C, V = p["n_layer"], p["n_embd"], p["vocab_size"]
    prompt = [int(x) for x in rng.integers(0, min(V, 50256), size=6)]
    pids = " ".join(map(str, prompt))
    n = 14
    for kv in KV_TYPES:
        lf, tf = os.path.join(tmp, "kv.logits"), os.path.join(tmp, "kv.csv")
        r = run(mbin, "--prompt-ids", pids, "-n", n, "-t", 0, "--print-ids", "--kv-type", kv, "--logits", lf,
                "--timings", tf)
        if not check(f"{tag}: --kv-type {kv} greedy run exits 0", r.returncode == 0, r.stderr.decode()[-300:]):
            continue
        got, lg = ids_of(r.stdout), read_logits(lf, V)
        errs = [rel_err(lg[i].astype(np.float64), ref.last_logits(p, prompt + got[:i], kv)) for i in range(len(got))]
        check(f"{tag}: --kv-type {kv}: logits match the reference with {kv} keys and values (median step "
              f"{np.median(errs):.1e} <= {KV_MEDIAN:g}, worst {max(errs):.1e} <= {KV_WORST:g})",
              len(errs) == n and np.median(errs) <= KV_MEDIAN and max(errs) <= KV_WORST, [f"{e:.1e}" for e in errs])
        want, rows = ref.greedy_steps(p, prompt, n, kv=kv)
        k = decided_steps(rows, KV_WORST)
        check(f"{tag}: --kv-type {kv}: greedy ids equal the reference's (the margins decide {k} of {n} steps)",
              got[:k] == want[:k], f"run {got} vs ref {want}")
        per_token = 2 * L * (C * BYTES_PER_NUMBER[kv] + (C // 32 * 2 if kv == "int8" else 0))
        m = re.search(r"^kv cache: (\d+) of \d+ positions, [0-9.]+ MiB \((\d+) bytes/token\)$", r.stderr.decode(), re.M)
        with open(tf) as f:
            kvb = [int(line.split(",")[3]) for line in f.read().splitlines()[1:]]
        check(f"{tag}: --kv-type {kv}: the summary and --timings count {per_token} bytes per token",
              m is not None and int(m.group(2)) == per_token and len(kvb) == n
              and all(b == (len(prompt) + i + 1) * per_token for i, b in enumerate(kvb)), f"{m and m.group(0)} {kvb[:3]}")
        for kernels in ([], ["--reference"]):
            for sampling in (["-t", 0], ["-t", 0.9, "--top-k", 30, "-s", 5]):
                outs = []
                for nc in ([], ["--no-cache"]):
                    r = run(mbin, "--prompt-ids", pids, "-n", n, "--print-ids", "-q", "--kv-type", kv, "--logits", lf,
                            *kernels, *sampling, *nc)
                    with open(lf, "rb") as f:
                        outs.append((r.returncode, r.stdout, f.read()))
                check(f"{tag}: --kv-type {kv} {' '.join(map(str, kernels + sampling))}: cached and --no-cache stdout "
                      f"and --logits byte-identical", outs[0] == outs[1] and outs[0][0] == 0 and len(ids_of(outs[0][1])) == n,
                      f"{outs[0][1][:80]!r} vs {outs[1][1][:80]!r}")


def kv_ppl_checks(tag, mbin, p, tmp):
    if not os.path.exists(TOKENIZER):
        print(f"# skip: {TOKENIZER} not found, so --ppl with --kv-type was not run")
        return
    text = os.path.join(tmp, "ppl.txt")
    with open(text, "w") as f:
        f.write("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
                "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.")
    ids = ids_of(run("--tokenize", "-f", text, "-z", TOKENIZER).stdout)
    for kv in KV_TYPES:
        r = run(mbin, "--ppl", text, "--kv-type", kv, "-z", TOKENIZER)
        m = re.search(r"mean nll: (-?[0-9.]+)", r.stdout.decode())
        _, nll, _ = ref.ppl(p, ids, kv=kv)
        check(f"{tag}: --ppl --kv-type {kv} ({len(ids)} tokens, two chunks) equals the reference's with {kv} keys "
              f"and values within {KV_MEDIAN:g}", m is not None and abs(float(m.group(1)) - nll) <= KV_MEDIAN * abs(nll),
              f"run {m and m.group(1)} vs ref {nll:.6f}")


# What rounding keys and values costs, on this peaked model, scoring the first 1000 characters of
# bench/quality.txt (230 teacher-forced positions): measured f16 median 3.2e-4, worst 1.2e-3, top-1 99.6%;
# int8 median 8.6e-3, worst 2.4e-2, top-1 97.8% (README, "Smaller caches", has the same on bigger models).
QUALITY = {"f16": (1e-3, 5e-3, 0.98), "int8": (2e-2, 1e-1, 0.95)}  # median, worst, top-1 at least


def kv_quality_checks(tag, mbin, tmp):
    text = os.path.join(tmp, "quality.txt")
    with open(os.path.join(ROOT, "bench", "quality.txt")) as f, open(text, "w") as out:
        out.write(f.read()[:1000])
    logits = {}
    for kv in KV_TYPES:
        lf = os.path.join(tmp, f"quality-{kv}.logits")
        r = run(mbin, "--ppl", text, "--kv-type", kv, "--logits", lf, "-z", TOKENIZER)
        logits[kv] = read_logits(lf, 50257) if r.returncode == 0 else None
        os.remove(lf)
    if not check(f"{tag}: --ppl --logits with each --kv-type", all(x is not None for x in logits.values()), "a run failed"):
        return
    f32 = logits["f32"].astype(np.float64)
    for kv, (median, worst, top1) in QUALITY.items():
        err = np.abs(logits[kv] - f32).max(axis=1) / np.abs(f32).max(axis=1)
        agree = (logits[kv].argmax(axis=1) == f32.argmax(axis=1)).mean()
        check(f"{tag}: {kv} keys and values against f32 over {len(err)} positions: logit error median "
              f"{np.median(err):.1e} (1e-5..{median:g}), worst {err.max():.1e} (<= {worst:g}), top-1 agreement "
              f"{100 * agree:.1f}% (>= {100 * top1:g}%)",
              1e-5 <= np.median(err) <= median and err.max() <= worst and agree >= top1, "outside the bounds")


def kv_type_errors(mbin_hs16):
    r = run(mbin_hs16, "--prompt-ids", "1 2", "-n", 2, "--kv-type", "int8")
    check("--kv-type int8 on a model with head size 16: one error line naming the head size, exit 1",
          one_error_line(r, "int8", "head size", "16"), stderr_lines(r))
    for bad in ("int4", "F16", ""):
        r = run(mbin_hs16, "--prompt-ids", "1 2", "-n", 2, "--kv-type", bad)
        check(f"--kv-type {bad!r}: one error line, exit 1", one_error_line(r, "--kv-type"), stderr_lines(r))
    for flag in ("--kv-type", "--prompt-cache", "--keep"):
        r = run(mbin_hs16, "--prompt-ids", "1 2", "-n", 2, flag)
        check(f"{flag} without a value: one error line, exit 1", one_error_line(r, flag, "value"), stderr_lines(r))


# ---------------------------------------------------------------------------------- --prompt-cache

NUMPY_TYPE = {"f32": "<f4", "f16": "<f2", "int8": "i1"}
ONE_STEP = {"f32": 1e-5, "f16": 1e-3, "int8": 1e-2}  # float32 noise; a half's step (2^-11); an int8 step (1/127)


def read_prompt_cache(path, kv, n_layer, C):
    """A --prompt-cache file read by the format README.md gives ("The prompt cache file"), independently of
    run.c: the header fields, the tokens, and each layer's K and V rows as float64."""
    with open(path, "rb") as f:
        d = f.read()
    magic, version, kv_type, kernels, L, embd, n_ctx, n = struct.unpack_from("<4s7I", d, 0)
    out = dict(magic=magic, version=version, kv_type=kv_type, kernels=kernels, n_layer=L, n_embd=embd, n_ctx=n_ctx,
               n_tokens=n, fingerprint=struct.unpack_from("<Q", d, 32)[0], zeros=d[40:64] == bytes(24), size=len(d))
    out["tokens"] = list(struct.unpack_from(f"<{n}i", d, 64))
    off, layers = 64 + 4 * n, []
    for _ in range(n_layer):
        arrays = []
        for _ in range(2):
            a = np.frombuffer(d, NUMPY_TYPE[kv], n * C, off).astype(np.float64).reshape(n, C)
            off += n * C * BYTES_PER_NUMBER[kv]
            arrays.append(a)
        for i in range(2 if kv == "int8" else 0):
            s = np.frombuffer(d, "<f2", n * C // 32, off).astype(np.float64).reshape(n, C // 32, 1)
            off += n * C // 32 * 2
            arrays[i] = (arrays[i].reshape(n, C // 32, 32) * s).reshape(n, C)
        layers.append(arrays)
    out["layers"], out["end"] = layers, off
    return out


def pc_lines(r):
    return [x for x in stderr_lines(r) if x.startswith("prompt cache:")]


def prefill_count(r):
    m = re.search(r"^prefill: (\d+) tokens", r.stderr.decode(), re.M)
    return int(m.group(1)) if m else None


def prompt_cache_identity(tag, mbin, p, tmp, rng):
    """Cold, warm, extended, shorter and partly shared prompts: the same stdout and --logits as without
    --prompt-cache, the reuse the longest common prefix gives, and the file as the README describes it."""
    L, C, V, P = p["n_layer"], p["n_embd"], p["vocab_size"], p["n_ctx"]
    base = [int(x) for x in rng.integers(0, min(V, 50256), size=26)]
    other = [int(x) for x in rng.integers(0, min(V, 50256), size=10)]
    # (name, prompt, expected reuse, expected save) in this order, one cache file per type and sampling
    steps = [("cold", base[:20], 0, True), ("warm", base[:20], 19, False), ("extended", base, 20, True),
             ("shorter", base[:9], 8, True), ("partly shared", base[:12] + other, 9, True),
             ("one token", base[:1], 0, True), ("nothing shared", other, 0, True)]
    n = 10
    lf = os.path.join(tmp, "pc.logits")
    for kv in KV_TYPES:
        for sampling in (["-t", 0], ["-t", 0.9, "--top-k", 40, "-s", 3]):
            cache = os.path.join(tmp, f"prompt-{kv}.kv")
            if os.path.exists(cache):
                os.remove(cache)
            label = f"{tag}: --prompt-cache, --kv-type {kv} {' '.join(map(str, sampling))}"
            for name, prompt, reuse, save in steps:
                pids = " ".join(map(str, prompt))
                outs = []
                for pc in ([], ["--prompt-cache", cache]):
                    r = run(mbin, "--prompt-ids", pids, "-n", n, "--print-ids", "--kv-type", kv, "--logits", lf,
                            *sampling, *pc)
                    with open(lf, "rb") as f:
                        outs.append((r.returncode, r.stdout, f.read()))
                want = [f"prompt cache: reused {reuse} of {len(prompt)} prompt tokens ({cache})"]
                if save:
                    want.append(f"prompt cache: saved {len(prompt)} tokens, {os.path.getsize(cache)} bytes ({cache})")
                check(f"{label}, {name} ({len(prompt)} tokens): stdout and --logits byte-identical to the run without it; "
                      f"stderr says '{want[0]}'{' and saves' if save else ', no save'}; prefill counts {len(prompt) - reuse}",
                      outs[0] == outs[1] and outs[0][0] == 0 and pc_lines(r) == want and prefill_count(r) == len(prompt) - reuse
                      and not any(x.startswith("warning") for x in stderr_lines(r)),
                      f"{pc_lines(r)} vs {want}; prefill {prefill_count(r)}; same output {outs[0] == outs[1]}")
            # The file holds the last prompt: its rows against the reference's keys and values, rounded the
            # same way; a number on a rounding boundary may land one step away (an f16 or an int8 step).
            f = read_prompt_cache(cache, kv, L, C)
            kvs = []
            ref.hidden(p, other, kv, keys_values=kvs)
            worst = max(rel_err(a, b) for (ka, va), (kb, vb) in zip(f["layers"], kvs) for a, b in ((ka, kb), (va, vb)))
            check(f"{label}: the file is laid out as the README says (header, tokens, per layer K then V rows"
                  f"{', then their scales' if kv == 'int8' else ''}) and its rows are the reference's keys and values "
                  f"(worst {worst:.1e} of the largest)",
                  f["magic"] == b"GPKV" and f["version"] == 1 and f["kv_type"] == KV_TYPES.index(kv) and f["kernels"] in (8, 16)
                  and (f["n_layer"], f["n_embd"], f["n_ctx"], f["n_tokens"]) == (L, C, P, len(other)) and f["zeros"]
                  and f["tokens"] == other and f["end"] == f["size"] and worst <= ONE_STEP[kv],
                  {k: v for k, v in f.items() if k != "layers"})
    # The plain kernels sum in another order than the tuned ones: their rows differ in the last bits, so a
    # cache from one is not reused by the other (the output would no longer be identical).
    cache = os.path.join(tmp, "kernels.kv")
    pids = " ".join(map(str, base))
    run(mbin, "--prompt-ids", pids, "-n", 1, "--print-ids", "-q", "--prompt-cache", cache)
    a = run(mbin, "--prompt-ids", pids, "-n", n, "--print-ids", "-t", 0, "--reference", "--prompt-cache", cache)
    b = run(mbin, "--prompt-ids", pids, "-n", n, "--print-ids", "-t", 0, "--reference")
    warn = [x for x in stderr_lines(a) if x.startswith("warning:")]
    check(f"{tag}: a tuned-kernel cache with --reference: one warning, recomputed, same output as --reference alone",
          len(warn) == 1 and "kernels" in warn[0] and a.stdout == b.stdout and pc_lines(a)[:1] ==
          [f"prompt cache: reused 0 of {len(base)} prompt tokens ({cache})"], f"{warn} {pc_lines(a)}")
    r = run(mbin, "--prompt-ids", pids, "-n", n, "--print-ids", "-q", "--reference", "--prompt-cache", cache)
    check(f"{tag}: -q: no prompt cache lines either", r.returncode == 0 and r.stderr == b"", r.stderr[-200:])


def prompt_cache_bad_input(mbin, other_bin, p, tmp):
    """Each bad input the README lists, with its documented behaviour."""
    prompt = " ".join(str(i) for i in range(100, 120))
    args = [mbin, "--prompt-ids", prompt, "-n", 4, "--print-ids", "-s", 1]
    baseline = run(*args).stdout
    cache = os.path.join(tmp, "bad.kv")

    def fresh(kv="f32", model=mbin):
        if os.path.exists(cache):
            os.remove(cache)
        r = run(model, "--prompt-ids", prompt, "-n", 1, "--print-ids", "-q", "--kv-type", kv, "--prompt-cache", cache)
        with open(cache, "rb") as f:
            return r.returncode == 0 and f.read()

    def replaced(name, keyword, data=None):
        """A cache that is valid but not for this run, or damaged: one warning naming why, computed from
        scratch with the same output, the file replaced by a good one (the next run reuses it)."""
        if data is not None:
            with open(cache, "wb") as f:
                f.write(data)
        r = run(*args, "--prompt-cache", cache)
        warn = [x for x in stderr_lines(r) if x.startswith("warning:")]
        again = run(*args, "--prompt-cache", cache)
        check(f"--prompt-cache, {name}: one 'warning:' line ({keyword}), computed from scratch, same output, file replaced",
              r.returncode == 0 and len(warn) == 1 and keyword in warn[0] and cache in warn[0] and r.stdout == baseline
              and pc_lines(r)[:1] == [f"prompt cache: reused 0 of 20 prompt tokens ({cache})"] and len(pc_lines(r)) == 2
              and again.stdout == baseline and pc_lines(again) == [f"prompt cache: reused 19 of 20 prompt tokens ({cache})"],
              f"rc {r.returncode}, {warn}, {pc_lines(r)}, then {pc_lines(again)}")

    def untouched_error(name, path, data, *keywords):
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        before = open(path, "rb").read() if os.path.isfile(path) else None
        r = run(*args, "--prompt-cache", path)
        after = open(path, "rb").read() if os.path.isfile(path) else None
        check(f"--prompt-cache, {name}: one 'error:' line, exit 1, nothing else done, file untouched",
              one_error_line(r, *keywords) and before == after, stderr_lines(r))

    with open(mbin, "rb") as f:
        model_bytes = f.read()
    untouched_error("FILE is a model.bin", cache, model_bytes, "not a prompt cache")
    untouched_error("FILE is a text file", cache, b"Once upon a time\n", "not a prompt cache")
    untouched_error("FILE is empty", cache, b"", "not a prompt cache")
    untouched_error("FILE is a directory", tmp, None, "directory")
    untouched_error("FILE's directory does not exist", os.path.join(tmp, "no", "such", "dir.kv"), None, "cannot write")
    untouched_error("FILE's directory is a regular file", os.path.join(mbin, "x.kv"), None, "cannot")
    for extra, keyword in ((["--no-cache"], "--no-cache"), (["--ppl", mbin], "--ppl")):
        r = run(*args, "--prompt-cache", cache, *extra)
        check(f"--prompt-cache with {extra[0]}: one 'error:' line, exit 1", one_error_line(r, "--prompt-cache", keyword),
              stderr_lines(r))

    good = fresh()
    replaced("a cache from another model of the same shape", "another model", fresh(model=other_bin))
    replaced("a cache with f16 keys and values, run with f32", "f16", fresh(kv="f16"))
    replaced("truncated by 100 bytes", "truncated", good[:-100])
    replaced("truncated to its header", "truncated", good[:64])
    replaced("one byte too many", "truncated", good + b"\0")
    replaced("version 2", "version", good[:4] + struct.pack("<I", 2) + good[8:])
    replaced("n_tokens larger than the file holds", "truncated", good[:28] + struct.pack("<I", 21) + good[32:])
    replaced("n_tokens beyond the context", "inconsistent", good[:28] + struct.pack("<I", 49) + good[32:])
    replaced("n_tokens 0", "inconsistent", good[:28] + struct.pack("<I", 0) + good[32:])
    replaced("a token id outside the vocabulary", "vocabulary", good[:64] + struct.pack("<i", 60000) + good[68:])
    replaced("another n_embd in the header", "another model", good[:20] + struct.pack("<I", 32) + good[24:])
    replaced("a changed fingerprint", "another model", good[:32] + bytes(8) + good[40:])
    left = [x for x in os.listdir(tmp) if ".tmp." in x]
    check("--prompt-cache leaves no temporary files behind", not left, left)


# ------------------------------------------------------------------------------ --context-shift

RTOL = 1e-5  # float32 engine against the float64 reference, f32 keys and values (as tests/test_engine.py)


def expected_shifts(n_prompt, n, n_ctx, keep):
    """(shifts, tokens recomputed) the window rule gives for n generated tokens: each shift recomputes the
    tokens left in the window."""
    length, shifts, recomputed = n_prompt, 0, 0
    for _ in range(n):
        if length == n_ctx:
            length -= (length - keep) // 2
            shifts, recomputed = shifts + 1, recomputed + length
        length += 1
    return shifts, recomputed


SHIFT_LINE = re.compile(r"^context shifts: (\d+), (\d+) tokens recomputed in ([0-9.]+) s$", re.M)


def context_shift_checks(tag, mbin, p, tmp, rng):
    """Past n_ctx against the reference's window rule, for K = 0 and K > 0, with and without the cache."""
    V, P = p["vocab_size"], p["n_ctx"]
    prompt = [int(x) for x in rng.integers(0, min(V, 50256), size=30)]
    pids = " ".join(map(str, prompt))
    n = 100  # more than twice the context: several shifts
    lf = os.path.join(tmp, "shift.logits")
    for keep in (0, 7):
        shifts, recomputed = expected_shifts(len(prompt), n, P, keep)
        want, rows = ref.greedy_steps(p, prompt, n, keep=keep)
        out = {}
        for nc in ([], ["--no-cache"]):
            label = f"{tag}: --context-shift --keep {keep}{' --no-cache' if nc else ''}, {len(prompt)}-token prompt, -n {n}"
            r = run(mbin, "--prompt-ids", pids, "-n", n, "-t", 0, "--print-ids", "--context-shift", "--keep", keep,
                    "--logits", lf, *nc)
            got, lg = ids_of(r.stdout), read_logits(lf, V)
            with open(lf, "rb") as f:
                out[bool(nc)] = (r.stdout, f.read())
            k = decided_steps(rows, RTOL)
            check(f"{label}: {n} greedy ids equal the reference's with the same window rule (the margins decide "
                  f"{k} of {len(want)} steps; {len(set(got))} distinct ids, so the windows differ)",
                  r.returncode == 0 and len(got) == n and got[:k] == want[:k] and len(set(got)) >= 10,
                  f"rc {r.returncode}: run {got} vs ref {want}; {stderr_lines(r)[-3:]}")
            if lg is None or lg.shape[0] != len(got):
                check(f"{label}: --logits has a row per token", False, f"{None if lg is None else lg.shape}")
                continue
            seen = ref.windows(prompt, got, P, keep)
            errs = [rel_err(lg[i].astype(np.float64), ref.last_logits(p, w)) for i, w in enumerate(seen)]
            check(f"{label}: every step's logits equal the reference's on the same window within {RTOL:g} "
                  f"(worst {max(errs):.1e}; windows of {min(map(len, seen))}..{max(map(len, seen))} tokens)",
                  max(errs) <= RTOL, f"{[f'{e:.1e}' for e in errs]}")
            m = SHIFT_LINE.search(r.stderr.decode())
            check(f"{label}: stderr 'context shifts: {shifts}, {recomputed} tokens recomputed in X s', and "
                  f"'stopped: generated the requested {n} tokens'",
                  m is not None and (int(m.group(1)), int(m.group(2))) == (shifts, recomputed)
                  and f"stopped: generated the requested {n} tokens" in stderr_lines(r), stderr_lines(r)[-6:])
        check(f"{tag}: --context-shift --keep {keep}: cached and --no-cache stdout and --logits byte-identical",
              out[False] == out[True], "differ")
    for kv, sampling in (("f32", ["-s", 11]), ("int8", ["-t", 0.8, "--top-k", 50, "-s", 12])):
        outs = [run(mbin, "--prompt-ids", pids, "-n", 60, "--print-ids", "-q", "--context-shift", "--keep", 3,
                    "--kv-type", kv, *sampling, *nc).stdout for nc in ([], ["--no-cache"])]
        check(f"{tag}: --context-shift --keep 3, --kv-type {kv}, sampling: cached and --no-cache stdout identical",
              outs[0] == outs[1] and len(ids_of(outs[0])) == 60, f"{outs[0][:80]!r} vs {outs[1][:80]!r}")
    cache = os.path.join(tmp, "shift.kv")
    outs = [run(mbin, "--prompt-ids", pids, "-n", 40, "--print-ids", "-q", "--context-shift", "-s", 2, *pc).stdout
            for pc in ([], ["--prompt-cache", cache], ["--prompt-cache", cache])]
    saved = read_prompt_cache(cache, "f32", p["n_layer"], p["n_embd"])["tokens"] if os.path.exists(cache) else None
    check(f"{tag}: --context-shift with --prompt-cache, cold and warm: the same output, and the file holds the prompt",
          outs[0] == outs[1] == outs[2] and saved == prompt, f"{saved}")
    r = run(mbin, "--prompt-ids", pids, "-n", 30, "-t", 0, "--print-ids")
    check(f"{tag}: without --context-shift generation still stops at the context limit and says so",
          r.returncode == 0 and len(ids_of(r.stdout)) == P - len(prompt) and
          f"stopped: context limit ({P} tokens) reached after {P - len(prompt)} of 30 requested tokens" in stderr_lines(r)
          and SHIFT_LINE.search(r.stderr.decode()) is None, stderr_lines(r)[-5:])
    r = run(mbin, "--prompt-ids", pids, "-n", 0, "--context-shift", "--keep", P - 2, "--print-ids")
    check(f"{tag}: --keep {P - 2} (n_ctx - 2) is accepted; -n 0 reports 'context shifts: 0, 0 tokens recomputed'",
          r.returncode == 0 and "context shifts: 0, 0 tokens recomputed in 0.000 s" in stderr_lines(r), stderr_lines(r)[-5:])
    for args, keywords in (([ "--keep", 3], ["--keep", "--context-shift"]),
                           (["--context-shift", "--keep", P - 1], ["--keep", str(P - 1), str(P)]),
                           (["--context-shift", "--keep", 1000], ["--keep", "1000"]),
                           (["--context-shift", "--keep", -1], ["--keep"]),
                           (["--context-shift", "--keep", "x"], ["--keep"]),
                           (["--context-shift", "--ppl", mbin], ["--context-shift", "--ppl"])):
        r = run(mbin, "--prompt-ids", pids, "-n", 5, *args)
        check(f"{' '.join(map(str, args))}: one 'error:' line, exit 1", one_error_line(r, *keywords), stderr_lines(r))


# ------------------------------------------------------------------------------------------------ main

def main():
    if not (os.path.isfile(RUN) and os.access(RUN, os.X_OK)):
        check("the run binary exists", False, f"{RUN} not found; build it with make")
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="test_kv_")
    try:
        # n_ctx 48 and GPT-2's vocabulary (text and --ppl), two heads of 32 (int8 blocks), larger weights
        # than GPT-2's init so that attention is peaked, as in a trained model.
        d = os.path.join(tmp, "hf_peaked")
        mk.make_model(d, layers=2, heads=2, embd=64, ctx=48, vocab=50257, std=0.2, seed=13, keep=False)
        mbin = os.path.join(tmp, "peaked.bin")
        r = mk.export(d, mbin)
        if not check("export the test model", r.returncode == 0, r.stderr):
            sys.exit(exit_status())
        p = ref.load(d)
        tag = "2L 2H C64 ctx48 std0.2"
        rng = np.random.default_rng(13)
        kv_type_checks(tag, mbin, p, tmp, rng)
        kv_ppl_checks(tag, mbin, p, tmp)
        if os.path.exists(TOKENIZER):
            kv_quality_checks(tag, mbin, tmp)
        kv_type_errors(mk.exported_model(tmp, layers=1, heads=4, embd=64, ctx=16, vocab=64))
        context_shift_checks(tag, mbin, p, tmp, rng)
        prompt_cache_identity(tag, mbin, p, tmp, rng)
        prompt_cache_bad_input(mbin, mk.exported_model(tmp, layers=2, heads=2, embd=64, ctx=48, vocab=50257, std=0.2,
                                                       seed=14), p, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
