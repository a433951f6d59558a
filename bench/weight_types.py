"""Weight types: f32, f16 and int8 exports of one random GPT-2 124M-shaped checkpoint.

For each type: file size, peak RSS, decode tok/s against that type's own roofline (the bytes a step
reads, with the five big matrices in that type, over the read bandwidth sampled right before and after
each run), decode tok/s against f32's in the same round, and prefill tok/s on a long prompt against the
fp32 FMA peak. The checkpoint is the bench's own (random_models.py) whatever --model is, so that the
three files hold the same weights. Decode runs DECODE_ROUNDS rounds, the types interleaved (f32, f16,
int8, f32, ...) and ratios and fractions taken as medians over the rounds; prefill takes the best of
--repeats, like the core.

int8 has two legitimate designs, and both are timed on the same int8 weights: this run.c quantizes the
inputs too and multiplies in integers (VNNI); the run.c of commit DEQUANT_COMMIT, built here from git
history with the same flags, widens the int8 weights to floats in registers and multiplies float inputs.
That run.c reads int8 files of model.bin version 2 (rows one after another), so it gets the same weights
rewritten in that layout (version2_int8).
"""
import os
import shlex
import statistics
import subprocess
import sys

import random_models
import roofline
from common import ROOT, gnuplot, log, numpy_python, pct, read_config, rel, table, worth_repeating

TYPES = ("f32", "f16", "int8")
DECODE_TOKENS = 256
DECODE_ROUNDS = 5  # decode runs per type, each between two bandwidth samples, types interleaved
DEQUANT = "int8, float inputs"  # the other int8 design's row
DEQUANT_COMMIT = "89575b7"      # the last run.c whose int8 kernels dequantize in registers


def dequant_engine(engine, out_dir):
    """./run as of DEQUANT_COMMIT, built with this ./run's flags (.build-flags); None without git history."""
    src, exe = os.path.join(out_dir, "run_int8_float_inputs.c"), os.path.join(out_dir, "run_int8_float_inputs")
    try:
        text = subprocess.run(["git", "show", f"{DEQUANT_COMMIT}:run.c"], cwd=ROOT, capture_output=True, check=True).stdout
        with open(src, "wb") as f:
            f.write(text)
        with open(os.path.join(ROOT, ".build-flags")) as f:
            flags = shlex.split(f.read())
        subprocess.run([*flags, src, "-o", exe, "-lm"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"weight types: the {DEQUANT} design is not timed ({e})")
        return None
    e = engine.for_model(None)
    e.exe = exe
    return e


def version2_int8(path):
    """The int8 model.bin at path (version 3: rows interleaved in groups of 16, zero rows padding the last)
    rewritten as version 2 (rows one after another), the only int8 layout DEQUANT_COMMIT's run.c reads.
    Returns the new file's path, or None without numpy. The rewriting holds the file in memory twice, so it
    runs in a process of its own: a child started later would report this process's peak RSS as its own
    (Linux carries it over through vfork and exec)."""
    v2 = path[:-len(".bin")] + "-version2.bin"
    py = numpy_python()
    if py is None or subprocess.run([py, __file__, path, v2], cwd=ROOT).returncode != 0:
        return None
    return v2


def write_version2_int8(path, v2):
    import numpy as np
    cfg = read_config(path)
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    src = np.fromfile(path, np.uint8)
    out, pos = bytearray(src[:256].tobytes()), 256
    out[4:8] = (2).to_bytes(4, "little")

    def copy(nbytes, convert=lambda a: a):  # the next array of the source, 64-byte aligned in both files
        nonlocal pos
        pos += -pos % 64
        out.extend(bytes(-len(out) % 64))
        out.extend(convert(src[pos:pos + nbytes]).tobytes())
        pos += nbytes

    def matrix(rows, cols):
        padded, nb = -(-rows // 16) * 16, cols // 32
        copy(padded * cols, lambda q: q.reshape(-1, nb, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(padded, cols)[:rows])
        copy(padded * nb * 2, lambda d: d.view("<u2").reshape(-1, nb, 16).transpose(0, 2, 1).reshape(padded, nb)[:rows])

    matrix(V, C)
    copy(cfg["n_ctx"] * C * 4)
    for _ in range(L):  # ln_1 w, b; c_attn w, b; attn c_proj w, b; ln_2 w, b; c_fc w, b; mlp c_proj w, b
        for n in (C, C, (3 * C, C), 3 * C, (C, C), C, C, C, (4 * C, C), 4 * C, (C, 4 * C), C):
            matrix(*n) if isinstance(n, tuple) else copy(4 * n)
    copy(4 * C)
    copy(4 * C)
    assert pos == len(src), (pos, len(src))
    with open(v2, "wb") as f:
        f.write(out)


def measure(engine, machine, out_dir, args, prompt, long_prompt):
    files = {t: random_models.exported(out_dir, random_models.GPT2_124M, t) for t in TYPES}
    engines = {t: engine.for_model(f) for t, f in files.items()}
    other = dequant_engine(engine, out_dir)
    v2 = version2_int8(files["int8"]) if other else None
    if v2:
        engines[DEQUANT] = other.for_model(v2)
    for t, e in engines.items():
        e.run(f"{t}-warmup", prompt, 8, timings=False)  # pages the weights in
    runs = {(t, kind): [] for t in engines for kind in ("decode", "prefill")}
    for rep in range(max(args.repeats, DECODE_ROUNDS)):
        for t, e in engines.items():
            if rep < DECODE_ROUNDS:  # every round: this VM's bandwidth moves within seconds (see round_ratios)
                bw0 = machine.sample(f"before {t} decode, round {rep + 1}", read_only=True)
                r = e.run(f"{t}-decode", prompt, DECODE_TOKENS)
                r["bandwidth_pair"] = (bw0, machine.sample(f"after {t} decode, round {rep + 1}", read_only=True))
                runs[(t, "decode")].append(r)
            if rep < args.repeats and worth_repeating(runs[(t, "prefill")], args.max_run_seconds):
                runs[(t, "prefill")].append(e.run(f"{t}-prefill", long_prompt, 1, timings=False))
            log(f"round {rep + 1} {t}: decode {runs[(t, 'decode')][-1]['decode_tok_s']:6.1f} tok/s, "
                f"prefill {runs[(t, 'prefill')][-1]['prefill_tok_s']:6.1f} tok/s")
    res = dict(fma_gflops=machine.best("fma_gflops"),
               fma_width=machine.best("fma_width"), checkpoint=rel(random_models.checkpoint(out_dir, random_models.GPT2_124M)),
               decode_tokens=DECODE_TOKENS, prompt_len=len(prompt.split()), types={})
    for t in engines:
        res["types"][t] = summarize(files[t if t in files else "int8"], runs[(t, "decode")], runs[(t, "prefill")], res)
    for t in TYPES:  # how much of each type's roofline gap the machine charges for reading a step in pieces
        pieces = roofline.decode_pieces(read_config(files[t]))
        res["types"][t]["split"] = dict(machine.split_ratio(pieces), pieces=len(pieces))
        log(f"split read, {t}: {res['types'][t]['split']['split_ratio']:.3f} of one read")
    res["rounds"] = round_ratios(runs, engines)
    res["targets"] = targets(res["types"], res["rounds"])
    res["plot"] = None if args.no_plots else plot(res, out_dir)
    return res


def summarize(path, decode_runs, prefill_runs, res):
    cfg = read_config(path)
    d = max(decode_runs, key=lambda r: r["decode_tok_s"])
    p = min(prefill_runs, key=lambda r: r["prefill_s"])
    weights, kv = roofline.decode_bytes(cfg, res["prompt_len"], d["decode_tokens"])
    flops = roofline.prefill_flops(cfg, p["prefill_tokens"])
    paired = [roofline.paired_fractions(r["decode_tok_s"] * (weights + kv) / 1e9, *r["bandwidth_pair"]) for r in decode_runs]
    return dict(file=rel(path), file_bytes=os.path.getsize(path), maxrss_kb=max(r["maxrss_kb"] for r in decode_runs),
                paired_fraction=statistics.median(x["fraction"] for x in paired),
                paired_fraction_mean=statistics.median(x["fraction_mean"] for x in paired), paired_fractions=paired,
                decode_tok_s=d["decode_tok_s"], decode_runs_tok_s=[r["decode_tok_s"] for r in decode_runs], bytes_per_token=weights + kv, weight_bytes=weights, kv_bytes=kv,
                prefill_tokens=p["prefill_tokens"], prefill_tok_s=p["prefill_tok_s"],
                prefill_fraction=flops / p["prefill_s"] / 1e9 / res["fma_gflops"],
                repeats=(len(decode_runs), len(prefill_runs)), csv=d["csv"], decode_cmd=d["cmd"], prefill_cmd=p["cmd"],
                ms=[ms for _, _, ms, _ in d["timings"]], thread_changes=sum(1 for r in decode_runs if r["thread_changes"]))


def round_ratios(runs, engines):
    """Each type's decode tok/s over f32's in the same round (runs a few seconds apart), median over the
    rounds. On a VM whose bandwidth moves by half within a minute, the best run of each type can come from
    different minutes; a ratio within a round compares like with like."""
    f32 = [r["decode_tok_s"] for r in runs[("f32", "decode")]]
    out = {}
    for t in engines:
        ratios = [r["decode_tok_s"] / b for r, b in zip(runs[(t, "decode")], f32)]
        out[t] = dict(ratios=ratios, median=statistics.median(ratios))
    return out


def round_table(ty, rounds):
    """Every decode run, round by round: its tok/s, the mean bandwidth around it and its fraction of that,
    and the ratios to f32's run of the round. The medians hide it when the bandwidth changes state between
    rounds: a type that keeps up with the bandwidth gains in a fast round, one held back by its own work
    does not."""
    names, others = list(ty), [t for t in ty if t != "f32"]
    cell = lambda t, i: (f"{ty[t]['decode_runs_tok_s'][i]:.1f} ({ty[t]['paired_fractions'][i]['mean_gbps']:.1f} GB/s, "
                         f"{pct(ty[t]['paired_fractions'][i]['fraction_mean'])})")
    rows = [[i + 1] + [cell(t, i) for t in names] + [f"{rounds[t]['ratios'][i]:.2f}x" for t in others]
            for i in range(len(ty["f32"]["decode_runs_tok_s"]))]
    return table(["round"] + [f"{t}: tok/s (mean bandwidth, of roofline)" for t in names] + [f"{t} / f32" for t in others], rows)


def targets(ty, rounds):
    """Issue 11's targets as (what, measured, goal): decode ratios and roofline fractions as medians over
    the rounds (each run against f32's of its round, and against the bandwidth sampled around it)."""
    f32 = ty["f32"]
    out = [("f32 prefill / FMA peak", f32["prefill_fraction"], 0.5),
           ("f16 decode / f32 decode", rounds["f16"]["median"], 1.8),
           ("int8 decode / f32 decode", rounds["int8"]["median"], 3.0)]
    out += [(f"{t} decode / its roofline (mean bandwidth around each run)", ty[t]["paired_fraction_mean"], 0.85) for t in TYPES]
    out += [(f"{t} decode / its roofline (higher best pass around each run)", ty[t]["paired_fraction"], 0.85) for t in TYPES]
    out.append(("int8 prefill / f32 prefill", ty["int8"]["prefill_tok_s"] / f32["prefill_tok_s"], 1.5))
    return out


def plot(res, out_dir):
    """The y axis stops at 2.5x the slowest type's median step, so that a few slow steps (another program
    taking a core) do not flatten the lines; the title says how many steps it cuts off."""
    png = os.path.join(out_dir, "weight_types_ms_per_token.png")
    ymax = 2.5 * max(statistics.median(res["types"][t]["ms"]) for t in TYPES)
    cut = sum(ms > ymax for t in TYPES for ms in res["types"][t]["ms"])
    colors = dict(f32="#1f77b4", f16="#2ca02c", int8="#d62728")
    lines = ", \\\n     ".join(
        f"'{res['types'][t]['csv']}' skip 1 using 2:3 with lines lc rgb '{colors[t]}' lw 2.5 "
        f"title '{t}: {res['types'][t]['file_bytes'] / 1e6:.0f} MB file, {res['types'][t]['decode_tok_s']:.0f} tok/s'"
        for t in TYPES)
    script = f"""# written by bench/weight_types.py; redraw with: gnuplot {rel(os.path.join(out_dir, 'weight_types.gp'))}
set terminal pngcairo size 1000,620 font 'sans,11'
set termoption noenhanced
set grid
set key top left box opaque
set output '{png}'
set title "Decode time per token by weight type: each step streams the weights once\\nGPT-2 124M-shaped (random weights), {res['prompt_len']}-token prompt, best run of each type{f"; {cut} slower steps above the top" if cut else ""}"
set xlabel 'position of the token fed through the model'
set ylabel 'ms per token'
set yrange [0:{ymax:.1f}]
set datafile separator ','
plot {lines}
"""
    return png if gnuplot(script, os.path.join(out_dir, "weight_types.gp")) else None


def report(r):
    ty, rounds = r["types"], r["rounds"]
    rows = [[t, f"{x['file_bytes'] / 1e6:.1f} MB", f"{x['maxrss_kb'] / 1024:.0f} MiB", f"{x['decode_tok_s']:.1f}",
             f"{x['bytes_per_token'] / 1e6:.1f} MB", pct(x["paired_fraction_mean"]), pct(x["paired_fraction"]), f"{rounds[t]['median']:.2f}x",
             f"{x['prefill_tok_s']:.1f}", pct(x["prefill_fraction"]), f"{x['prefill_tok_s'] / ty['f32']['prefill_tok_s']:.2f}x"]
            for t, x in ty.items()]
    f32 = ty["f32"]
    n = f32["repeats"][0]
    ratio_ranges = "; ".join(f"{t} {min(x['ratios']):.2f}x to {max(x['ratios']):.2f}x" for t, x in rounds.items() if t != "f32")
    out = ["## Weight types: f32, f16, int8 (same random GPT-2 124M-shaped checkpoint)\n",
           table(["type", "file", "peak RSS", "decode tok/s (best)", "read per token", f"of its roofline: mean bandwidth (median of {n})",
                  "best pass (median)",
                  f"decode vs f32 (median of {n} rounds)", f"prefill tok/s ({f32['prefill_tokens']} tokens)", "of FMA peak",
                  "prefill vs f32"], rows),
           f"\nAll three exported by `export_gpt2.py {r['checkpoint']} OUT --dtype TYPE` from one checkpoint that "
           f"`tests/make_hf_model.py --gpt2-124m` wrote (also when --model names another model). *decode*: {n} rounds, "
           f"each running every type once in turn ({r['decode_tokens']} tokens after a {r['prompt_len']}-token prompt), "
           f"each run between two `bench/machine --read-only` bandwidth samples; the best `decode:` tok/s is shown. "
           f"*read per token*: the five big matrices in the type's bytes per weight (f32 4, f16 2, int8 1 + 2/32 for "
           f"a float16 scale per 32), the rest float32, plus the K and V rows attention reads (float32 in every type). "
           f"*of its roofline*: each run's read per token x tok/s over the bandwidth sampled around it, median over "
           f"the runs: over the mean of the two samples' half-second means (like with like: a run's tok/s is a mean "
           f"too), and over the higher of the two samples' fastest passes (conservative: the machine's best moment "
           f"around the run, which a run of a second or more does not keep). *decode vs f32*: each run's tok/s over f32's in the same round, median over the "
           f"rounds (the ratios ranged: {ratio_ranges}); this VM's bandwidth moves within seconds, so the best runs of "
           f"two types can come from different minutes. "
           f"*prefill*: the best of {f32['repeats'][1]} runs; *of FMA peak*: its FLOPs (counted as in the physical-limits "
           f"section) per second over the fp32 FMA peak, {r['fma_gflops']:.0f} GFLOP/s at {r['fma_width']:.0f}-float vectors. "
           "*peak RSS*: of the decode runs, mapped weight pages included. Decode runs that changed their thread count "
           "(another program took a core): " + ", ".join(f"{t} {x['thread_changes']} of {x['repeats'][0]}" for t, x in ty.items()) + ".\n",
           *([f"*{DEQUANT}*: the same int8 weights (rewritten in model.bin version 2's row-major layout, the only one it reads) run by run.c as of commit {DEQUANT_COMMIT}, built with the same flags: "
              "its int8 kernels widen the weights to floats in registers and multiply float inputs (one scale per "
              "block of 32). This run.c's int8 rounds the inputs to int8 per block of 32 as well and multiplies in "
              f"integers: decode {statistics.median(a / b for a, b in zip(rounds['int8']['ratios'], rounds[DEQUANT]['ratios'])):.2f}x "
              f"(median of the rounds) and prefill "
              f"{ty['int8']['prefill_tok_s'] / ty[DEQUANT]['prefill_tok_s']:.2f}x the float-input design in this run.\n"]
             if DEQUANT in ty else []),
           "Round by round (each decode run: tok/s, the mean of the two bandwidth samples' means around it, and "
           "the run's fraction of its roofline on that bandwidth; then each type's run over f32's of the round):\n",
           round_table(ty, rounds) + "\n",
           "Targets (issue 11), measured in this run:\n",
           table(["target", "measured", "goal", "met"],
                 [[what, f"{x:.3f}", f">= {goal:g}", "yes" if x >= goal else "**no**"] for what, x, goal in r["targets"]]),
           "\nWhat reading a step in pieces costs on this machine: a bare read of each type's step weights (the same "
           f"bytes, no arithmetic), one parallel read per matrix as a decode step reads them ({ty['f32']['split']['pieces']} per step, "
           "the threads meeting after each), gets "
           + ", ".join(f"{t} {ty[t]['split']['split_ratio']:.2f}" for t in TYPES)
           + " of one read of all of them (`bench/machine --split BYTES,...`, median of "
           + ", ".join(f"{ty[t]['split']['split_pairs']:.0f}" for t in TYPES)
           + " pairs of passes moments apart). The rest of a decode's gap to its roofline is its own: the kernels' "
           "arithmetic and the work between the matrices (attention, LayerNorm, GELU, sampling, the threads' "
           "meetings), a larger share of a shorter step.\n",
           "\nCommands (f32; the others differ in the file):\n",
           f"    {f32['decode_cmd']}", f"    {f32['prefill_cmd']}"]
    return out


if __name__ == "__main__":  # version2_int8()'s worker: SRC DST
    write_version2_int8(*sys.argv[1:3])
