"""Decode and prefill against this machine's physical limits, measured by bench/machine.

A cached decode step reads every weight once for one token, so its limit is read bandwidth; prefill
reuses each weight row across the whole prompt, so its limit is FMA throughput. This module counts the
bytes and FLOPs each phase needs, times prefill on a long prompt, and divides.

This VM's read bandwidth swings (31 to 65 GB/s seen here) as other tenants come and go, so the best
decode and the best bandwidth sample may come from different minutes. Hence the pairs: cached decode
runs, each between two `bench/machine --read-only` samples and divided by the higher of the two. Each
sample gives two figures: the fastest pass over its buffer (the machine at its best moment, which a run
of a second or more does not keep) and the mean over half a second of passes (what such a run gets on
average). A run over the higher best pass around it is the conservative fraction; over the mean of the
two means, like with like.
"""
import statistics
import subprocess

from common import BenchError, ROOT, log, pct, rel, table, worth_repeating


# model.bin's weight_type: name, and bytes per weight of the five big matrices (int8: a float16 scale per 32)
WEIGHT_TYPES = {0: ("f32", 4), 1: ("f16", 2), 2: ("int8", 1 + 2 / 32)}


class Machine:
    """bench/machine's samples over the bench: read bandwidth every time, FMA peak in full samples."""

    def __init__(self, exe, model):
        self.exe, self.model, self.samples = exe, model, []

    def sample(self, when, read_only=False):
        """Returns the sample: limit_gbps, the decode limit (the faster of a 1 GiB buffer's best pass and the
        model file read through mmap), and read_mean_gbps, the buffer's mean over its passes."""
        v = self.run((["--read-only"] if read_only else []) + [self.model], ["read_gbps"] + ([] if read_only else ["fma_gflops"]))
        v.update(when=when, limit_gbps=max(v["read_gbps"], v.get("file_read_gbps", 0)))
        self.samples.append(v)
        log(f"machine ({when}): read {v['read_gbps']:.1f} GB/s, mean {v['read_mean_gbps']:.1f} (model file via mmap: "
            f"{v.get('file_read_gbps', 0):.1f})"
            + ("" if read_only else f", FMA {v['fma_gflops']:.0f} GFLOP/s at {v['fma_width']:.0f}-float vectors"))
        return v

    def split_ratio(self, pieces):
        """bench/machine --split: a bare read of pieces (bytes each, in order) one parallel read at a time,
        over one read of all of them, median of pairs taken moments apart."""
        return self.run(["--split", ",".join(str(p) for p in pieces)], ["split_ratio"])

    def run(self, args, required):
        """bench/machine's "key value" lines as a dict; BenchError if it fails or leaves out a required key."""
        r = subprocess.run([self.exe] + args, capture_output=True, text=True, cwd=ROOT)
        v = {k: float(x) for k, _, x in (line.partition(" ") for line in r.stdout.splitlines())}
        if r.returncode != 0 or any(k not in v for k in required):
            raise BenchError(f"{rel(self.exe)} {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")
        return v

    def best(self, key):
        return max((s[key] for s in self.samples if key in s), default=None)


def decode_pieces(cfg):
    """The weight matrices a decode step reads one after another, in bytes: per layer the QKV projection,
    the attention output projection, the MLP's two matrices (each a parallel read that the next must wait
    for), then wte as the LM head."""
    L, C = cfg["n_layer"], cfg["n_embd"]
    per_weight = WEIGHT_TYPES[cfg["weight_type"]][1]
    return [round(per_weight * k * C * C) for _ in range(L) for k in (3, 1, 4, 4)] + [round(per_weight * lm_head_rows(cfg) * C)]


def lm_head_rows(cfg):
    """wte's stored rows: int8 stores them in whole groups of 16, the last padded with zero rows."""
    return -(-cfg["vocab_size"] // 16) * 16 if cfg["weight_type"] == 2 else cfg["vocab_size"]


def decode_bytes(cfg, prompt_len, n):
    """Bytes one decode step reads, averaged over n steps after a prompt_len-token prompt: every weight
    matrix (12 C^2 per layer) and wte as the LM head, in the model's weight type; one wte row; biases,
    LayerNorms and one wpe row (float32); plus the K and V rows attention reads (a step at position p
    reads p + 1 of them; int8 also reads the zero rows that pad wte to a multiple of 16). Returns both
    parts."""
    L, C = cfg["n_layer"], cfg["n_embd"]
    weights = WEIGHT_TYPES[cfg["weight_type"]][1] * (L * 12 * C * C + lm_head_rows(cfg) * C + C) + 4 * (L * 13 * C + 2 * C + C)
    return weights, 2 * L * C * 4 * (prompt_len + (n + 1) / 2)


def prefill_flops(cfg, T):
    """FLOPs of one forward over T tokens from position 0, logits for the last row only (prefill, and every
    --no-cache step): matmuls 2 T 12 C^2 per layer, causal attention 2 C T(T+1) per layer (q.k and att.v),
    the LM head 2 V C. LayerNorm, GELU, softmax, biases and residual adds (O(T C), < 1%) are not counted."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    return L * (2 * T * 12 * C * C + 2 * C * T * (T + 1)) + 2 * V * C


def generation_flops(cfg, prompt_len, n, no_cache):
    """FLOPs to prefill the prompt and then run n steps (./run feeds every generated token through the model)."""
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    step = lambda p: prefill_flops(cfg, p + 1) if no_cache else L * (24 * C * C + 4 * C * (p + 1)) + 2 * V * C
    return prefill_flops(cfg, prompt_len) + sum(step(p) for p in range(prompt_len, prompt_len + n))


def measure(engine, machine, cfg, args, short_prompt, decode_runs, long_prompt):
    """Prefill on long_prompt, then decode: the best of decode_runs (the core's cached runs on short_prompt)
    against the best bandwidth sample, and --roofline-pairs more such runs against their own samples."""
    prefill = measure_prefill(engine, cfg, args, long_prompt)
    decode = measure_decode(engine, machine, cfg, args.roofline_pairs, short_prompt, decode_runs)
    r = dict(cfg=cfg, prefill=prefill, decode=decode, samples=list(machine.samples))  # later modules add theirs
    for key in ("fma_gflops", "fma8_gflops", "fma_width", "read_gbps", "file_read_gbps", "limit_gbps"):
        r[key] = machine.best(key)
    prefill["fraction"] = prefill["gflops"] / r["fma_gflops"]
    decode["fraction"] = decode["gbps"] / r["limit_gbps"]
    return r


def measure_prefill(engine, cfg, args, prompt):
    runs = []
    while len(runs) < args.repeats and worth_repeating(runs, args.max_run_seconds):
        runs.append(engine.run("prefill", prompt, 1))
        log(f"prefill {runs[-1]['prefill_tokens']} tokens: {runs[-1]['prefill_tok_s']:.1f} tok/s")
    p = min(runs, key=lambda r: r["prefill_s"])
    flops = prefill_flops(cfg, p["prefill_tokens"])
    return dict(tokens=p["prefill_tokens"], tok_s=p["prefill_tok_s"], flops=flops, gflops=flops / p["prefill_s"] / 1e9,
                cmd=p["cmd"], all_s=[r["prefill_s"] for r in runs])


def measure_decode(engine, machine, cfg, n_pairs, prompt, decode_runs):
    n = decode_runs[0]["decode_tokens"]
    weights, kv = decode_bytes(cfg, len(prompt.split()), n)
    gbps = lambda tok_s: tok_s * (weights + kv) / 1e9
    pairs, before = [], machine.sample("before the pairs", read_only=True) if n_pairs else None
    for i in range(n_pairs):
        r = engine.run(f"pair{i + 1}", prompt, n, timings=False)
        after = machine.sample(f"after pair {i + 1}", read_only=True)
        pairs.append(dict(tok_s=r["decode_tok_s"], gbps=gbps(r["decode_tok_s"]), **paired_fractions(gbps(r["decode_tok_s"]), before, after)))
        log(f"pair {i + 1}/{n_pairs}: decode {r['decode_tok_s']:.1f} tok/s between {before['limit_gbps']:.1f} and "
            f"{after['limit_gbps']:.1f} GB/s (means {before['read_mean_gbps']:.1f} and {after['read_mean_gbps']:.1f})")
        before = after
    best = max(r["decode_tok_s"] for r in decode_runs)
    return dict(n=n, tok_s=best, gbps=gbps(best), weight_bytes=weights, kv_bytes=kv, bytes_per_token=weights + kv, pairs=pairs,
                pairs_median=statistics.median(x["fraction"] for x in pairs) if pairs else None,
                pairs_median_mean=statistics.median(x["fraction_mean"] for x in pairs) if pairs else None)


def paired_fractions(gbps, before, after):
    """A decode run's GB/s against the samples taken right before and after it: over the higher best pass
    (conservative: the machine's fastest moment around the run), and over the mean of the two means."""
    mean = (before["read_mean_gbps"] + after["read_mean_gbps"]) / 2
    return dict(before=before["limit_gbps"], after=after["limit_gbps"], mean_gbps=mean,
                fraction=gbps / max(before["limit_gbps"], after["limit_gbps"]), fraction_mean=gbps / mean)


def report(r):
    cfg, d, p, bw = r["cfg"], r["decode"], r["prefill"], [s["limit_gbps"] for s in r["samples"]]
    out = ["## Against the physical limits\n",
           f"bench/machine, all threads, best sample: read bandwidth {r['limit_gbps']:.1f} GB/s (1 GiB buffer "
           f"{r['read_gbps']:.1f}, the model file through mmap {r['file_read_gbps'] or 0:.1f}); FMA peak "
           f"{r['fma_gflops']:.0f} GFLOP/s at {r['fma_width']:.0f}-float vectors, the widest this build has, as in run.c's kernels "
           f"(8-float vectors: {r['fma8_gflops']:.0f}). Bandwidth samples "
           f"in order: {' / '.join(f'{x:.1f}' for x in bw)} GB/s.\n",
           table(["phase", "measured", "work", "achieved", "physical limit", "fraction"], [
               ["decode (KV cache, batch 1)", f"{d['tok_s']:.1f} tok/s", f"{d['bytes_per_token'] / 1e6:.1f} MB read per token",
                f"{d['gbps']:.1f} GB/s", f"{r['limit_gbps']:.1f} GB/s read bandwidth", pct(d["fraction"])],
               [f"prefill ({p['tokens']}-token prompt)", f"{p['tok_s']:.1f} tok/s", f"{p['flops'] / 1e9:.1f} GFLOP per prompt",
                f"{p['gflops']:.1f} GFLOP/s", f"{r['fma_gflops']:.0f} GFLOP/s FMA peak", pct(p["fraction"])]]),
           f"\nDecode: the best `decode:` tok/s of the {d['n']}-token cached runs x the bytes a step reads: the weights "
           f"({d['weight_bytes'] / 1e6:.1f} MB) plus the K and V rows attention reads (2 x {cfg['n_layer']} x {cfg['n_embd']} "
           f"x 4 bytes per position, {d['kv_bytes'] / 1e6:.2f} MB on average over the run). Prefill: the best `prefill:` "
           f"time; FLOPs: matmuls 2 x T x 12 C^2 per layer, causal attention 2 x C x T(T+1) per layer, the LM head for "
           f"the last row 2 x V x C (LayerNorm, GELU, softmax, biases and residual adds, < 1%, not counted)."]
    if d["pairs"]:
        out += ["\n### Decode against the bandwidth of the same minute\n",
                f"Each {d['n']}-token cached run between two bandwidth samples: divided by the higher best pass "
                f"(conservative) and by the mean of the two samples' half-second means (like with like). "
                f"**Median fractions: {pct(d['pairs_median'])} and {pct(d['pairs_median_mean'])}.**\n",
                table(["run", "decode tok/s", "achieved", "best pass before / after", "fraction", "mean bandwidth", "fraction of mean"],
                      [[i + 1, f"{x['tok_s']:.1f}", f"{x['gbps']:.1f} GB/s", f"{x['before']:.1f} / {x['after']:.1f} GB/s",
                        pct(x["fraction"]), f"{x['mean_gbps']:.1f} GB/s", pct(x["fraction_mean"])] for i, x in enumerate(d["pairs"])])]
    return out
