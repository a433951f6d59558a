"""What every part of the bench shares: timing a process from outside, running ./run, reading its summary.

A process is timed as a whole: wall time around it, CPU time and peak RSS from wait4's rusage. ./run's
summary lines on stderr (`model:`, `prefill:`, `decode:`, `kv cache:`) give the per-phase figures, and
--timings FILE one CSV row per generated token. Standard library only.
"""
import copy
import itertools
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = time.time()


class BenchError(Exception):
    """An environment problem: printed as one `error:` line, exit status 2."""


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def rel(path):
    """A path as typed from the repository root."""
    r = os.path.relpath(path, ROOT)
    return path if r.startswith("..") else r


def numpy_python():
    """An interpreter that can import numpy (this one, else Debian's), or None."""
    for py in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if py and os.path.exists(py) and subprocess.run([py, "-c", "import numpy"], capture_output=True).returncode == 0:
            return py
    return None


def spawn(cmd, base, env=None):
    """Runs cmd from the repository root (in env, default this process's) with stdout and stderr in
    base.out and base.err; returns wall seconds, CPU seconds, peak RSS (KiB) and the exit status."""
    with open(base + ".out", "wb") as out, open(base + ".err", "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        try:
            _, status, ru = os.wait4(p.pid, 0)  # wait4, not wait: the child's own rusage
        except BaseException:  # Ctrl-C or SIGTERM: do not leave the child running
            p.kill()
            p.wait()
            raise
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it again
    return dict(wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, maxrss_kb=ru.ru_maxrss, rc=p.returncode)


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def model_version():
    """The model.bin version this checkout's run.c writes and reads (MODEL_VERSION)."""
    with open(os.path.join(ROOT, "run.c")) as f:
        return int(re.search(r"^#define MODEL_VERSION (\d+)", f.read(), re.M).group(1))


def read_config(path):
    with open(path, "rb") as f:
        h = f.read(36)
    if len(h) < 36 or h[:4] != b"GPT2":
        raise BenchError(f"{rel(path)} is not a model.bin (see the model.bin section of README.md)")
    cfg = dict(zip(("version", "n_layer", "n_head", "n_embd", "n_ctx", "vocab_size"), struct.unpack("<6I", h[4:28])))
    cfg["weight_type"] = struct.unpack("<I", h[32:36])[0] if cfg["version"] >= 2 else 0  # version 1: float32
    return cfg


SUMMARY = {
    "prefill": re.compile(r"^prefill: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", re.M),
    "decode": re.compile(r"^decode: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", re.M),
    "kv": re.compile(r"^kv cache: (\d+) of \d+ positions, [\d.]+ MiB \((\d+) bytes/token\)", re.M),
    "threads": re.compile(r"^model:.*, (\d+) threads?\b", re.M),
}
THREAD_CHANGES = re.compile(r"^threads: (.*)$", re.M)  # only when decode changed its thread count


def parse_summary(stderr, tag):
    m = {}
    for key, rx in SUMMARY.items():
        m[key] = rx.search(stderr)
        if not m[key]:
            raise BenchError(f"{tag}: no '{key}' line in ./run's stderr (did the summary format change?):\n{stderr.strip()}")
    pf, dc, kv = m["prefill"].groups(), m["decode"].groups(), m["kv"].groups()
    changes = THREAD_CHANGES.search(stderr)
    return dict(prefill_tokens=int(pf[0]), prefill_s=float(pf[1]), prefill_tok_s=float(pf[2]),
                decode_tokens=int(dc[0]), decode_s=float(dc[1]), decode_tok_s=float(dc[2]),
                kv_bytes=int(kv[0]) * int(kv[1]), kv_bytes_per_token=int(kv[1]), threads=int(m["threads"].group(1)),
                thread_changes=changes.group(1) if changes else None,
                stopped_early="stopped: generated the requested" not in stderr)


def read_timings(path, n_expected, tag):
    """--timings rows as (step, position, ms, kv_bytes)."""
    with open(path) as f:
        if f.readline().strip() != "step,position,ms,kv_bytes":
            raise BenchError(f"{tag}: unexpected --timings header in {rel(path)}")
        rows = [tuple(t(x) for t, x in zip((int, int, float, int), line.split(","))) for line in f]
    if len(rows) != n_expected:
        raise BenchError(f"{tag}: --timings has {len(rows)} rows, expected {n_expected}")
    return rows


class Engine:
    """./run on one model with one sampling setting. Every run is a numbered set of files in runs_dir
    (NNN-tag.out, .err, .csv), and passes --ignore-eos, so it generates exactly the tokens asked for."""

    def __init__(self, exe, model, sampling, out_dir, runs_dir):
        self.exe, self.model, self.sampling, self.out, self.dir = exe, model, sampling, out_dir, runs_dir
        self.counter = itertools.count(1)
        self.prompt_files = {}  # ids string -> "$(cat FILE)", so the commands in the report stay readable

    def for_model(self, model):
        """The same engine on another model file; run numbers and prompt files stay shared."""
        e = copy.copy(self)
        e.model = model
        return e

    def prompt(self, name, ids):
        """Writes the ids to bench/out/NAME.ids; returns them as ./run's --prompt-ids argument."""
        text = " ".join(map(str, ids))
        path = os.path.join(self.out, f"{name}.ids")
        with open(path, "w") as f:
            f.write(text + "\n")
        self.prompt_files[text] = f'"$(cat {rel(path)})"'
        return text

    def run(self, tag, prompt, n, *extra, timings=True, env=None):
        """env: variables to set (a value None removes one) on top of this process's environment."""
        base = os.path.join(self.dir, f"{next(self.counter):03d}-{tag}")
        cmd = [self.exe, self.model, "--prompt-ids", prompt, "--print-ids", "-n", str(n), "--ignore-eos", *self.sampling, *extra]
        if timings:
            cmd += ["--timings", base + ".csv"]
        r = spawn(cmd, base, env and {k: v for k, v in {**os.environ, **env}.items() if v is not None})
        stderr = read_text(base + ".err")
        if r["rc"] != 0:
            raise BenchError(f"{tag}: ./run exited with {r['rc']}: {stderr.strip().splitlines()[-1:]}\n  command: {self.shown(cmd)}")
        with open(base + ".out", "rb") as f:
            r["stdout"] = f.read()
        r.update(parse_summary(stderr, tag), cmd=" ".join([f"{k}={v}" for k, v in (env or {}).items() if v] + [self.shown(cmd)]),
                 stderr=stderr)
        r["cpu_util"] = r["cpu_s"] / (r["wall_s"] * r["threads"])
        if timings:
            r["csv"], r["timings"] = base + ".csv", read_timings(base + ".csv", r["decode_tokens"], tag)
        return r

    def shown(self, cmd):
        return shown(cmd, self.prompt_files)


def shown(cmd, replace=None):
    """cmd as one would type it from the repository root."""
    def word(c):
        if replace and c in replace:
            return replace[c]
        c = rel(c) if os.path.isabs(c) else c
        return "./run" if c == "run" else shlex.quote(c)
    return " ".join(map(word, cmd))


def worth_repeating(runs, max_run_seconds):
    """A measurement gets another repeat unless its first run took longer than max_run_seconds (0 = always
    repeat): such a run averages over hundreds of steps already."""
    return not runs or max_run_seconds <= 0 or runs[0]["wall_s"] <= max_run_seconds


def table(header, rows, align=None):
    """A markdown table, padded so that it also reads as plain text; columns after the first right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) if align[i] == "l" else c.rjust(w[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join("-" * (w[i] + 1) + ":" if align[i] == "r" else "-" * (w[i] + 2) for i in range(len(w))) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def gnuplot(script, path):
    """Writes the gnuplot script to path and runs it; False (with a log line) when there is no gnuplot
    or it fails: the tables are complete without the plots."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found (apt-get install gnuplot-nox): plots skipped; the tables are complete without them")
        return False
    with open(path, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", path], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed on {rel(path)}, plots skipped: {r.stderr.strip()}")
    return r.returncode == 0


def pct(x):
    return f"{100 * x:.0f}%" if x is not None else "n/a"
