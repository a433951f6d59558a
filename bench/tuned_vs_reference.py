"""What the tuned kernels buy: the same ./run with its default kernels and with --reference.

--reference runs the same forward pass on the plain-loop kernels (the lesson code), so the ratio is
what the blocked, vectorized, multi-threaded kernels are worth on this machine, for prefill (a batch of
positions: arithmetic-bound) and for decode (one position: bandwidth-bound). The plain path is slow,
so the prompt and the decode are short: 64 + 8 tokens take seconds, not minutes, on a 124M-shaped model.
"""
from common import log, table, worth_repeating


def measure(engine, prompt, n, repeats, max_run_seconds):
    runs = {"tuned": [], "reference": []}
    for _ in range(repeats):  # alternating, so that both see the same machine
        for mode, extra in (("tuned", ()), ("reference", ("--reference",))):
            if worth_repeating(runs[mode], max_run_seconds):
                r = engine.run(mode, prompt, n, *extra, timings=False)
                runs[mode].append(r)
                log(f"{mode:9s} kernels: prefill {r['prefill_tok_s']:.1f} tok/s, decode {r['decode_tok_s']:.1f} tok/s, "
                    f"{r['wall_s']:.1f} s")
    res = {}
    for mode, rs in runs.items():
        res[mode] = dict(prefill_tok_s=max(r["prefill_tok_s"] for r in rs), decode_tok_s=max(r["decode_tok_s"] for r in rs),
                         prompt_tokens=rs[0]["prefill_tokens"], decode_tokens=rs[0]["decode_tokens"], repeats=len(rs),
                         cmd=rs[0]["cmd"])
    return res


def report(r):
    t, ref = r["tuned"], r["reference"]
    return ["## What the tuned kernels buy (default kernels vs `--reference`, same binary)\n",
            table(["kernels", f"prefill tok/s ({t['prompt_tokens']}-token prompt)", f"decode tok/s ({t['decode_tokens']} tokens)", "runs"], [
                ["tuned (default)", f"{t['prefill_tok_s']:.1f}", f"{t['decode_tok_s']:.1f}", t["repeats"]],
                ["`--reference` (plain loops)", f"{ref['prefill_tok_s']:.1f}", f"{ref['decode_tok_s']:.1f}", ref["repeats"]],
                ["**tuned / reference**", f"**{t['prefill_tok_s'] / ref['prefill_tok_s']:.1f}x**",
                 f"**{t['decode_tok_s'] / ref['decode_tok_s']:.1f}x**", ""]]),
            "\nBest of the runs of each mode, from ./run's `prefill:` and `decode:` lines:\n",
            f"    {t['cmd']}", f"    {ref['cmd']}"]
