"""Under load (issue 12): decode and prefill when another program keeps one core busy.

Rows: ./run's default (all cores, fewer while decoding when a core is taken), --threads 1,
OMP_WAIT_POLICY=passive with --threads 2, and --threads 2 (a fixed count with OpenMP's spinning
barriers: a thread that waits for a descheduled one spins away the CPU that one needs). Columns: idle,
and with a busy core: a plain shell loop the bench starts and always kills, pinned with taskset to the
last core when taskset exists, at normal priority. Decode: `-p "Once upon a time" -n 32 -t 0
--ignore-eos` (the prompt passed as its ids); prefill: a 545-token prompt. Every cell is run --repeats
times, interleaved, and the median taken: the point is the typical run under contention, not the best.
"""
import contextlib
import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import time

import roofline
from common import BenchError, log, read_config, table

DECODE_TEXT, DECODE_TOKENS = "Once upon a time", 32
CONFIGS = (("default (adaptive)", (), None), ("--threads 1", ("--threads", "1"), None),
           ("OMP_WAIT_POLICY=passive --threads 2", ("--threads", "2"), "passive"), ("--threads 2", ("--threads", "2"), None))
LOADS = ("idle", "one core busy")


def _die_with_parent():
    """In the busy loop's process: the kernel kills it if the bench dies without cleaning up (Linux)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def busy_core(core):
    """A spinning shell loop for the duration of the with-block; killed on leaving it, errors and Ctrl-C included."""
    cmd = ["sh", "-c", "while :; do :; done"]
    p = subprocess.Popen((["taskset", "-c", str(core)] if core is not None else []) + cmd, preexec_fn=_die_with_parent)
    try:
        time.sleep(0.2)  # running before the first timed run starts
        yield
    finally:
        p.kill()
        p.wait()


def tokenize(exe, text):
    r = subprocess.run([exe, "--tokenize", "-p", text], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"./run --tokenize failed: {r.stderr.strip()}")
    return r.stdout.split()


def measure(engine, machine, repeats, long_prompt):
    """engine: on a GPT-2 124M-shaped f32 model."""
    core = os.cpu_count() - 1 if shutil.which("taskset") else None
    prompt = engine.prompt("once-upon-a-time", tokenize(engine.exe, DECODE_TEXT))
    cells = {(c, load, kind): [] for c, _, _ in CONFIGS for load in LOADS for kind in ("decode", "prefill")}
    changes = {load: [] for load in LOADS}  # the default's `threads:` lines
    loadavg = os.getloadavg()[0]  # "idle" means without the bench's busy loop; other programs may run
    bandwidth = [machine.sample("before the runs under load", read_only=True)["limit_gbps"]]
    for rep in range(repeats):
        for load in LOADS:
            with busy_core(core) if load != "idle" else contextlib.nullcontext():
                for name, args, policy in CONFIGS:
                    env = {"OMP_WAIT_POLICY": policy}  # None: unset, so each row means what it says
                    d = engine.run("load-decode", prompt, DECODE_TOKENS, "-t", "0", *args, env=env, timings=False)
                    p = engine.run("load-prefill", long_prompt, 1, *args, env=env, timings=False)
                    cells[(name, load, "decode")].append(d["decode_tok_s"])
                    cells[(name, load, "prefill")].append(p["prefill_tok_s"])
                    if not args:
                        changes[load].append(d["thread_changes"])
                        cmds = (d["cmd"], p["cmd"])
                    log(f"rep {rep + 1}/{repeats}, {load:13s} {name:36s} decode {d['decode_tok_s']:6.1f} tok/s, "
                        f"prefill {p['prefill_tok_s']:6.1f} tok/s" + (f"  (threads: {d['thread_changes']})" if d["thread_changes"] else ""))
    bandwidth.append(machine.sample("after the runs under load", read_only=True)["limit_gbps"])
    med = {k: statistics.median(v) for k, v in cells.items()}
    ratios = {}
    for load in LOADS:
        for kind in ("decode", "prefill"):
            best_other = max(med[(c, load, kind)] for c, _, _ in CONFIGS[1:])
            ratios[(load, kind)] = med[(CONFIGS[0][0], load, kind)] / best_other
    weights, kv = roofline.decode_bytes(read_config(engine.model), len(prompt.split()), DECODE_TOKENS)
    return dict(core=core, repeats=repeats, loadavg=loadavg, cells={"|".join(k): v for k, v in cells.items()},
                median={"|".join(k): v for k, v in med.items()}, ratios={"|".join(k): v for k, v in ratios.items()},
                thread_changes=changes, bandwidth=max(bandwidth), bandwidth_samples=bandwidth, bytes_per_token=weights + kv,
                roofline_fraction=med[(CONFIGS[0][0], "idle", "decode")] * (weights + kv) / 1e9 / max(bandwidth),
                prefill_tokens=len(long_prompt.split()), decode_cmd=cmds[0], prefill_cmd=cmds[1])


def switched(lines, load):
    n = sum(1 for x in lines if x)
    return f"{load}: {n} of {len(lines)} decode runs" + (f" (e.g. `threads: {next(x for x in lines if x)}`)" if n else "")


def report(r):
    key = lambda *k: "|".join(k)
    rows = [[name] + [f"{r['median'][key(name, load, kind)]:.1f}" for kind in ("decode", "prefill") for load in LOADS]
            for name, _, _ in CONFIGS]
    rows.append(["**default / best other row**"] + [f"**{r['ratios'][key(load, kind)]:.2f}**" for kind in ("decode", "prefill") for load in LOADS])
    ok = lambda x, goal: f"{x:.2f} ({'met' if x >= goal else '**not met**'}, target >= {goal:g})"
    worst = min(r["ratios"].values())
    pinned = f"pinned to core {r['core']} with `taskset -c {r['core']}`" if r["core"] is not None else "not pinned (no taskset)"
    return ["## Under load: another program keeps one core busy (issue 12)\n",
            table(["configuration (GPT-2 124M-shaped, f32)", "decode tok/s, idle", "decode, one core busy",
                   f"prefill tok/s ({r['prefill_tokens']} tokens), idle", "prefill, one core busy"], rows),
            f"\nMedian of {r['repeats']} runs per cell, interleaved (idle, then busy, every configuration each time). The busy "
            f"core is `sh -c 'while :; do :; done'` at normal priority, {pinned}, started before and killed after each "
            f"busy block. *idle* means without that loop; the load average was {r['loadavg']:.2f} (1 minute) before these "
            "runs. Rows without OMP_WAIT_POLICY run with it unset. The last row divides the default's median by "
            f"the best of the other rows' in that column: lowest {ok(worst, 0.9)}.\n",
            "./run adapts its thread count while decoding only; prefill uses all cores. The default switched its thread "
            "count (a `threads:` line in the summary) in " +
            "; ".join(switched(r["thread_changes"][load], load) for load in LOADS) + ".\n",
            f"Decode idle against the memory roofline: the default's median {r['median'][key(CONFIGS[0][0], 'idle', 'decode')]:.1f} "
            f"tok/s x {r['bytes_per_token'] / 1e6:.1f} MB per token over {r['bandwidth']:.1f} GB/s (the higher of the read "
            f"bandwidths measured before and after these runs: {' and '.join(f'{x:.1f}' for x in r['bandwidth_samples'])}) = "
            f"{ok(r['roofline_fraction'], 0.9)}.\n",
            "Commands of the default row (the others add `--threads N`, and OMP_WAIT_POLICY=passive in front):\n",
            f"    {r['decode_cmd']}", f"    {r['prefill_cmd']}"]
