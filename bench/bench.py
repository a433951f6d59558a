#!/usr/bin/env python3
"""The KV-cache mini-lab: times ./run with and without its KV cache, against this machine's limits.

    python3 bench/bench.py [--model model.bin] [--repeats 3] [--long]        (or: make bench)

In one run, interleaved (cache, no-cache, cache, no-cache, ...), best of --repeats:
  * total wall time to generate 64, 128, 256 tokens (and 500 with --long) from a 16-token prompt, with
    the KV cache and with --no-cache, and the speedup; the generated ids of both modes must be
    byte-identical (a mismatch fails the bench: exit status 1);
  * prefill tok/s on a 512-token prompt and decode tok/s (from ./run's `prefill:` / `decode:` lines);
  * peak RSS of every run (wait4 rusage) and the KV-cache bytes (`kv cache:` line);
  * this machine's read bandwidth and FMA peak (bench/machine, before and after, best), so decode and
    prefill are also shown as fractions of their physical limits; then --roofline-pairs more cached
    decode runs, each between two bandwidth samples, since this bandwidth changes from minute to minute;
  * tokenizer time for a 20,000-character word and 3,000 emoji (./run --tokenize -f FILE);
  * optionally a float32 numpy baseline with its own KV cache (bench/baseline_numpy.py).
Writes bench/out/results.md, results.json and three plots; prints the table at the end.

If the model file is missing, a random-weight GPT-2 124M-shaped checkpoint is generated once into
bench/out/gpt2-124M-random.bin (tests/make_hf_model.py + export_gpt2.py) and reused: speed does not
depend on the values. The driver is standard-library Python; numpy is used only in helper processes
(model generation, baseline), run with an interpreter that has it (this one, else /usr/bin/python3).
Runs longer than --max-run-seconds (default 20) are measured once, not --repeats times, which keeps the
default run near 3 minutes on a 2-core machine: their timing averages over hundreds of steps anyway.
"""
import argparse
import array
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RANDOM_MODEL = "gpt2-124M-random.bin"
SHAPE_124M = dict(n_layer=12, n_head=12, n_embd=768, n_ctx=1024, vocab_size=50257)

T0 = time.time()
CURRENT_CHILD = None  # the ./run (or helper) process we are waiting for, killed on Ctrl-C


class BenchError(Exception):
    """An environment problem: printed as one `error:` line, exit status 2."""


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def cmdpath(arg):
    """A command-line argument as typed from the repository root: ./run, bench/out/..."""
    if not os.path.isabs(arg) or not os.path.exists(arg):
        return arg
    r = rel(arg)
    return "./" + r if r == "run" else r


def rel(path):
    """Path as the user would type it from the repository root."""
    r = os.path.relpath(path, ROOT)
    return path if r.startswith("..") else r


# ----------------------------------------------------------------------------
# the model

def read_config(path):
    with open(path, "rb") as f:
        h = f.read(32)
    if len(h) < 32 or h[:4] != b"GPT2":
        raise BenchError(f"{path} is not a model.bin (bad magic); see the model.bin section of README.md")
    version, L, NH, C, P, V = struct.unpack("<6I", h[4:28])
    if version != 1:
        raise BenchError(f"{path}: model.bin version {version}, this bench knows version 1")
    return dict(n_layer=L, n_head=NH, n_embd=C, n_ctx=P, vocab_size=V, eps=struct.unpack("<f", h[28:32])[0])


def expected_size(cfg):
    """Bytes of a model.bin with this config: 256-byte header, tensors aligned to 64 bytes."""
    L, C, P, V = cfg["n_layer"], cfg["n_embd"], cfg["n_ctx"], cfg["vocab_size"]
    sizes = [V * C, P * C] + [C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C] * L + [C, C]
    off = 256
    for n in sizes:
        off = (off + 63) // 64 * 64 + 4 * n
    return off


def numpy_python():
    """An interpreter that can import numpy, or None."""
    for py in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if py and os.path.exists(py):
            if subprocess.run([py, "-c", "import numpy"], capture_output=True).returncode == 0:
                return py
    return None


def run_helper(cmd, what):
    log(f"{what}: {' '.join(shlex.quote(rel(c) if os.path.isabs(c) else c) for c in cmd)}")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip().splitlines()[-1:] or ''}")
    return r.returncode == 0


def random_model(out_dir):
    """bench/out/gpt2-124M-random.bin, generated once and reused."""
    path = os.path.join(out_dir, RANDOM_MODEL)
    if os.path.exists(path):
        try:
            cfg = read_config(path)
            if all(cfg[k] == v for k, v in SHAPE_124M.items()) and os.path.getsize(path) == expected_size(cfg):
                return path
        except (BenchError, OSError):
            pass
        log(f"{rel(path)} is incomplete or has the wrong shape: generating it again")
    py = numpy_python()
    if py is None:
        raise BenchError("the model is missing and no python with numpy was found to generate a random one "
                         "(install python3-numpy, or give --model PATH)")
    tmp_bin, hf_dir = path + ".tmp", os.path.join(out_dir, "hf-124M-random.tmp")
    ok = False
    # The real path: a Hugging Face-layout checkpoint, converted by the real exporter.
    if os.path.exists(os.path.join(ROOT, "tests", "make_hf_model.py")) and os.path.exists(os.path.join(ROOT, "export_gpt2.py")):
        ok = (run_helper([py, os.path.join(ROOT, "tests", "make_hf_model.py"), hf_dir, "--gpt2-124m"], "random HF checkpoint")
              and run_helper([sys.executable, os.path.join(ROOT, "export_gpt2.py"), hf_dir, tmp_bin], "export"))
        shutil.rmtree(hf_dir, ignore_errors=True)
    if not ok:  # fallback: write model.bin directly
        ok = run_helper([py, os.path.join(BENCH, "make_random_model.py"), tmp_bin], "random model.bin (fallback writer)")
    if not ok or not os.path.exists(tmp_bin) or os.path.getsize(tmp_bin) != expected_size(read_config(tmp_bin)):
        if os.path.exists(tmp_bin):
            os.remove(tmp_bin)
        raise BenchError("the model is missing and generating a random one failed (see the lines above)")
    os.replace(tmp_bin, path)
    return path


def resolve_model(arg, out_dir):
    for cand in (arg, os.path.join(ROOT, arg)):
        if os.path.isfile(cand):
            return os.path.abspath(cand), False
    log(f"model '{arg}' not found: using a random-weight GPT-2 124M-shaped checkpoint (speed does not depend on the values)")
    return random_model(out_dir), True


# ----------------------------------------------------------------------------
# running things

def spawn(cmd, stdout_path, stderr_path, timeout=None):
    """Runs cmd from the repository root; returns wall seconds, rusage and exit code (wait4).
    With a timeout, the process is killed when it runs longer and the result has timed_out set."""
    global CURRENT_CHILD
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        CURRENT_CHILD = p
        fired, lock, timer = [], threading.Lock(), None
        if timeout:
            def kill():
                with lock:
                    if not fired:  # the child has exited but is not reaped yet, so its pid is still ours
                        fired.append(True)
                        os.kill(p.pid, signal.SIGKILL)
            timer = threading.Timer(timeout, kill)
            timer.start()
            os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # wait for the exit without reaping
            wall = time.perf_counter() - t0
            with lock:
                timed_out = bool(fired)
                fired.append(False)  # from here on the timer does nothing
            timer.cancel()
        _, status, ru = os.wait4(p.pid, 0)
        if not timeout:
            wall, timed_out = time.perf_counter() - t0, False
        CURRENT_CHILD = None
    p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (status >> 8)
    return dict(wall_s=wall, maxrss_kb=ru.ru_maxrss, cpu_s=ru.ru_utime + ru.ru_stime, rc=p.returncode, timed_out=timed_out)


SUMMARY = {
    "prefill": re.compile(r"^prefill: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", re.M),
    "decode": re.compile(r"^decode: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", re.M),
    "kv": re.compile(r"^kv cache: (\d+) of (\d+) positions, [\d.]+ MiB \((\d+) bytes/token\)", re.M),
}
THREADS_RE = re.compile(r"^model:.*?(\d+) threads?\s*$", re.M)


def parse_summary(stderr, what):
    out = {}
    for key, rx in SUMMARY.items():
        m = rx.search(stderr)
        if not m:
            raise BenchError(f"{what}: no '{key}:' line in ./run's stderr (did the summary format change?):\n{stderr.strip()}")
        out[key] = m.groups()
    m = THREADS_RE.search(stderr)
    r = dict(prefill_tokens=int(out["prefill"][0]), prefill_s=float(out["prefill"][1]), prefill_tok_s=float(out["prefill"][2]),
             decode_tokens=int(out["decode"][0]), decode_s=float(out["decode"][1]), decode_tok_s=float(out["decode"][2]),
             kv_positions=int(out["kv"][0]), kv_bytes_per_token=int(out["kv"][2]),
             threads=int(m.group(1)) if m else None, stopped_early="context limit" in stderr)
    r["kv_bytes"] = r["kv_positions"] * r["kv_bytes_per_token"]
    return r


def read_timings(path, n_expected, what):
    rows = []
    with open(path) as f:
        header = f.readline().strip()
        if header != "step,position,ms,kv_bytes":
            raise BenchError(f"{what}: unexpected --timings header '{header}'")
        for line in f:
            s, p, ms, kv = line.strip().split(",")
            rows.append((int(s), int(p), float(ms), int(kv)))
    if len(rows) != n_expected:
        raise BenchError(f"{what}: --timings has {len(rows)} rows, expected {n_expected}")
    return rows


class Runner:
    def __init__(self, args, model, runs_dir):
        self.args, self.model, self.dir = args, model, runs_dir
        self.count = 0

    def engine(self, tag, prompt_ids, n, no_cache=False, timings=True, extra=(), timeout=None):
        """One ./run generation; returns a dict with wall time, rusage, summary, stdout and timings
        (None if it was killed for running past timeout)."""
        self.count += 1
        base = os.path.join(self.dir, f"{self.count:03d}-{tag}")
        cmd = [self.args.run, self.model, "--prompt-ids", " ".join(map(str, prompt_ids)), "--print-ids", "-n", str(n)]
        cmd += self.args.sampling + (["--no-cache"] if no_cache else []) + (["--timings", base + ".csv"] if timings else []) + list(extra)
        r = spawn(cmd, base + ".out", base + ".err", timeout)
        if r["timed_out"]:
            return None
        with open(base + ".err", errors="replace") as f:
            stderr = f.read()
        if r["rc"] != 0:
            raise BenchError(f"{tag}: ./run exited with {r['rc']}: {stderr.strip().splitlines()[-1:] or ''}\n  command: {shlex.join(cmd)}")
        with open(base + ".out", "rb") as f:
            r["stdout"] = f.read()
        r.update(parse_summary(stderr, tag))
        r["cmd"] = cmd
        r["timings_csv"] = base + ".csv" if timings else None
        if timings:
            r["timings"] = read_timings(base + ".csv", r["decode_tokens"], tag)
        threads = r["threads"] or 1
        r["cpu_util"] = r["cpu_s"] / (r["wall_s"] * threads) if r["wall_s"] > 0 else 0.0
        return r


def run_machine(path, model, read_only=False):
    r = subprocess.run([path] + (["--read-only"] if read_only else []) + [model], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise BenchError(f"{rel(path)} failed: {r.stderr.strip()}")
    vals = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        try:
            vals[k] = float(v)
        except ValueError:
            pass
    if "read_gbps" not in vals or ("fma_gflops" not in vals and not read_only):
        raise BenchError(f"{rel(path)}: expected read_gbps and fma_gflops lines, got:\n{r.stdout}")
    # The decode limit: the faster of a 1 GiB anonymous buffer and the model file read through mmap
    # (an older bench/machine without the file test only gives the first).
    vals["mem_gbps"] = vals["read_gbps"]
    vals["read_gbps"] = max(vals["read_gbps"], vals.get("file_read_gbps", 0))
    return vals


def ensure_machine(path):
    """bench/machine, built (like `make bench/machine`) if it is missing or older than machine.c."""
    src = os.path.join(BENCH, "machine.c")
    if os.path.exists(path) and (not os.path.exists(src) or os.path.getmtime(path) >= os.path.getmtime(src)):
        return path
    cc = os.environ.get("CC", "cc")
    for flags in (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"]):
        cmd = [cc] + flags + [src, "-o", path]
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            log(f"built {rel(path)}: {' '.join(cmd[:-3])} bench/machine.c -o {rel(path)}")
            return path
    log(f"cannot build {rel(path)} (no C compiler?): the fractions of the physical limits are left out")
    return None


# ----------------------------------------------------------------------------
# what the figures are measured against

def decode_bytes_per_token(cfg, prompt_len, n):
    """Bytes read per decode step, averaged over a run of n steps after a prompt_len-token prompt:
    every weight matrix once (12 C^2 per layer), biases and LayerNorm vectors, wte once more as the LM head,
    one wte row and one wpe row for the input, plus the K and V rows attention reads (the step at position p
    attends p + 1 positions; on average prompt_len + (n + 1) / 2)."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    weights = 4 * (L * (12 * C * C + 13 * C) + V * C + 2 * C + 2 * C)
    kv = 2 * L * C * 4 * (prompt_len + (n + 1) / 2)
    return weights, kv


def prefill_flops(cfg, T):
    """FLOPs of one forward over T tokens from position 0 with logits for the last row only (what prefill,
    and every --no-cache step, computes): matmuls 2 x T x 12 C^2 per layer (qkv 3C^2, attn proj C^2,
    fc 4C^2, fc proj 4C^2), causal attention 2 x C x T(T+1) per layer (q.k and att.v; token t sees t+1
    positions), LM head 2 x V x C. LayerNorm, GELU, softmax, biases and residual adds (O(T C)) are not counted."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    return L * (2 * T * 12 * C * C + 2 * C * T * (T + 1)) + 2 * V * C


def generation_flops(cfg, prompt_len, n, no_cache):
    """FLOPs to prefill prompt_len tokens then run n generation steps (./run runs n forwards for n tokens)."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    total = prefill_flops(cfg, prompt_len)
    for i in range(1, n + 1):
        if no_cache:
            total += prefill_flops(cfg, prompt_len + i)
        else:  # one token at position p = prompt_len + i - 1 attends p + 1 positions
            total += L * (2 * 12 * C * C + 4 * C * (prompt_len + i)) + 2 * V * C
    return total


def prompt(n, vocab, salt):
    """A fixed pseudo-random prompt of n token ids (a small LCG: the same on every machine)."""
    x, ids, top = 12345 + salt, [], min(vocab, 50256)
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        ids.append(x % top)
    return ids


# ----------------------------------------------------------------------------
# tokenizer speed

def tokenizer_inputs(out_dir):
    x, word = 2024, []
    for _ in range(20000):
        x = (x * 1103515245 + 12345) % 2**31
        word.append(chr(ord("a") + (x >> 16) % 26))
    emoji = "".join(chr(0x1F600 + i % 80) for i in range(3000))  # U+1F600..U+1F64F, no separators
    inputs = [("startup (\"hello\")", "hello"),
              ("20,000-character word (random a-z)", "".join(word)),
              ("20,000 x 'a'", "a" * 20000),
              ("3,000 emoji (one piece)", emoji)]
    files = []
    for i, (name, text) in enumerate(inputs):
        p = os.path.join(out_dir, f"tokenize-{i}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        files.append((name, p, len(text), len(text.encode("utf-8"))))
    return files


def bench_tokenizer(args, out_dir, runs_dir):
    tok_bin = os.path.join(ROOT, "tokenizer.bin")
    if not os.path.exists(tok_bin):
        log("tokenizer.bin not found: tokenizer timings skipped")
        return None
    rows = []
    for name, path, chars, nbytes in tokenizer_inputs(out_dir):
        best, n_tokens = None, None
        for rep in range(max(3, args.repeats)):
            base = os.path.join(runs_dir, f"tok-{os.path.basename(path)}-{rep}")
            cmd = [args.run, "--tokenize", "-f", path, "-z", tok_bin]
            r = spawn(cmd, base + ".out", base + ".err")
            if r["rc"] != 0:
                with open(base + ".err", errors="replace") as f:
                    raise BenchError(f"tokenizer on {name}: exit {r['rc']}: {f.read().strip()}")
            with open(base + ".out") as f:
                n_tokens = len(f.read().split())
            best = r["wall_s"] if best is None else min(best, r["wall_s"])
        rows.append(dict(input=name, file=rel(path), chars=chars, bytes=nbytes, tokens=n_tokens, ms=best * 1e3, cmd=cmd))
        log(f"tokenize {name}: {n_tokens} tokens, {best * 1e3:.1f} ms")
    startup = rows[0]["ms"]
    for r in rows:
        r["net_ms"] = max(0.0, r["ms"] - startup)
    return rows


# ----------------------------------------------------------------------------
# the plots

def gnuplot_terminal():
    if not shutil.which("gnuplot"):
        return None
    for term, ext in (("pngcairo size 1000,620 font 'sans,11'", "png"), ("png size 1000,620", "png"), ("svg size 1000,620", "svg")):
        r = subprocess.run(["gnuplot", "-e", f"set terminal {term}; set output '/dev/null'"], capture_output=True)
        if r.returncode == 0 and not r.stderr.strip():
            return term, ext
    return None


def make_plots(res, out_dir):
    term = gnuplot_terminal()
    if term is None:
        log("gnuplot (with a png or svg terminal) not found: plots skipped; the table is complete without them")
        return []
    term, ext = term
    cfg, n_max = res["model"]["config"], res["plot_length"]
    desc = f"{res['model']['label']}, {res['machine']['threads']} threads"
    cache_csv, nocache_csv = res["plot_csv"]["cache"], res["plot_csv"]["no_cache"]
    kvpt = res["model"]["kv_bytes_per_token"]

    # total time vs generated length: measured totals, and cumulative curves from the longest runs' CSVs
    dat = os.path.join(out_dir, "total_time.dat")
    with open(dat, "w") as f:
        f.write("# generated_tokens cache_s no_cache_s (best wall time of the whole process)\n")
        for g in res["generation"]:
            f.write(f"{g['n']} {g['cache']['wall_s']:.4f} {g['no_cache']['wall_s']:.4f}\n")
    cum = os.path.join(out_dir, "cumulative.dat")
    with open(cum, "w") as f:
        f.write("# step cache_s no_cache_s (prefill + per-token ms summed, longest runs)\n")
        c, nc = res["plot_prefill_s"]["cache"], res["plot_prefill_s"]["no_cache"]
        f.write(f"0 {c:.5f} {nc:.5f}\n")
        for (s, _, ms1, _), (_, _, ms2, _) in zip(res["plot_rows"]["cache"], res["plot_rows"]["no_cache"]):
            c += ms1 / 1e3
            nc += ms2 / 1e3
            f.write(f"{s} {c:.5f} {nc:.5f}\n")

    mean_cache = sum(r[2] for r in res["plot_rows"]["cache"]) / len(res["plot_rows"]["cache"])
    files = {k: os.path.join(out_dir, f"{k}.{ext}") for k in ("ms_per_token", "kv_cache_bytes", "total_time")}
    gp = f"""# generated by bench/bench.py; rerun with: gnuplot {rel(os.path.join(out_dir, 'plots.gp'))}
set terminal {term}
set termoption noenhanced
set datafile separator ','
set grid
set key top left box opaque
set style line 1 lc rgb '#1f77b4' lw 2.5 pt 7 ps 1.2
set style line 2 lc rgb '#d62728' lw 2.5 pt 5 ps 1.2
set style line 3 lc rgb '#555555' lw 1.5 dt 2

set output '{files['ms_per_token']}'
set title "Time per generated token vs position: KV cache (flat) vs --no-cache (grows with the sequence)\\n{desc}, {n_max} tokens after a {res['prompt_len']}-token prompt"
set xlabel 'position of the token being fed through the model (tokens)'
set ylabel 'time per generated token (ms)'
set yrange [0:*]
plot '{nocache_csv}' skip 1 using 2:3 with lines ls 2 title '--no-cache: recomputes all positions 0..p every step', \\
     '{cache_csv}' skip 1 using 2:3 with lines ls 1 title sprintf('KV cache: one new position per step (mean %.1f ms)', {mean_cache:.3f})

set output '{files['kv_cache_bytes']}'
set title "KV-cache size vs position: 2 (K,V) x {cfg['n_layer']} layers x {cfg['n_embd']} x 4 bytes = {kvpt:,} bytes per token\\n{desc}"
set xlabel 'tokens in the sequence (positions cached)'
set ylabel 'KV cache in use (MiB)'
set xrange [0:{cfg['n_ctx']}]
set yrange [0:*]
plot x*{kvpt}/1048576.0 with lines ls 3 title sprintf('bytes/token x positions: %.0f MiB at the full {cfg['n_ctx']}-token context', {cfg['n_ctx'] * kvpt}/1048576.0), \\
     '{cache_csv}' skip 1 using ($2+1):($4/1048576.0) with points ls 1 pt 7 ps 0.6 title 'measured (--timings kv_bytes, KV cache run)'

set output '{files['total_time']}'
set title "Total wall time vs tokens generated (whole process, best of repeats)\\n{desc}, {res['prompt_len']}-token prompt"
set xlabel 'tokens generated'
set ylabel 'total wall time (s)'
set xrange [0:*]
set yrange [0:*]
set datafile separator whitespace
plot '{cum}' using 1:3 with lines ls 2 lw 1.5 dt 3 title '--no-cache, prefill + per-token times summed (longest run)', \\
     '{cum}' using 1:2 with lines ls 1 lw 1.5 dt 3 title 'KV cache, prefill + per-token times summed (longest run)', \\
     '{dat}' using 1:3 with linespoints ls 2 title '--no-cache: measured (grows quadratically)', \\
     '{dat}' using 1:2 with linespoints ls 1 title 'KV cache: measured (grows linearly)'
"""
    gp_path = os.path.join(out_dir, "plots.gp")
    with open(gp_path, "w") as f:
        f.write(gp)
    r = subprocess.run(["gnuplot", gp_path], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
        return []
    return [files[k] for k in ("ms_per_token", "kv_cache_bytes", "total_time")]


# ----------------------------------------------------------------------------
# the report

def table(header, rows, align=None):
    """A markdown table padded so that it also reads as plain text."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or ["l"] + ["r"] * (len(header) - 1)
    fmt = lambda r: "| " + " | ".join(c.ljust(w[i]) if align[i] == "l" else c.rjust(w[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if align[i] == "r" else ("-" * (w[i] + 2)) for i in range(len(w))) + "|"
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])


def mb(x):
    return f"{x / 1e6:,.1f} MB"


def pct(x):
    return f"{100 * x:.0f}%" if x is not None else "n/a"


def report(res):
    m, cfg, L = res["machine"], res["model"]["config"], []
    L.append(f"# KV-cache benchmark: {res['model']['label']}\n")
    L.append(f"{res['date']}, commit {res['git']}, ./run built with `{res['build_flags']}`.")
    if res["model"]["random"]:
        L.append(f"Weights: random ({rel(res['model']['path'])}, generated by the bench because the model file was not found). "
                 "Speed does not depend on the values.")
    L.append(f"Sampling: `{' '.join(res['sampling'])}` (fixed seed), so every run of a length generates the same ids.\n")
    if res["busy"]:
        L.append(f"**Warning: the machine was busy** ({res['busy']}); these timings are noisy. "
                 "Rerun on a quiet machine for numbers to quote. (When another process holds a core, OpenMP's "
                 "spin-waiting barriers can make ./run many times slower; OMP_WAIT_POLICY=passive avoids that.)\n")

    L.append("## Machine\n")
    L.append(table(["", "value"], [
        ["CPU", m["cpu"]],
        ["cores (online) / threads used by ./run", f"{m['cores']} / {m['threads']}"],
        ["read bandwidth (bench/machine, all threads, best)",
         (f"{m['read_gbps']:.1f} GB/s (1 GiB buffer: {m['mem_gbps']:.1f}; the model file through mmap: "
          f"{m.get('file_read_gbps', 0):.1f})") if m.get("read_gbps") else "n/a"],
        ["read bandwidth samples (before, after, then between the roofline runs)",
         " / ".join(f"{x['read_gbps']:.1f}" for x in m.get("samples", [])) + " GB/s" if m.get("samples") else "n/a"],
        ["FMA peak (bench/machine, all threads, best)", f"{m['fma_gflops']:.0f} GFLOP/s (best of 8- and 16-float vectors; "
                                                         f"8-float, as run.c uses: {m.get('fma8_gflops', 0):.0f})" if m.get("fma_gflops") else "n/a"],
        ["load average before the run (1 min)", f"{res['loadavg_start']:.2f}"],
        ["OpenMP environment", " ".join(f"{k}={v}" for k, v in sorted(m["omp_env"].items())) or "(none set)"],
    ], ["l", "l"]))

    L.append(f"\n## KV cache vs --no-cache ({res['prompt_len']}-token prompt, whole-process wall time, best of repeats)\n")
    rows = []
    for g in res["generation"]:
        c, n = g["cache"], g["no_cache"]
        rows.append([g["n"], f"{c['wall_s']:.2f} s", f"{n['wall_s']:.2f} s", f"**{g['speedup']:.1f}x**", f"{g['flop_ratio']:.1f}x",
                     f"{c['decode_tok_s']:.1f}", f"{n['decode_tok_s']:.1f}", f"{c['ms_last']:.1f} / {n['ms_last']:.1f}",
                     f"{c['maxrss_kb'] / 1024:.0f} / {n['maxrss_kb'] / 1024:.0f}", f"{c['kv_bytes']:,}",
                     "yes" if g["ids_identical"] else "**NO**", f"{g['repeats_cache']}/{g['repeats_no_cache']}"])
    L.append(table(["tokens", "cache", "--no-cache", "speedup", "FLOP ratio", "cache tok/s", "no-cache tok/s",
                    "last-token ms (c / nc)", "peak RSS MiB (c / nc)", "KV-cache bytes", "same ids", "repeats (c/nc)"], rows))
    L.append("\n*speedup* = no-cache / cache wall time. *FLOP ratio* = FLOPs the no-cache run computes / FLOPs the cached run "
             "computes (what the speedup would be if both ran at the same FLOP/s; the cached decode is bound by memory "
             "bandwidth, not FLOPs, so the measured speedup is lower). *tok/s* from ./run's `decode:` line. "
             "*Peak RSS* includes the mmapped weights pages the process touched. *KV-cache bytes* from the `kv cache:` line "
             "(positions x bytes/token; --no-cache fills the same buffer again at every step)."
             + (" Values near the bench driver's own RSS are a floor, not a measurement (Linux counts the pages a "
                "child shares with the driver before exec)." if res["small_rss"] else "") +
             f" *repeats*: best of --repeats {res['repeats']}, except that a measurement whose first run took longer than "
             f"{res['max_run_seconds']:g} s is not repeated (--max-run-seconds).")

    d, p = res["decode"], res["prefill"]
    L.append("\n## Against the physical limits\n")
    rows = [
        ["decode (KV cache, batch 1)", f"{d['tok_s']:.1f} tok/s", f"{d['bytes_per_token'] / 1e6:.1f} MB read per token",
         f"{d['gbps']:.1f} GB/s", f"{m['read_gbps']:.1f} GB/s read bandwidth" if m.get("read_gbps") else "n/a", pct(d["fraction"])],
        [f"prefill ({p['tokens']}-token prompt)", f"{p['tok_s']:.1f} tok/s", f"{p['flops'] / 1e9:.1f} GFLOP per prompt",
         f"{p['gflops']:.1f} GFLOP/s", f"{m['fma_gflops']:.0f} GFLOP/s FMA peak" if m.get("fma_gflops") else "n/a", pct(p["fraction"])],
    ]
    L.append(table(["phase", "measured", "work", "achieved", "physical limit", "fraction"], rows))
    L.append(f"\nDecode: best `decode:` tok/s of the {d['n']}-token cached runs x bytes each step must read = achieved bandwidth. "
             f"Bytes per step: every weight matrix (12 C^2 per layer), biases and LayerNorms, wte again as the LM head, "
             f"one wte and one wpe row ({d['weight_bytes'] / 1e6:.1f} MB), plus the K and V rows attention reads "
             f"(2 x {cfg['n_layer']} x {cfg['n_embd']} x 4 bytes per position, {d['kv_read_bytes'] / 1e6:.2f} MB on average over the run).  ")
    if d.get("paired"):
        L.append("\n### Decode against the bandwidth of the same minute\n")
        L.append(f"The read bandwidth of this machine is not constant (samples in this run: "
                 f"{min(x['read_gbps'] for x in m['samples']):.1f} to {max(x['read_gbps'] for x in m['samples']):.1f} GB/s), "
                 f"so the best decode and the best bandwidth above may come from different minutes. Here each "
                 f"{d['n']}-token cached run sits between two bandwidth samples and is compared with the higher of the two. "
                 f"**Median fraction: {pct(d['paired_median'])}.**\n")
        L.append(table(["run", "decode tok/s", "achieved", "bandwidth before / after", "fraction"],
                       [[str(i + 1), f"{x['decode_tok_s']:.1f}", f"{x['gbps']:.1f} GB/s",
                         f"{x['gbps_before']:.1f} / {x['gbps_after']:.1f} GB/s", pct(x["fraction"])]
                        for i, x in enumerate(d["paired"])]))
        L.append("")
    L.append(f"Prefill: best `prefill:` time over {p['tokens']} tokens. FLOPs counted: matmuls 2 x T x 12 C^2 per layer, "
             f"causal attention 2 x C x T(T+1) per layer (q.k and att.v), the LM head for the last row 2 x V x C; "
             f"LayerNorm, GELU, softmax, biases and residual adds are not counted (< 1%).")

    if res["tokenizer"]:
        L.append("\n## Tokenizer (`./run --tokenize -f FILE`, whole process, best of repeats)\n")
        L.append(table(["input", "characters", "UTF-8 bytes", "tokens", "ms", "ms minus startup"],
                       [[t["input"], f"{t['chars']:,}", f"{t['bytes']:,}", f"{t['tokens']:,}", f"{t['ms']:.1f}", f"{t['net_ms']:.1f}"]
                        for t in res["tokenizer"]]))

    b = res.get("baseline")
    if b:
        L.append("\n## Baseline: float32 numpy with its own KV cache (bench/baseline_numpy.py)\n")
        L.append(table(["", "decode tok/s", "ratio"], [
            [f"./run, greedy, {b['tokens']} tokens", f"{b['ours_tok_s']:.1f}", f"**{b['ratio']:.1f}x**"],
            [f"numpy {b['numpy']} + {b['blas']}", f"{b['numpy_tok_s']:.1f}", "1.0x"],
        ]))
        L.append(f"\nSame prompt, same greedy algorithm, numpy on float32 through np.memmap. Generated ids agree on "
                 f"{b['ids_agree']} of {b['tokens']} tokens (float32 rounding differs, so a late divergence is not a bug).")

    L.append("\n## Checks\n")
    for c in res["checks"]:
        L.append(f"- {'**FAILED**' if not c['ok'] else 'warning' if c.get('warn') else 'ok'}: {c['what']}")

    L.append("\n## Reproduce\n")
    L.append(f"    {res['command']}\n")
    L.append("Each measurement is one of these ./run commands (timed by the bench as a whole process):\n")
    for cmd in res["example_commands"]:
        L.append(f"    {cmd}")
    L.append(f"\nRaw data: results.json; per-run stdout, stderr and --timings CSVs in {rel(res['runs_dir'])}/.")
    if res["plots"]:
        L.append("\n## Plots\n")
        for p_ in res["plots"]:
            L.append(f"![{os.path.basename(p_)}]({os.path.basename(p_)})")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------

def blas_name(maps):
    """A readable name for the BLAS library numpy loaded (paths from /proc/self/maps)."""
    low = maps.lower()
    for key, name in (("openblas", "OpenBLAS"), ("blis", "BLIS"), ("mkl", "MKL"), ("atlas", "ATLAS"),
                      ("/blas/libblas", "reference BLAS (Netlib, one thread)")):
        if key in low:
            return name
    return os.path.basename(maps.split(",")[0]) if maps and maps != "unknown" else "unknown BLAS"


def git_info():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return (rev or "unknown") + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the top of bench/bench.py for what is measured.")
    ap.add_argument("--model", default="model.bin", help="model.bin to time (default: model.bin; if missing, a random "
                    "124M-shaped one is generated once into bench/out/)")
    ap.add_argument("--run", default=os.path.join(ROOT, "run"), help="the engine binary (default: ./run)")
    ap.add_argument("--out", default=os.path.join(BENCH, "out"), help="output directory (default: bench/out)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement, best taken (default 3)")
    ap.add_argument("--max-run-seconds", type=float, default=20.0,
                    help="a measurement whose first run took longer is not repeated (default 20; 0 = always repeat)")
    ap.add_argument("--lengths", default="64,128,256", help="generated lengths to time (default 64,128,256)")
    ap.add_argument("--long", action="store_true", help="also 500 tokens (the no-cache run alone then takes several minutes)")
    ap.add_argument("--prompt-len", type=int, default=16, help="prompt tokens for the generation runs (default 16)")
    ap.add_argument("--prefill-len", type=int, default=512, help="prompt tokens for the prefill measurement (default 512)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--greedy", action="store_true", help="time greedy decoding (-t 0) instead of fixed-seed sampling (-t 1 --top-p 1)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the numpy baseline")
    ap.add_argument("--baseline-tokens", type=int, default=32, help="tokens the numpy baseline generates (default 32)")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer timings")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--roofline-pairs", type=int, default=6,
                    help="cached decode runs, each between two bandwidth samples (default 6; 0 skips them)")
    a = ap.parse_args()
    a.run = os.path.abspath(a.run)
    a.out = os.path.abspath(a.out)
    try:
        a.lengths = sorted({int(x) for x in a.lengths.replace(" ", ",").split(",") if x} | ({500} if a.long else set()))
    except ValueError:
        ap.error("--lengths takes comma-separated integers")
    if not a.lengths or min(a.lengths) < 1 or a.repeats < 1 or a.prompt_len < 1 or a.prefill_len < 1:
        ap.error("lengths, --repeats, --prompt-len and --prefill-len must be positive")
    # -t 1 --top-p 1: plain sampling from the full distribution (no sort), fixed seed. Generated ids vary, so
    # the cache/no-cache identity check means something even on random weights (greedy tends to repeat one id).
    a.sampling = ["-t", "0", "-s", str(a.seed)] if a.greedy else ["-t", "1", "--top-p", "1", "-s", str(a.seed)]
    return a


def main():
    args = parse_args()
    if not (os.path.isfile(args.run) and os.access(args.run, os.X_OK)):
        shown = rel(args.run) if "/" in rel(args.run) else "./" + rel(args.run)
        raise BenchError(f"{shown} not found or not executable: "
                         "build it first with `make`")
    src = os.path.join(ROOT, "run.c")
    if os.path.exists(src) and os.path.getmtime(src) > os.path.getmtime(args.run):
        log("warning: run.c is newer than ./run; you are timing an old build (run `make`)")
    flags_file = os.path.join(ROOT, ".build-flags")
    build_flags = open(flags_file).read().strip() if os.path.exists(flags_file) else "unknown flags"
    if "-fsanitize" in build_flags or " -O0" in build_flags or " -O1" in build_flags:
        log(f"warning: ./run was built with `{build_flags}`: that is a debug build, not worth timing (run `make clean all`)")
    os.makedirs(args.out, exist_ok=True)
    runs_dir = os.path.join(args.out, "runs")
    shutil.rmtree(runs_dir, ignore_errors=True)
    os.makedirs(runs_dir)
    loadavg_start = os.getloadavg()[0]

    model, is_random = resolve_model(args.model, args.out)
    cfg = read_config(model)
    if os.path.getsize(model) != expected_size(cfg):
        raise BenchError(f"{model}: {os.path.getsize(model)} bytes, a model.bin with this header has {expected_size(cfg)}")
    P0, n_ctx = args.prompt_len, cfg["n_ctx"]
    lengths = [n for n in args.lengths if P0 + n <= n_ctx]
    if lengths != args.lengths:
        log(f"skipping lengths {sorted(set(args.lengths) - set(lengths))}: a {P0}-token prompt leaves {n_ctx - P0} positions")
    if not lengths:
        raise BenchError("no generated length fits in the model's context")
    prefill_len = min(args.prefill_len, n_ctx - 1)
    short_prompt = prompt(P0, cfg["vocab_size"], 0)
    long_prompt = prompt(prefill_len, cfg["vocab_size"], 1)
    prompt_files = {}
    for ids in (short_prompt, long_prompt):  # so that the commands in results.md stay readable
        path = os.path.join(args.out, f"prompt-{len(ids)}.ids")
        with open(path, "w") as f:
            f.write(" ".join(map(str, ids)) + "\n")
        prompt_files[" ".join(map(str, ids))] = f'"$(cat {rel(path)})"'
    L, NH, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
    shape = f"{L} layers, {NH} heads, {C} wide, {n_ctx} positions, {V} vocab"
    label = ("GPT-2 124M-shaped" if all(cfg[k] == v for k, v in SHAPE_124M.items()) else f"GPT-2 ({shape})") + \
            (" (random weights)" if is_random else f" ({os.path.basename(model)})")
    runner = Runner(args, model, runs_dir)
    machine_bin = ensure_machine(os.path.join(BENCH, "machine"))
    checks = []

    # Page the weights in (and catch a broken build) before anything is timed.
    log(f"model: {rel(model)} ({shape}); warm-up run")
    warm = runner.engine("warmup", short_prompt, 8)
    threads = warm["threads"] or 1

    machine = {}
    def measure_machine(when, read_only=False):
        if machine_bin:
            v = run_machine(machine_bin, model, read_only)
            log(f"machine ({when}): read {v['mem_gbps']:.1f} GB/s (model file via mmap: {v.get('file_read_gbps', 0):.1f})" +
                ("" if read_only else f", FMA {v['fma_gflops']:.0f} GFLOP/s"))
            for k, x in v.items():
                machine[k] = max(machine.get(k, 0), x) if k != "fma_width" else x
            machine.setdefault("samples", []).append(dict(v, when=when))
            return v["read_gbps"]
    measure_machine("before")

    # The interleaved loop: every repeat runs each measurement once, cache next to no-cache.
    plan = []
    for n in lengths:
        plan += [("cache", n), ("no_cache", n)]
    plan += [("prefill", prefill_len)]
    have_numpy = None if args.no_baseline else numpy_python()
    if not args.no_baseline and not have_numpy:
        log("no python with numpy: the numpy baseline is skipped")
    if have_numpy:
        plan += [("greedy", args.baseline_tokens), ("numpy", args.baseline_tokens)]
    results = {k: [] for k in plan}
    discarded = []
    for rep in range(args.repeats):
        for key in plan:
            kind, n = key
            if rep > 0 and args.max_run_seconds > 0 and results[key] and results[key][0]["wall_s"] > args.max_run_seconds:
                continue  # long enough to average over its own steps; measured once
            # A repeat only has to beat the best so far: one that takes 3x as long (another process took a
            # core) is killed and discarded instead of holding up the bench.
            timeout = 3 * min(r["wall_s"] for r in results[key]) + 5 if results[key] else None
            if kind == "numpy":
                base = os.path.join(runs_dir, f"numpy-{rep}")
                cmd = [have_numpy, os.path.join(BENCH, "baseline_numpy.py"), model, "--prompt-ids",
                       " ".join(map(str, short_prompt)), "-n", str(n)]
                r = spawn(cmd, base + ".out", base + ".err", timeout)
                if r["timed_out"]:
                    r = None
                elif r["rc"] != 0:
                    with open(base + ".err") as f:
                        raise BenchError(f"bench/baseline_numpy.py failed: {f.read().strip()}")
                else:
                    with open(base + ".out") as f:
                        r.update(json.loads(f.read().strip().splitlines()[-1]))
                    r["cmd"] = cmd
                    log(f"rep {rep + 1}/{args.repeats}  numpy baseline n={n}: decode {r['decode_tok_s']:.1f} tok/s")
            elif kind == "prefill":
                r = runner.engine(f"prefill{n}", long_prompt, 1, timeout=timeout)
                if r:
                    log(f"rep {rep + 1}/{args.repeats}  prefill {n} tokens: {r['prefill_s']:.3f} s ({r['prefill_tok_s']:.1f} tok/s)")
            elif kind == "greedy":
                r = runner.engine(f"greedy{n}", short_prompt, n, timings=False, timeout=timeout,
                                  extra=["-t", "0"])  # the later -t wins over the sampling setting
            else:
                r = runner.engine(f"{kind}{n}", short_prompt, n, no_cache=(kind == "no_cache"), timeout=timeout)
                if r and r["stopped_early"]:
                    raise BenchError(f"{kind} n={n} stopped at the context limit")
                if r:
                    log(f"rep {rep + 1}/{args.repeats}  {'--no-cache' if kind == 'no_cache' else 'KV cache  '} n={n:<4d} "
                        f"{r['wall_s']:7.2f} s  (decode {r['decode_tok_s']:7.1f} tok/s, peak RSS {r['maxrss_kb'] / 1024:.0f} MiB, "
                        f"CPU use {100 * r['cpu_util']:.0f}%)")
            if r is None:
                discarded.append(f"{kind} n={n}")
                log(f"rep {rep + 1}/{args.repeats}  {kind} n={n}: killed after {timeout:.0f} s (3x its best run + 5 s; "
                    "the machine is busy?), discarded")
                continue
            results[key].append(r)
    measure_machine("after")

    # Decode against the bandwidth of the same minute. This VM's read bandwidth swings (31 to 65 GB/s seen
    # here) as other tenants come and go, so a decode run is also compared with the bandwidth measured
    # just before and just after it: bandwidth sample, decode run, bandwidth sample, decode run, ...
    dec_n = 256 if 256 in lengths else max(lengths)  # the length whose cached runs give the decode figure
    roofline = []
    if machine_bin and args.roofline_pairs > 0:
        prev = measure_machine("before the roofline runs", read_only=True)
        for i in range(args.roofline_pairs):
            r = runner.engine(f"roofline{i + 1}", short_prompt, dec_n, timings=False)
            after = measure_machine(f"after roofline run {i + 1}", read_only=True)
            roofline.append(dict(decode_tok_s=r["decode_tok_s"], gbps_before=prev, gbps_after=after))
            log(f"roofline pair {i + 1}/{args.roofline_pairs}: decode {r['decode_tok_s']:.1f} tok/s between "
                f"{prev:.1f} and {after:.1f} GB/s")
            prev = after

    # Logits, not just ids: the cached and uncached runs should give bit-identical distributions.
    n_log = min(16, lengths[0])
    runner.engine("logits-cache", short_prompt, n_log, timings=False, extra=["--logits", os.path.join(runs_dir, "logits-cache.f32")])
    runner.engine("logits-nocache", short_prompt, n_log, no_cache=True, timings=False,
                  extra=["--logits", os.path.join(runs_dir, "logits-nocache.f32")])
    with open(os.path.join(runs_dir, "logits-cache.f32"), "rb") as f1, open(os.path.join(runs_dir, "logits-nocache.f32"), "rb") as f2:
        b1, b2 = f1.read(), f2.read()
    if b1 == b2 and len(b1) == 4 * V * n_log:
        checks.append(dict(ok=True, what=f"logits of the first {n_log} steps are bit-identical with and without the cache ({len(b1):,} bytes)"))
    else:
        a1, a2 = array.array("f", b1), array.array("f", b2)
        diff = max((abs(x - y) for x, y in zip(a1, a2)), default=float("nan"))
        checks.append(dict(ok=True, warn=True, what=f"logits of the first {n_log} steps differ between cache and no-cache "
                           f"(max |diff| {diff:.3g}, {len(b1)} vs {len(b2)} bytes); ids are what the bench requires to match"))

    tok = None if args.no_tokenizer else bench_tokenizer(args, args.out, runs_dir)

    # ------------------------------------------------------------------ figures
    def best(key, field="wall_s", high=False):
        runs = results[key]
        return (max if high else min)(runs, key=lambda r: r[field])

    generation, failed = [], False
    for n in lengths:
        outs = {r["stdout"] for r in results[("cache", n)] + results[("no_cache", n)]}
        same_mode = all(len({r["stdout"] for r in results[(k, n)]}) == 1 for k in ("cache", "no_cache"))
        identical = len(outs) == 1
        n_ids = len(results[("cache", n)][0]["stdout"].split())
        if not identical:
            failed = True
            checks.append(dict(ok=False, what=f"n={n}: generated ids differ between " +
                               ("the cache and --no-cache runs" if same_mode else "repeats of the same command (nondeterminism)") +
                               f"; see {rel(runs_dir)}/*{n}.out"))
        else:
            checks.append(dict(ok=True, what=f"n={n}: stdout byte-identical across all {len(results[('cache', n)]) + len(results[('no_cache', n)])} "
                               f"cache and --no-cache runs ({n_ids} ids)"))
        if n_ids != n:
            failed = True
            checks.append(dict(ok=False, what=f"n={n}: stdout has {n_ids} ids"))
        g = dict(n=n, ids_identical=identical)
        for mode in ("cache", "no_cache"):
            b = best((mode, n))
            g[mode] = dict(wall_s=b["wall_s"], decode_tok_s=b["decode_tok_s"], decode_s=b["decode_s"], prefill_s=b["prefill_s"],
                           maxrss_kb=max(r["maxrss_kb"] for r in results[(mode, n)]), kv_bytes=b["kv_bytes"],
                           ms_last=b["timings"][-1][2], cpu_util=b["cpu_util"], walls=[r["wall_s"] for r in results[(mode, n)]],
                           timings_csv=b["timings_csv"])
        g["repeats_cache"], g["repeats_no_cache"] = len(results[("cache", n)]), len(results[("no_cache", n)])
        g["speedup"] = g["no_cache"]["wall_s"] / g["cache"]["wall_s"]
        g["flop_ratio"] = generation_flops(cfg, P0, n, True) / generation_flops(cfg, P0, n, False)
        generation.append(g)

    dbest = best(("cache", dec_n), "decode_tok_s", high=True)
    wbytes, kvread = decode_bytes_per_token(cfg, P0, dec_n)
    decode = dict(n=dec_n, tok_s=dbest["decode_tok_s"], weight_bytes=wbytes, kv_read_bytes=kvread, bytes_per_token=wbytes + kvread)
    decode["gbps"] = decode["tok_s"] * decode["bytes_per_token"] / 1e9
    decode["fraction"] = decode["gbps"] / machine["read_gbps"] if machine.get("read_gbps") else None
    for pr in roofline:  # each run against the higher of the two samples beside it
        pr["gbps"] = pr["decode_tok_s"] * decode["bytes_per_token"] / 1e9
        pr["limit_gbps"] = max(pr["gbps_before"], pr["gbps_after"])
        pr["fraction"] = pr["gbps"] / pr["limit_gbps"]
    if roofline:
        decode["paired"] = roofline
        decode["paired_median"] = statistics.median(pr["fraction"] for pr in roofline)
    pbest = best(("prefill", prefill_len), "prefill_s")
    prefill = dict(tokens=pbest["prefill_tokens"], s=pbest["prefill_s"], tok_s=pbest["prefill_tok_s"],
                   flops=prefill_flops(cfg, pbest["prefill_tokens"]), all_s=[r["prefill_s"] for r in results[("prefill", prefill_len)]])
    prefill["gflops"] = prefill["flops"] / prefill["s"] / 1e9 if prefill["s"] > 0 else 0.0
    prefill["fraction"] = prefill["gflops"] / machine["fma_gflops"] if machine.get("fma_gflops") else None

    baseline = None
    if have_numpy:
        nb = best(("numpy", args.baseline_tokens), "decode_tok_s", high=True)
        ob = best(("greedy", args.baseline_tokens), "decode_tok_s", high=True)
        ours_ids = [int(x) for x in ob["stdout"].split()]
        agree = 0
        for x, y in zip(ours_ids, nb["ids"]):
            if x != y:
                break
            agree += 1
        baseline = dict(tokens=args.baseline_tokens, ours_tok_s=ob["decode_tok_s"], numpy_tok_s=nb["decode_tok_s"],
                        ratio=ob["decode_tok_s"] / nb["decode_tok_s"], numpy=nb["numpy"],
                        blas=blas_name(nb["blas"]),
                        blas_path=nb["blas"], ids_agree=agree, numpy_prefill_tok_s=nb["prefill_tok_s"])

    all_runs = [r for rs in results.values() for r in rs if "cpu_util" in r and r["wall_s"] > 1.0]
    low = [r for r in all_runs if r["cpu_util"] < 0.85]
    busy = []
    if discarded:
        busy.append(f"{len(discarded)} repeat(s) killed for taking over 3x their best run: {', '.join(discarded)}")
    if low:
        busy.append(f"{len(low)} of {len(all_runs)} runs got less than 85% of {threads} cores "
                    f"(lowest {100 * min(r['cpu_util'] for r in low):.0f}%)")

    longest = max(lengths)
    bc, bn = best(("cache", longest)), best(("no_cache", longest))
    res = dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), git=git_info(), build_flags=build_flags,
        command=" ".join([f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith(("OMP_", "GOMP_"))] +
                         ["python3 bench/bench.py"] + [shlex.quote(a) for a in sys.argv[1:]]),
        model=dict(path=model, random=is_random, config=cfg, label=label, bytes=os.path.getsize(model),
                   kv_bytes_per_token=warm["kv_bytes_per_token"]),
        machine=dict(machine, cpu=cpu_model(), cores=os.cpu_count(), threads=threads, omp_env={k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "KMP_"))}),
        small_rss=any(r["maxrss_kb"] < 2 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      for rs in results.values() for r in rs if "maxrss_kb" in r and "kv_bytes" in r),
        loadavg_start=loadavg_start, discarded=discarded, repeats=args.repeats, max_run_seconds=args.max_run_seconds, busy="; ".join(busy), sampling=args.sampling, prompt_len=P0,
        generation=generation, decode=decode, prefill=prefill, tokenizer=tok, baseline=baseline, checks=checks,
        runs_dir=runs_dir, plot_length=longest,
        plot_csv=dict(cache=bc["timings_csv"], no_cache=bn["timings_csv"]),
        plot_rows=dict(cache=bc["timings"], no_cache=bn["timings"]),
        plot_prefill_s=dict(cache=bc["prefill_s"], no_cache=bn["prefill_s"]),
        example_commands=[" ".join(prompt_files.get(c) or shlex.quote(cmdpath(c)) for c in x)
                          for x in (bc["cmd"], bn["cmd"], pbest["cmd"]) + ((tok[1]["cmd"],) if tok else ())],
        elapsed_s=time.time() - T0,
    )
    res["plots"] = [] if args.no_plots else make_plots(res, args.out)
    res["elapsed_s"] = time.time() - T0
    md = report(res)
    md += f"\nThe whole bench took {res['elapsed_s']:.0f} s.\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    dump = {k: v for k, v in res.items() if k not in ("plot_rows",)}
    def plain(r):
        d = {k: v for k, v in r.items() if k != "timings"}  # the per-token rows stay in the CSVs
        if isinstance(d.get("stdout"), bytes):
            d["stdout"] = d["stdout"].decode(errors="replace")
        return d
    dump["runs"] = {f"{k[0]}:{k[1]}": [plain(r) for r in rs] for k, rs in results.items()}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dump, f, indent=1, default=str)
    print(md)
    log(f"wrote {rel(os.path.join(args.out, 'results.md'))}, results.json" +
        (", " + ", ".join(os.path.basename(p) for p in res["plots"]) if res["plots"] else ""))
    if failed:
        log("FAILED: see the Checks section")
        return 1
    return 0


def _interrupted(signum, frame):
    if CURRENT_CHILD is not None and CURRENT_CHILD.poll() is None:
        CURRENT_CHILD.kill()  # only the process this bench started
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        sys.exit(main())
    except (BenchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if CURRENT_CHILD is not None and CURRENT_CHILD.poll() is None:
            CURRENT_CHILD.kill()
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
