#!/usr/bin/env python3
"""The KV-cache mini-lab: how long ./run takes to generate with its KV cache and with --no-cache.

    python3 bench/bench.py [--model model.bin] [--repeats 3] [--long]        (or: make bench)

The core, in this file: from a 16-token prompt, generate 64, 128 and 256 tokens (and 500 with --long)
with the KV cache and with --no-cache, interleaved (cache, no-cache, cache, ...), best of --repeats.
Reported: whole-process wall time and the speedup, time per token (--timings), peak RSS, KV-cache bytes,
and three plots drawn by gnuplot. Both modes must generate byte-identical ids: a mismatch fails the
bench (exit status 1).

Then, each in its own module, measurements that put the core's numbers in context:
  roofline.py            decode and prefill (512-token prompt) against this machine's read bandwidth and
                         FMA peak, as measured by bench/machine (built by `make bench`)
  tuned_vs_reference.py  the tuned kernels against the plain loops of ./run --reference
  tokenizer_speed.py     ./run --tokenize on inputs that are slow for a naive BPE
  baseline.py            ./run against a float32 numpy engine with its own KV cache (baseline_numpy.py)
  weight_types.py        f32, f16 and int8 exports of one checkpoint: size, memory, decode against each
                         type's roofline, prefill (545-token prompt) against the FMA peak, and a plot
  quality.py             f16 and int8 logits against f32 on a fixed text (bench/quality.txt)
  under_load.py          default, --threads 1/2 and OMP_WAIT_POLICY=passive, idle and with a core busy
  kv_tools.py            --prompt-cache (time to first token, cold and warm), --kv-type f32/f16/int8 (decode
                         time and bytes against the position), a 3000-token --context-shift run
  kv_quality.py          f16 and int8 keys and values against f32, as quality.py compares weight types
common.py has what they share: running ./run, reading its summary lines, a markdown table;
random_models.py makes the random checkpoints and their exports.

Writes bench/out/results.md, results.json, the plots, and every run's output in bench/out/runs/.
Without the model file, a random-weight GPT-2 124M-shaped model is made once into bench/out/ (speed does
not depend on the values); weight_types.py, quality.py and under_load.py use that one whatever --model
is. This driver is standard-library Python; numpy is needed by the helpers that make the random models,
run the baseline and compare logits. A measurement whose first run takes longer than
--max-run-seconds (20) is not repeated: it averages over hundreds of steps already.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import shlex
import signal
import subprocess
import sys
import time

import baseline
import kv_quality
import kv_tools
import roofline
import quality
import random_models
import tokenizer_speed
import tuned_vs_reference
import under_load
import weight_types
from common import ROOT, T0, BenchError, Engine, gnuplot, log, read_config, read_text, rel, table, worth_repeating

BENCH = os.path.join(ROOT, "bench")
SHAPE_124M = dict(n_layer=12, n_head=12, n_embd=768, n_ctx=1024, vocab_size=50257)
PROMPT_LEN, PREFILL_LEN, BASELINE_TOKENS = 16, 512, 32
LONG_PROMPT = 545  # the prefill prompt of issues 11 and 12 (weight types, under load)
REFERENCE_PROMPT, REFERENCE_TOKENS = 64, 8  # the plain-loop path is slow: seconds per run on a 124M model
# Sampling from the whole distribution (-t 1 --top-p 1) with a fixed seed: the ids vary (greedy decoding on
# random weights tends to repeat one id), so the cache/no-cache identity check means something.
SAMPLING = ["-t", "1", "--top-p", "1", "-s", "1234"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="model.bin", help="model to time (default model.bin; if missing, a random "
                    "124M-shaped one is made once into bench/out/)")
    ap.add_argument("--run", default=os.path.join(ROOT, "run"), help="the engine binary (default ./run)")
    ap.add_argument("--out", default=os.path.join(BENCH, "out"), help="output directory (default bench/out)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement, best taken (default 3)")
    ap.add_argument("--max-run-seconds", type=float, default=20.0,
                    help="a measurement whose first run took longer is not repeated (default 20; 0 = always repeat)")
    ap.add_argument("--lengths", default="64,128,256", help="generated lengths (default 64,128,256)")
    ap.add_argument("--long", action="store_true", help="also 500 tokens (its --no-cache run alone takes minutes)")
    ap.add_argument("--roofline-pairs", type=int, default=6, help="decode runs between bandwidth samples (default 6)")
    ap.add_argument("--no-reference", action="store_true", help="skip the tuned kernels vs --reference runs")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer timings")
    ap.add_argument("--no-baseline", action="store_true", help="skip the numpy baseline")
    ap.add_argument("--no-weight-types", action="store_true", help="skip the f32/f16/int8 table")
    ap.add_argument("--no-quality", action="store_true", help="skip the f16/int8 logit comparison")
    ap.add_argument("--no-under-load", action="store_true", help="skip the runs with a busy core")
    ap.add_argument("--no-kv-tools", action="store_true", help="skip --prompt-cache, --kv-type (speed and quality) "
                    "and --context-shift (about 3 minutes)")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    a.run, a.out = os.path.abspath(a.run), os.path.abspath(a.out)
    try:
        a.lengths = sorted({int(x) for x in a.lengths.split(",") if x.strip()} | ({500} if a.long else set()))
    except ValueError:
        ap.error("--lengths takes comma-separated integers")
    if not a.lengths or min(a.lengths) < 1 or a.repeats < 1:
        ap.error("--lengths and --repeats must be positive")
    return a


# ----------------------------------------------------------------------------------------- the model

def find_model(arg, out_dir):
    """The model file and whether it is the random one the bench makes when the file is missing."""
    for path in (arg, os.path.join(ROOT, arg)):
        if os.path.isfile(path):
            return os.path.abspath(path), False
    log(f"model '{arg}' not found: timing a random-weight GPT-2 124M-shaped model instead")
    return random_models.exported(out_dir, random_models.GPT2_124M, "f32"), True


def prompt_ids(n, vocab, salt):
    """A fixed pseudo-random prompt (a small LCG: the same ids on every machine)."""
    x, ids = 12345 + salt, []
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        ids.append(x % min(vocab, 50256))
    return ids


# ----------------------------------------------------------------------------- cache vs --no-cache

def cache_vs_no_cache(engine, prompt, lengths, args):
    """{(mode, n): [runs]}, interleaved so that both modes see the same machine."""
    runs = {(mode, n): [] for n in lengths for mode in ("cache", "no_cache")}
    for rep in range(args.repeats):
        for (mode, n), rs in runs.items():
            if worth_repeating(rs, args.max_run_seconds):
                r = engine.run(f"{mode}{n}", prompt, n, *(["--no-cache"] if mode == "no_cache" else []))
                rs.append(r)
                log(f"rep {rep + 1}/{args.repeats}  {'--no-cache' if mode == 'no_cache' else 'KV cache  '} n={n:<4d}"
                    f"{r['wall_s']:7.2f} s  (decode {r['decode_tok_s']:6.1f} tok/s, peak RSS {r['maxrss_kb'] / 1024:.0f} MiB, "
                    f"CPU use {100 * r['cpu_util']:.0f}%)")
    return runs


def compare(runs, lengths, cfg, prompt_len):
    """One table row per length, and the checks: every run of a length printed the same n ids."""
    rows, checks = [], []
    for n in lengths:
        both = runs[("cache", n)] + runs[("no_cache", n)]
        outs = {r["stdout"] for r in both}
        n_ids = {len(o.split()) for o in outs}
        if len(outs) == 1:
            checks.append((True, f"n={n}: stdout byte-identical across all {len(both)} cache and --no-cache runs ({min(n_ids)} ids)"))
        else:
            same_mode = all(len({r["stdout"] for r in runs[(m, n)]}) == 1 for m in ("cache", "no_cache"))
            checks.append((False, f"n={n}: generated ids differ between " + ("the cache and --no-cache runs" if same_mode else
                          "repeats of the same command (nondeterminism)") + f"; see runs/*{n}.out"))
        if n_ids != {n} or any(r["stopped_early"] for r in both):
            checks.append((False, f"n={n}: a run stopped early or printed another number of ids ({sorted(n_ids)})"))
        best = {m: min(runs[(m, n)], key=lambda r: r["wall_s"]) for m in ("cache", "no_cache")}
        row = dict(n=n, same=len(outs) == 1, speedup=best["no_cache"]["wall_s"] / best["cache"]["wall_s"],
                   flop_ratio=roofline.generation_flops(cfg, prompt_len, n, True) / roofline.generation_flops(cfg, prompt_len, n, False))
        for m, b in best.items():
            row[m] = dict(wall_s=b["wall_s"], decode_tok_s=b["decode_tok_s"], ms_last=b["timings"][-1][2], kv_bytes=b["kv_bytes"],
                          maxrss_kb=max(r["maxrss_kb"] for r in runs[(m, n)]), repeats=len(runs[(m, n)]), csv=b["csv"], cmd=b["cmd"])
        rows.append(row)
    return rows, checks


def logits_check(engine, prompt, n, runs_dir):
    """The cached and uncached runs should give bit-identical distributions, not only the same ids."""
    files = [os.path.join(runs_dir, f"logits-{m}.f32") for m in ("cache", "nocache")]
    engine.run("logits-cache", prompt, n, "--logits", files[0], timings=False)
    engine.run("logits-nocache", prompt, n, "--no-cache", "--logits", files[1], timings=False)
    with open(files[0], "rb") as fa, open(files[1], "rb") as fb:
        a, b = fa.read(), fb.read()
    if a == b and a:
        return (True, f"logits of the first {n} steps are bit-identical with and without the cache ({len(a):,} bytes)")
    return (None, f"logits of the first {n} steps differ between cache and --no-cache ({len(a):,} vs {len(b):,} bytes); "
            "the ids, which the bench requires to match, are checked above")


# ------------------------------------------------------------------------------------------ plots

def plot(res, out_dir):
    """ms per token vs position, KV-cache bytes vs position, total time vs tokens generated (gnuplot)."""
    g, cfg, kvpt = res["generation"][-1], res["model"]["config"], res["model"]["kv_bytes_per_token"]
    csv = {m: g[m]["csv"] for m in ("cache", "no_cache")}
    total = os.path.join(out_dir, "total_time.dat")
    with open(total, "w") as f:  # the longest runs' prefill + per-token times summed, then every length's wall time
        f.write("# tokens cache_s no_cache_s\n")
        sums = [res["prefill_s"][m] for m in ("cache", "no_cache")]
        f.write(f"0 {sums[0]:.4f} {sums[1]:.4f}\n")
        for (step, _, c, _), (_, _, nc, _) in zip(*(res["timings"][m] for m in ("cache", "no_cache"))):
            sums = [sums[0] + c / 1e3, sums[1] + nc / 1e3]
            f.write(f"{step} {sums[0]:.4f} {sums[1]:.4f}\n")
        f.write("\n\n# tokens cache_s no_cache_s: whole-process wall time, best of repeats\n")
        for r in res["generation"]:
            f.write(f"{r['n']} {r['cache']['wall_s']:.4f} {r['no_cache']['wall_s']:.4f}\n")
    desc = f"{res['model']['label']}, {res['threads']} threads, {res['prompt_len']}-token prompt"
    kvt = res["kv_tools"]  # kv_tools.py adds a line per KV type to the memory plot, and two plots of its own
    png = {k: os.path.join(out_dir, k + ".png") for k in ("ms_per_token", "kv_cache_bytes", "total_time")
           + (("kv_types", "context_shift") if kvt else ())}
    more_memory = "".join(", \\\n     " + line for line in kv_tools.memory_lines(kvt)) if kvt else ""
    script = f"""# written by bench/bench.py; redraw with: gnuplot {rel(os.path.join(out_dir, 'plots.gp'))}
set terminal pngcairo size 1000,620 font 'sans,11'
set termoption noenhanced
set grid
set key top left box opaque
set style line 1 lc rgb '#1f77b4' lw 2.5 pt 7 ps 1.6
set style line 2 lc rgb '#d62728' lw 2.5 pt 7 ps 1.6

set output '{png['ms_per_token']}'
set title "Time per generated token: KV cache (flat) vs --no-cache (grows with the position)\\n{desc}"
set xlabel 'position of the token fed through the model'
set ylabel 'ms per token'
set yrange [0:*]
set datafile separator ','
plot '{csv['no_cache']}' skip 1 using 2:3 with lines ls 2 title '--no-cache: recomputes positions 0..p at every step', \\
     '{csv['cache']}' skip 1 using 2:3 with lines ls 1 title 'KV cache: computes one new position per step'

set output '{png['kv_cache_bytes']}'
set title "KV-cache size: 2 (K, V) x {cfg['n_layer']} layers x {cfg['n_embd']} x 4 bytes = {kvpt:,} bytes per position\\n{desc}"
set xlabel 'positions in the cache'
set ylabel 'KV cache in use (MiB)'
set xrange [0:{cfg['n_ctx']}]
plot x*{kvpt}/1048576.0 with lines ls 1 lw 1.5 dt 2 title 'bytes per position x positions, up to the full {cfg['n_ctx']}-position context', \\
     '{csv['cache']}' skip 1 using ($2+1):($4/1048576.0) with points ls 1 ps 0.5 title 'measured (--timings kv_bytes)'{more_memory}

set output '{png['total_time']}'
set title "Total time vs tokens generated: --no-cache grows quadratically, the KV cache linearly\\n{desc}"
set xlabel 'tokens generated'
set ylabel 'seconds'
set xrange [0:*]
set datafile separator whitespace
plot '{total}' index 0 using 1:3 with lines ls 2 title '--no-cache: prefill + time per token, summed', \\
     '{total}' index 1 using 1:3 with points ls 2 title '--no-cache: whole process, each length', \\
     '{total}' index 0 using 1:2 with lines ls 1 title 'KV cache: prefill + time per token, summed', \\
     '{total}' index 1 using 1:2 with points ls 1 title 'KV cache: whole process, each length'
""" + (kv_tools.plots(kvt, desc, png) if kvt else "")
    return list(png.values()) if gnuplot(script, os.path.join(out_dir, "plots.gp")) else []


# ----------------------------------------------------------------------------------------- report

def report(res):
    m, L = res["machine"], []
    L.append(f"# KV-cache benchmark: {res['model']['label']}\n")
    L.append(f"{res['date']}, commit {res['git']}, ./run built with `{res['build_flags']}`.")
    if res["model"]["random"]:
        L.append(f"Weights: random ({rel(res['model']['path'])}, made by the bench because the model file was not found); "
                 "speed does not depend on the values.")
    L.append(f"Sampling: `{' '.join(res['sampling'])}` (fixed seed) and `--ignore-eos`, so every run of a length "
             "generates the same ids, and all of them.\n")
    if res["busy"]:
        L.append(f"**Warning: the machine was busy** ({res['busy']}): these timings are noisy. (When another process holds "
                 "a core, OpenMP's spinning barriers can make ./run many times slower; OMP_WAIT_POLICY=passive avoids that.)\n")
    L.append(f"Machine: {m['cpu']}, {m['cores']} cores, ./run used {res['threads']} threads; load average {m['loadavg']:.2f} "
             f"(1 minute) when the bench started; OpenMP environment: {m['omp_env'] or 'none set'}.")

    L.append(f"\n## KV cache vs --no-cache ({res['prompt_len']}-token prompt, whole-process wall time, best of repeats)\n")
    rows = []
    for g in res["generation"]:
        c, nc = g["cache"], g["no_cache"]
        rows.append([g["n"], f"{c['wall_s']:.2f} s", f"{nc['wall_s']:.2f} s", f"**{g['speedup']:.1f}x**", f"{g['flop_ratio']:.1f}x",
                     f"{c['decode_tok_s']:.1f}", f"{nc['decode_tok_s']:.1f}", f"{c['ms_last']:.1f} / {nc['ms_last']:.1f}",
                     f"{c['maxrss_kb'] / 1024:.0f} / {nc['maxrss_kb'] / 1024:.0f}", f"{c['kv_bytes']:,}",
                     "yes" if g["same"] else "**NO**", f"{c['repeats']}/{nc['repeats']}"])
    L.append(table(["tokens", "cache", "--no-cache", "speedup", "FLOP ratio", "cache tok/s", "no-cache tok/s",
                    "last-token ms (c / nc)", "peak RSS MiB (c / nc)", "KV-cache bytes", "same ids", "repeats (c/nc)"], rows))
    L.append("\n*speedup* = no-cache / cache wall time. *FLOP ratio* = FLOPs of the no-cache run / FLOPs of the cached run "
             "(the speedup if both ran at the same FLOP/s; the cached decode is bound by memory bandwidth, so the measured "
             "speedup is lower). *tok/s* from ./run's `decode:` line. *Peak RSS* includes the mapped weight pages the "
             "process touched. *KV-cache bytes* from the `kv cache:` line (--no-cache refills the same buffer at every "
             f"step). *repeats*: best of --repeats {res['repeats']}, but a measurement whose first run took over "
             f"{res['max_run_seconds']:g} s is not repeated. The longest runs:\n")
    L += [f"    {res['generation'][-1][m]['cmd']}" for m in ("cache", "no_cache")]
    for key, module in (("roofline", roofline), ("kernels", tuned_vs_reference), ("tokenizer", tokenizer_speed), ("baseline", baseline),
                        ("weight_types", weight_types), ("quality", quality), ("under_load", under_load),
                        ("kv_tools", kv_tools), ("kv_quality", kv_quality)):
        if res[key]:
            L += [""] + module.report(res[key])
    L.append("\n## Checks\n")
    L += [f"- {'ok' if ok else 'warning' if ok is None else '**FAILED**'}: {what}" for ok, what in res["checks"]]
    L.append(f"\n## Reproduce\n\n    {res['command']}\n\nRaw data: results.json; every run's stdout, stderr and --timings "
             f"CSV in {rel(res['runs_dir'])}/. The whole bench took {res['elapsed_s']:.0f} s.")
    if res["plots"]:
        L.append("\n## Plots\n")
        L += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in res["plots"]]
    return "\n".join(L) + "\n"


def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def git_info():
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "unknown") + \
        (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def build_flags(exe):
    """The flags ./run was built with (from `make`), with a warning when they are not worth timing."""
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise BenchError(f"{rel(exe)} not found or not executable: build it first with `make`")
    if os.path.getmtime(os.path.join(ROOT, "run.c")) > os.path.getmtime(exe):
        log("warning: run.c is newer than ./run: this times an old build (run `make`)")
    path = os.path.join(ROOT, ".build-flags")
    flags = read_text(path).strip() if os.path.exists(path) else "unknown flags"
    if "-fsanitize" in flags or " -O0" in flags or " -O1" in flags:
        log(f"warning: ./run was built with `{flags}`, a debug build not worth timing (run `make clean all`)")
    return flags


def main():
    args = parse_args()
    flags = build_flags(args.run)
    machine_exe = os.path.join(BENCH, "machine")
    if not os.access(machine_exe, os.X_OK):
        raise BenchError("bench/machine not found: build it with `make bench/machine` (or run `make bench`)")
    runs_dir = os.path.join(args.out, "runs")
    shutil.rmtree(runs_dir, ignore_errors=True)
    os.makedirs(runs_dir)
    loadavg = os.getloadavg()[0]
    model, is_random = find_model(args.model, args.out)
    cfg = read_config(model)
    V, n_ctx = cfg["vocab_size"], cfg["n_ctx"]
    lengths = [n for n in args.lengths if PROMPT_LEN + n <= n_ctx]
    if lengths != args.lengths:
        log(f"skipping lengths {sorted(set(args.lengths) - set(lengths))}: they do not fit in the {n_ctx}-position context")
    if not lengths:
        raise BenchError("no generated length fits in the model's context")
    engine = Engine(args.run, model, SAMPLING, args.out, runs_dir)
    prompt = engine.prompt("prompt", prompt_ids(PROMPT_LEN, V, 0))

    # The core, between two full samples of the machine (its FMA peak is measured only there).
    machine = roofline.Machine(machine_exe, model)
    log(f"model: {rel(model)}; a warm-up run pages the weights in")
    warm = engine.run("warmup", prompt, 8, timings=False)
    machine.sample("before")
    runs = cache_vs_no_cache(engine, prompt, lengths, args)
    machine.sample("after")
    generation, checks = compare(runs, lengths, cfg, PROMPT_LEN)
    checks.append(logits_check(engine, prompt, min(16, lengths[0]), runs_dir))

    # The context, each part in its own module.
    res = dict(roofline=roofline.measure(engine, machine, cfg, args, prompt, runs[("cache", 256 if 256 in lengths else lengths[-1])],
                                         engine.prompt("prefill", prompt_ids(min(PREFILL_LEN, n_ctx - 1), V, 1))))
    res["kernels"] = None if args.no_reference else tuned_vs_reference.measure(
        engine, engine.prompt("reference", prompt_ids(REFERENCE_PROMPT, V, 2)), REFERENCE_TOKENS, args.repeats, args.max_run_seconds)
    res["tokenizer"] = None if args.no_tokenizer else tokenizer_speed.measure(args.run, args.out, runs_dir, args.repeats)
    if cfg["weight_type"] != 0 and not args.no_baseline:
        log("the numpy baseline reads float32 weights only: skipped for this model")
        args.no_baseline = True
    res["baseline"] = None if args.no_baseline else baseline.measure(engine, prompt, BASELINE_TOKENS, args.repeats, runs_dir)
    long_prompt = engine.prompt("long", prompt_ids(LONG_PROMPT, SHAPE_124M["vocab_size"], 3))  # for the random 124M model
    res["weight_types"] = None if args.no_weight_types else weight_types.measure(engine, machine, args.out, args, prompt, long_prompt)
    res["quality"] = None if args.no_quality else quality.measure(args.run, args.out, runs_dir)
    res["under_load"] = None if args.no_under_load else under_load.measure(
        engine.for_model(random_models.exported(args.out, random_models.GPT2_124M, "f32")), machine, args.repeats, long_prompt)
    res["kv_tools"] = None if args.no_kv_tools else kv_tools.measure(engine, cfg, args, prompt_ids, prompt, args.out)
    checks += res["kv_tools"]["prompt_cache"]["checks"] if res["kv_tools"] else []
    res["kv_quality"] = None if args.no_kv_tools else kv_quality.measure(args.run, args.out, runs_dir)

    timed = [r for rs in runs.values() for r in rs if r["wall_s"] > 1.0]
    low = [r for r in timed if r["cpu_util"] < 0.85]
    longest = {m: min(runs[(m, lengths[-1])], key=lambda r: r["wall_s"]) for m in ("cache", "no_cache")}
    omp = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("OMP_", "GOMP_")))
    label = ("GPT-2 124M-shaped" if all(cfg[k] == v for k, v in SHAPE_124M.items()) else
             "GPT-2 ({n_layer} layers, {n_embd} wide)".format(**cfg)) + f", {roofline.WEIGHT_TYPES[cfg['weight_type']][0]} weights" + \
        (" (random)" if is_random else f" ({os.path.basename(model)})")
    res.update(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), git=git_info(), build_flags=flags, sampling=SAMPLING,
        command=" ".join(([omp] if omp else []) + ["python3 bench/bench.py"] + [shlex.quote(a) for a in sys.argv[1:]]),
        model=dict(path=model, random=is_random, config=cfg, label=label, kv_bytes_per_token=warm["kv_bytes_per_token"]),
        machine=dict(cpu=cpu_model(), cores=os.cpu_count(), loadavg=loadavg, omp_env=omp), threads=warm["threads"],
        busy=f"{len(low)} of {len(timed)} runs got less than 85% of {warm['threads']} cores" if low else "",
        repeats=args.repeats, max_run_seconds=args.max_run_seconds, prompt_len=PROMPT_LEN, generation=generation,
        checks=checks, runs_dir=runs_dir, prefill_s={m: r["prefill_s"] for m, r in longest.items()},
        timings={m: r["timings"] for m, r in longest.items()})
    res["plots"] = [] if args.no_plots else plot(res, args.out)
    if res["weight_types"] and res["weight_types"]["plot"]:
        res["plots"].append(res["weight_types"]["plot"])
    return write_results(res, runs, args.out)


def write_results(res, runs, out_dir):
    """results.md (also printed) and results.json; exit status 1 if a check failed."""
    res["elapsed_s"] = time.time() - T0
    md = report(res)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    del res["timings"]  # the per-token rows are in the CSVs
    res["runs"] = {f"{m}:{n}": [{k: v for k, v in r.items() if k not in ("timings", "stdout")} for r in rs] for (m, n), rs in runs.items()}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(md)
    log(f"wrote {rel(out_dir)}/results.md, results.json" + "".join(", " + os.path.basename(p) for p in res["plots"]))
    if any(ok is False for ok, _ in res["checks"]):
        log("FAILED: see the Checks section")
        return 1
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt  # spawn() kills the child it waits for


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except (BenchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
