"""Quality of the f16 and int8 weight types against f32, on the same weights.

Each type scores bench/quality.txt (a fixed English text of about 580 tokens) with
`./run MODEL --ppl bench/quality.txt --logits FILE`, which writes the teacher-forced logits of every
position; f16 and int8 are then compared with f32 position by position:
  relative logit error  RMS(logits_type - logits_f32) / RMS(logits_f32), over the vocabulary at one
                        position; reported as the median and the maximum over the positions
  top-1 agreement       positions where both pick the same most likely next token
  KL divergence         KL(p_f32 || p_type) of the softmax distributions, in nats, mean and maximum
and each type's perplexity on the text. Two random models: the GPT-2 124M-shaped one (std 0.02, as
GPT-2 initializes) and a small one with std 0.2, whose attention is peaked. Random weights are a proxy:
real checkpoints have outlier features, which matter most where activations are quantized, as this
engine's int8 does (per block of 32 inputs, each block with its own scale).

Run as a script by a python with numpy, it compares two logits files:
    /usr/bin/python3 bench/quality.py F32_LOGITS OTHER_LOGITS VOCAB_SIZE     (prints one JSON line)
"""
import json
import os
import re
import sys

import random_models
from common import BenchError, ROOT, log, numpy_python, read_config, read_text, rel, shown, spawn, table

TEXT = os.path.join(ROOT, "bench", "quality.txt")
TYPES = ("f32", "f16", "int8")
MODELS = (("GPT-2 124M-shaped, std 0.02", random_models.GPT2_124M), ("4 layers, 256 wide, std 0.2", random_models.PEAKED))


def measure(exe, out_dir, runs_dir):
    py = numpy_python()
    if py is None:
        log("no python with numpy: the quality comparison is skipped")
        return None
    res = dict(text=rel(TEXT), models=[])
    for label, model in MODELS:
        files = {t: random_models.exported(out_dir, model, t) for t in TYPES}
        vocab = read_config(files["f32"])["vocab_size"]
        scored = {t: perplexity(exe, f, os.path.join(runs_dir, f"quality-{model[0]}-{t}")) for t, f in files.items()}
        m = dict(label=label, checkpoint=rel(random_models.checkpoint(out_dir, model)), types={})
        for t in TYPES:
            m["types"][t] = dict(ppl=scored[t]["ppl"], tokens=scored[t]["tokens"], cmd=scored[t]["cmd"])
            if t != "f32":
                m["types"][t].update(compare_files(py, scored["f32"]["logits"], scored[t]["logits"], vocab))
                log(f"quality {label}, {t}: relative logit error median {m['types'][t]['rel_median']:.2e}, "
                    f"top-1 agreement {m['types'][t]['top1']}/{m['types'][t]['positions']}")
        for s in scored.values():
            os.remove(s["logits"])  # over 100 MB each
        res["models"].append(m)
    return res


def perplexity(exe, model, base, *extra):
    logits = base + ".logits.f32"
    cmd = [exe, model, "--ppl", TEXT, "--logits", logits, *extra]
    r = spawn(cmd, base)
    out = read_text(base + ".out")
    ppl, tokens = re.search(r"^perplexity: (\S+)", out, re.M), re.search(r"^tokens: (\d+)", out, re.M)
    if r["rc"] != 0 or not ppl or not tokens:
        raise BenchError(f"{shown(cmd)} failed: {read_text(base + '.err').strip()}")
    return dict(ppl=float(ppl[1]), tokens=int(tokens[1]), logits=logits, cmd=shown(cmd).replace(rel(logits), "FILE"))


def compare_files(py, ref, other, vocab):
    cmd = [py, os.path.abspath(__file__), ref, other, str(vocab)]
    base = other[:-len(".logits.f32")] + ".compare"
    if spawn(cmd, base)["rc"] != 0:
        raise BenchError(f"bench/quality.py's comparison failed: {read_text(base + '.err').strip()}")
    return json.loads(read_text(base + ".out"))


def compare(ref, other, vocab):
    """The statistics of the module docstring, in float64."""
    import numpy as np
    a, b = (np.fromfile(p, dtype="<f4").reshape(-1, vocab).astype(np.float64) for p in (ref, other))
    if a.shape != b.shape or not len(a):
        sys.exit(f"error: {ref} and {other} hold different numbers of positions")
    rel_err = np.sqrt(((b - a) ** 2).mean(1) / (a ** 2).mean(1))
    log_p, log_q = (x - x.max(1, keepdims=True) for x in (a, b))
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    log_q -= np.log(np.exp(log_q).sum(1, keepdims=True))
    kl = (np.exp(log_p) * (log_p - log_q)).sum(1)
    return dict(positions=len(a), rel_median=float(np.median(rel_err)), rel_max=float(rel_err.max()),
                top1=int((a.argmax(1) == b.argmax(1)).sum()), kl_mean=float(kl.mean()), kl_max=float(kl.max()))


def report(r):
    rows = []
    for m in r["models"]:
        for t, x in m["types"].items():
            cmp = [f"{x['rel_median']:.2e}", f"{x['rel_max']:.2e}", f"{x['top1']}/{x['positions']} ({100 * x['top1'] / x['positions']:.1f}%)",
                   f"{x['kl_mean']:.2e}", f"{x['kl_max']:.2e}"] if t != "f32" else ["(reference)", "", "", "", ""]
            rows.append([m["label"], t, f"{x['ppl']:.1f}"] + cmp)
    first = r["models"][0]["types"]
    return ["## Quality of f16 and int8 against f32 (same weights, teacher-forced logits)\n",
            table(["model (random weights)", "type", "perplexity", "rel. logit error, median", "rel. error, max", "top-1 agreement",
                   "KL from f32, mean", "KL, max"], rows, align="llrrrrrr"),
            f"\nEach type scores {r['text']} ({first['f32']['tokens']} tokens; `--ppl` predicts each from the ones "
            "before it, starting after <|endoftext|>) and writes the logits of every position with `--logits`. Per "
            "position: *relative logit error* = RMS over the vocabulary of (logits of the type - logits of f32) / RMS of "
            "the f32 logits; *top-1 agreement*: the most likely next token is the same as f32's; *KL*: KL(p_f32 ‖ p_type) of the "
            "softmax distributions, in nats. Median, mean and max are over the positions. Perplexities of random weights are "
            "near or above the vocabulary size and only compared with each other.\n",
            "Random weights are a proxy. Real checkpoints have outlier features (a few channels far larger than the "
            "rest), which hurt most when activations are quantized, as this engine's int8 does (per block of 32 inputs, "
            "each with its own scale, so an outlier costs precision to the 31 other inputs of its block): the int8 "
            "figures for a real GPT-2 may be worse than these. Checkpoints: " +
            ", ".join(f"{m['checkpoint']} ({m['label']})" for m in r["models"]) + ". Command (per type):\n",
            f"    {first['f32']['cmd']}"]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: quality.py F32_LOGITS OTHER_LOGITS VOCAB_SIZE")
    print(json.dumps(compare(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
