"""What f16 and int8 keys and values cost in quality: quality.py's comparison, for --kv-type.

quality.py compares the weight types; this compares the KV-cache types the same way, on the same text
(bench/quality.txt) and the same two random models (f32 weights): `./run MODEL --ppl bench/quality.txt
--logits FILE --kv-type T` for each type, then the relative logit error, top-1 agreement and KL
divergence against f32 keys and values, position by position, and each type's perplexity. The small
model's attention is peaked (weights of std 0.2), where a rounded key counts most.
"""
import os

import quality
import random_models
from common import log, numpy_python, read_config, table



def measure(exe, out_dir, runs_dir):
    py = numpy_python()
    if py is None:
        log("no python with numpy: the KV-type quality comparison is skipped")
        return None
    res = []
    for label, model in quality.MODELS:
        path = random_models.exported(out_dir, model, "f32")
        vocab = read_config(path)["vocab_size"]
        scored = {t: quality.perplexity(exe, path, os.path.join(runs_dir, f"kv-quality-{model[0]}-{t}"), "--kv-type", t)
                  for t in quality.TYPES}
        m = dict(label=label, types={t: dict(ppl=scored[t]["ppl"], cmd=scored[t]["cmd"]) for t in quality.TYPES},
                 tokens=scored["f32"]["tokens"])
        for t in quality.TYPES[1:]:
            m["types"][t].update(quality.compare_files(py, scored["f32"]["logits"], scored[t]["logits"], vocab))
            log(f"KV quality {label}, --kv-type {t}: relative logit error median {m['types'][t]['rel_median']:.2e}, "
                f"top-1 agreement {m['types'][t]['top1']}/{m['types'][t]['positions']}")
        for s in scored.values():
            os.remove(s["logits"])  # over 100 MB each
        res.append(m)
    return dict(models=res)


def report(r):
    rows = []
    for m in r["models"]:
        f32 = m["types"]["f32"]["ppl"]
        for t, x in m["types"].items():
            cmp = [f"{x['rel_median']:.2e}", f"{x['rel_max']:.2e}", f"{x['top1']}/{x['positions']} ({100 * x['top1'] / x['positions']:.1f}%)",
                   f"{x['kl_mean']:.2e}", f"{x['kl_max']:.2e}"] if t != "f32" else ["(reference)", "", "", "", ""]
            rows.append([m["label"], t, f"{x['ppl']:.1f}" + (f" ({100 * (x['ppl'] / f32 - 1):+.3f}%)" if t != "f32" else "")] + cmp)
    return ["## Quality of f16 and int8 keys and values against f32 (`--kv-type`, f32 weights, teacher-forced logits)\n",
            table(["model (random weights)", "--kv-type", "perplexity", "rel. logit error, median", "rel. error, max",
                   "top-1 agreement", "KL from f32, mean", "KL, max"], rows, align="llrrrrrr"),
            f"\nThe same text, models and statistics as the weight types' table above ({r['models'][0]['tokens']} "
            "positions), with the weights in f32 and the KV cache stored as each type. Command (per type):\n",
            f"    {r['models'][0]['types']['int8']['cmd']}"]
