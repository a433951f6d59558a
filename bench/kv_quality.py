"""What f16 and int8 keys and values cost in quality: the same text scored with each --kv-type.

`./run MODEL --ppl bench/text.txt --logits FILE --kv-type T` scores every token of the text with teacher
forcing and writes the logits of every scored position (593 of them for bench/text.txt). Against f32's:
the relative logit error of each position (max |difference| / max |f32 logit|), median and worst over
the positions; top-1 agreement (the share of positions whose most likely next token is the same); and
the perplexity each type reports. Two models: the bench's GPT-2 124M-shaped one, and a small one with
peaked attention (weights of std 0.2, four times GPT-2's initialisation at that width: attention scores
far apart, so the softmax leans on few positions and a rounding error in one key matters more), made
once into bench/out/ by tests/make_hf_model.py and the exporter.
"""
import os
import re

import numpy as np

from common import ROOT, BenchError, log, make_random_model, read_text, rel, shown, spawn, table

TEXT = os.path.join(ROOT, "bench", "text.txt")
KV_TYPES = ("f32", "f16", "int8")
PEAKED = ["--layers", "4", "--heads", "4", "--embd", "128", "--ctx", "1024", "--vocab", "50257", "--std", "0.2",
          "--seed", "5"]


def measure(run_exe, model, label, out_dir, runs_dir):
    models = [(label, model), ("4 layers, 4 heads of 32, 128 wide, weights std 0.2 (peaked attention)",
                               make_random_model(os.path.join(out_dir, "peaked-attention.bin"), PEAKED))]
    return dict(text=rel(TEXT), rows=[score(run_exe, path, name, runs_dir) for name, path in models])


def score(run_exe, model, name, runs_dir):
    logits, ppl, cmds = {}, {}, {}
    for kv in KV_TYPES:
        out = os.path.join(runs_dir, f"quality-{os.path.basename(model)}-{kv}.f32")
        cmd = [run_exe, model, "--ppl", TEXT, "--logits", out, "--kv-type", kv]
        base = out[:-4]
        r = spawn(cmd, base)
        if r["rc"] != 0:
            raise BenchError(f"{' '.join(cmd)} failed: {read_text(base + '.err').strip()}")
        ppl[kv] = float(re.search(r"^perplexity: ([\d.]+)", read_text(base + ".out"), re.M).group(1))
        logits[kv] = np.fromfile(out, dtype="<f4").reshape(-1, 50257).astype(np.float64)
        os.remove(out)  # 120 MB per type for the 124M model
        cmds[kv] = shown(cmd)
    row = dict(model=name, positions=len(logits["f32"]), ppl=ppl, cmd=cmds["int8"])
    best = logits["f32"].argmax(axis=1)
    for kv in ("f16", "int8"):
        err = np.abs(logits[kv] - logits["f32"]).max(axis=1) / np.abs(logits["f32"]).max(axis=1)
        row[kv] = dict(median=float(np.median(err)), worst=float(err.max()),
                       top1=float((logits[kv].argmax(axis=1) == best).mean()))
    log(f"quality on {name}: f16 median logit error {row['f16']['median']:.1e}, int8 {row['int8']['median']:.1e}; "
        f"top-1 agreement f16 {100 * row['f16']['top1']:.1f}%, int8 {100 * row['int8']['top1']:.1f}%")
    return row


def report(q):
    rows = []
    for r in q["rows"]:
        for kv in KV_TYPES:
            e = r.get(kv)
            change = 100 * (r["ppl"][kv] / r["ppl"]["f32"] - 1)
            rows.append([r["model"] if kv == "f32" else "", kv, f"{e['median']:.1e}" if e else "(reference)",
                         f"{e['worst']:.1e}" if e else "", f"{100 * e['top1']:.1f}%" if e else "",
                         f"{r['ppl'][kv]:.1f}" + (f" ({change:+.3f}%)" if e else "")])
    n = q["rows"][0]["positions"]
    return [f"## What f16 and int8 keys and values cost (`--ppl {q['text']}`, {n} teacher-forced positions)\n",
            table(["model", "--kv-type", "logit error vs f32, median", "worst", "top-1 agrees with f32", "perplexity"], rows),
            "\n*Logit error*: at each scored position, max |logit - f32 logit| / max |f32 logit|. Random weights: the "
            "perplexities are those of noise (above the vocabulary size); what matters is how little they move. The "
            "int8 commands (f32 and f16 differ only in `--kv-type`):\n"] + [f"    {r['cmd']}" for r in q["rows"]]
