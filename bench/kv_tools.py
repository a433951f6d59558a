"""The KV cache as a tool: --prompt-cache, --kv-type f32|f16|int8, --context-shift.

Prompt cache: for prompts of about 128, 512 and 1000 tokens, `./run ... -n 1` without --prompt-cache,
cold (the file does not exist: the prompt is computed and saved) and warm (the same prompt again: all but
its last token are loaded), interleaved, best of the repeats. Time to first token is the `prefill:` line's
time: from the start of the prompt's processing to its logits, the cache's load and save included, the
model load not. The whole process is the wall time of each command.

KV types: one run per type from the 16-token prompt to the end of the context (decode time per token and
KV bytes against the position, from --timings), then the comparison at 900+ cached positions that the
plot cannot make on a VM whose bandwidth swings: short runs at a ~950-token prompt, the three types one
after the other, repeated; each type's median ms per token, and the ratio within each repeat.

Context shift: one --context-shift run of about 3000 tokens from the 16-token prompt: time per token
against the step (the recomputations stand out) and the `context shifts:` line.
"""
import os
import re
import statistics

from common import log, table, worth_repeating

PROMPT_SIZES = (128, 512, 1000)
KV_TYPES = ("f32", "f16", "int8")
SHIFT_TOKENS = 3000
PAIRED_PROMPT, PAIRED_TOKENS = 950, 24
COLOR = {"f32": "#1f77b4", "f16": "#ff7f0e", "int8": "#2ca02c"}
SHIFT_LINE = re.compile(r"^context shifts: (\d+), (\d+) tokens recomputed in ([\d.]+) s", re.M)
PC_LINES = re.compile(r"^prompt cache: (?:reused (\d+) of (\d+) prompt tokens|saved (\d+) tokens, (\d+) bytes)", re.M)


def measure(engine, cfg, args, prompt_ids, short_prompt, out_dir):
    """prompt_ids(n, vocab, salt) makes a fixed prompt; short_prompt is the core's 16-token one."""
    V, n_ctx = cfg["vocab_size"], cfg["n_ctx"]
    res = dict(n_ctx=n_ctx, prompt_cache=prompt_cache(engine, V, n_ctx, args, prompt_ids, out_dir))
    paired = engine.prompt("kv-paired", prompt_ids(min(PAIRED_PROMPT, n_ctx - PAIRED_TOKENS - 1), V, 4))
    res.update(kv_types(engine, n_ctx, args, short_prompt, paired))
    res["shift"] = context_shift(engine, short_prompt, n_ctx)
    return res


# --------------------------------------------------------------------------------------- prompt cache

def prompt_cache(engine, V, n_ctx, args, prompt_ids, out_dir):
    rows, checks = [], []
    for size in sorted({min(s, n_ctx - 1) for s in PROMPT_SIZES}):
        prompt = engine.prompt(f"prompt-cache-{size}", prompt_ids(size, V, 10 + size))
        path = os.path.join(out_dir, f"prompt-{size}.kv")
        runs = {"none": [], "cold": [], "warm": []}
        for _ in range(args.repeats):
            for mode in runs:
                if not worth_repeating(runs[mode], args.max_run_seconds):
                    continue
                if mode == "cold" and os.path.exists(path):
                    os.remove(path)
                extra = [] if mode == "none" else ["--prompt-cache", path]
                r = engine.run(f"pc{size}-{mode}", prompt, 1, *extra, timings=False)
                r["pc"] = PC_LINES.findall(r["stderr"])
                runs[mode].append(r)
            log(f"prompt cache, {size}-token prompt: first token after {runs['none'][-1]['prefill_s']:.3f} s without it, "
                f"{runs['cold'][-1]['prefill_s']:.3f} s cold, {runs['warm'][-1]['prefill_s']:.3f} s warm")
        best = {m: min(rs, key=lambda r: r["prefill_s"]) for m, rs in runs.items()}
        whole = {m: min(r["wall_s"] for r in rs) for m, rs in runs.items()}
        warm_reused = {int(r["pc"][0][0]) for r in runs["warm"]}
        same = len({r["stdout"] for rs in runs.values() for r in rs}) == 1
        checks.append((same and warm_reused == {size - 1},
                       f"prompt cache, {size}-token prompt: the same first token without, cold and warm; warm runs reused "
                       f"{sorted(warm_reused)} of {size} tokens"))
        rows.append(dict(size=size, ttft={m: b["prefill_s"] for m, b in best.items()}, whole=whole,
                         file_bytes=os.path.getsize(path), repeats=len(runs["warm"]),
                         cmd={m: b["cmd"] for m, b in best.items()}))
    return dict(rows=rows, checks=checks)


# ------------------------------------------------------------------------------------------- KV types

def kv_types(engine, n_ctx, args, short_prompt, paired_prompt):
    n = n_ctx - len(short_prompt.split()) - 8
    full = {}
    for kv in KV_TYPES:
        r = engine.run(f"kv-{kv}", short_prompt, n, "--kv-type", kv)
        full[kv] = dict(csv=r["csv"], bytes_per_token=r["kv_bytes_per_token"], cmd=r["cmd"], decode_tok_s=r["decode_tok_s"],
                        first_ms=band(r["timings"], 0, 100), last_ms=band(r["timings"], n_ctx - 100, n_ctx))
        log(f"--kv-type {kv}: {n} tokens at {r['decode_tok_s']:.1f} tok/s, {r['kv_bytes_per_token']:,} bytes per position")
    paired = {kv: [] for kv in KV_TYPES}
    for rep in range(args.repeats):
        for kv in KV_TYPES:
            r = engine.run(f"kv-paired-{kv}", paired_prompt, PAIRED_TOKENS, "--kv-type", kv)
            paired[kv].append(statistics.median(ms for _, _, ms, _ in r["timings"]))
        log(f"--kv-type at {len(paired_prompt.split())}+ positions, repeat {rep + 1}: "
            + ", ".join(f"{kv} {paired[kv][-1]:.2f} ms/token" for kv in KV_TYPES))
    return dict(kv_full=full, kv_paired=paired, paired_from=len(paired_prompt.split()), full_tokens=n)


def band(rows, lo, hi):
    """Median ms per token of the steps at positions lo..hi-1."""
    ms = [m for _, pos, m, _ in rows if lo <= pos < hi]
    return statistics.median(ms) if ms else None


# -------------------------------------------------------------------------------------- context shift

def context_shift(engine, short_prompt, n_ctx):
    r = engine.run("context-shift", short_prompt, SHIFT_TOKENS, "--context-shift")
    m = SHIFT_LINE.search(r["stderr"])
    ms = [row[2] for row in r["timings"]]
    rows = r["timings"]  # a shift step is one whose position is lower than the step before's
    shift_steps = [(step, ms_) for (_, prev, _, _), (step, pos, ms_, _) in zip(rows, rows[1:]) if pos < prev]
    with open(r["csv"] + ".shifts", "w") as f:
        f.write("".join(f"{step},{ms_}\n" for step, ms_ in shift_steps))
    log(f"--context-shift, {SHIFT_TOKENS} tokens: {r['decode_tok_s']:.1f} tok/s; {m.group(0) if m else 'no shift line'}")
    return dict(tokens=SHIFT_TOKENS, n_ctx=n_ctx, csv=r["csv"], cmd=r["cmd"], decode_s=r["decode_s"], decode_tok_s=r["decode_tok_s"],
                shifts=int(m.group(1)), recomputed=int(m.group(2)), shift_s=float(m.group(3)),
                median_ms=statistics.median(ms), shift_ms=[ms_ for _, ms_ in shift_steps],
                other_worst_ms=max(x for i, x in enumerate(ms) if i + 1 not in {st for st, _ in shift_steps}))


# ------------------------------------------------------------------------------------- report, plots

def report(res):
    pc = res["prompt_cache"]
    L = ["## The prompt cache: time to first token, cold and warm (`--prompt-cache FILE -n 1`)\n"]
    rows = []
    for r in pc["rows"]:
        t, w = r["ttft"], r["whole"]
        rows.append([r["size"], f"{t['none']:.3f} s", f"{t['cold']:.3f} s", f"{t['warm']:.3f} s",
                     f"**{t['cold'] / t['warm']:.0f}x**", f"{w['cold']:.2f} s", f"{w['warm']:.2f} s",
                     f"**{w['cold'] / w['warm']:.1f}x**", f"{r['file_bytes']:,}"])
    L.append(table(["prompt tokens", "first token without --prompt-cache", "cold", "warm", "cold / warm",
                    "whole process, cold", "warm", "cold / warm", "file bytes"], rows))
    L.append("\n*First token*: the `prefill:` time, from the start of the prompt's processing to its logits (reading and "
             "writing the cache file included; loading the model not). *cold*: the file does not exist, so the whole prompt "
             "is computed and saved; *warm*: the same prompt again, all but its last token loaded. *whole process*: wall "
             f"time of the command. Best of {pc['rows'][0]['repeats']} interleaved run(s). The largest:\n")
    big = pc["rows"][-1]["cmd"]
    L += [f"    {big['cold']}  # cold: after rm of the file", f"    {big['warm']}  # warm"]

    full, paired = res["kv_full"], res["kv_paired"]
    L.append(f"\n## KV cache types (`--kv-type`)\n")
    rows = []
    for kv in KV_TYPES:
        f = full[kv]
        ratios = [a / b for a, b in zip(paired["f32"], paired[kv])]
        rows.append([kv, f"{f['bytes_per_token']:,}", f"{f['bytes_per_token'] * res['n_ctx'] / 2**20:.1f} MiB",
                     f"{f['first_ms']:.1f}", f"{f['last_ms']:.1f}", f"{statistics.median(paired[kv]):.2f}",
                     f"**{statistics.median(ratios):.2f}x**"])
    L.append(table(["type", "bytes per position", f"full {res['n_ctx']}-position cache", "ms/token, positions 0-99",
                    "last 100 positions", f"ms/token at {res['paired_from']}+ (paired)", "f32 / type"], rows))
    L.append(f"\nThe first columns come from one {res['full_tokens']}-token run per type (the plots below); the clock of this "
             "VM changes speed from one minute to the next, so the last two come from short runs at "
             f"{res['paired_from']}+ positions, the three types back to back, {len(paired['f32'])} time(s): each type's median "
             "ms per token, and the median over the repeats of f32's time divided by the type's. Commands:\n")
    L += [f"    {full[kv]['cmd']}" for kv in KV_TYPES]

    s = res["shift"]
    L.append(f"\n## Generating past the context (`--context-shift`, {s['tokens']} tokens)\n")
    L.append(table(["tokens", "context shifts", "tokens recomputed", "time in shifts", "decode tok/s (all steps)",
                    "median ms/token", "each shift step", "slowest other step"],
                   [[s["tokens"], s["shifts"], f"{s['recomputed']:,}", f"{s['shift_s']:.2f} s ({100 * s['shift_s'] / s['decode_s']:.0f}%)",
                     f"{s['decode_tok_s']:.1f}", f"{s['median_ms']:.1f}", " / ".join(f"{x:.0f}" for x in s["shift_ms"]) + " ms",
                     f"{s['other_worst_ms']:.0f} ms"]]))
    L.append(f"\n    {s['cmd']}")
    return L


def memory_lines(res):
    """Clauses for the core's KV-cache-bytes plot: the measured bytes of each type's run."""
    return [f"'{res['kv_full'][kv]['csv']}' skip 1 using ($2+1):($4/1048576.0) with lines lw 2 lc rgb '{COLOR[kv]}' "
            f"title '--kv-type {kv}: {res['kv_full'][kv]['bytes_per_token']:,} bytes per position (--timings kv_bytes)'"
            for kv in KV_TYPES]


def plots(res, desc, png):
    """gnuplot commands for the decode-per-type and the context-shift plots."""
    full, s = res["kv_full"], res["shift"]
    lines = ", \\\n     ".join(f"'{full[kv]['csv']}' skip 1 using 2:3 with lines lw 1.5 lc rgb '{COLOR[kv]}' title "
                              f"'--kv-type {kv} ({full[kv]['bytes_per_token']:,} bytes per position)'" for kv in KV_TYPES)
    return f"""
set output '{png['kv_types']}'
set title "Decode time per token vs position, KV cache stored as f32, f16 or int8\\n{desc}"
set xlabel 'position of the token fed through the model'
set ylabel 'ms per token'
set xrange [0:{res['n_ctx']}]
set yrange [0:{1.6 * max(full[kv]['last_ms'] for kv in KV_TYPES):.0f}]
set datafile separator ','
plot {lines}

set output '{png['context_shift']}'
set title "--context-shift: {s['tokens']} tokens through a {s['n_ctx']}-position window, {s['shifts']} shifts ({s['shift_s']:.2f} s recomputing)\\n{desc}"
set xlabel 'generated token'
set ylabel 'ms per token (log scale)'
set logscale y
set xrange [0:*]
set yrange [5:{8 * max(s['shift_ms'] + [s['median_ms']]):.0f}]
set key top right
plot '{s['csv']}' skip 1 using 1:3 with lines lw 1.5 lc rgb '{COLOR["f32"]}' title 'time per token', \\
     '{s['csv']}.shifts' using 1:2 with points pt 7 ps 1.8 lc rgb '#d62728' title 'a shift: the remaining window recomputed from position 0'
unset logscale y
set key top left
"""
