#!/usr/bin/python3
"""Memory errors and leaks under valgrind: a full generation, --no-cache, --reference, --kv-type, --prompt-cache, --context-shift, --ppl, --tokenize, an error exit.

valgrind cannot run the normal build on every machine (-march=native emits AVX-512 on CPUs that have it,
and valgrind does not implement AVX-512), so this test compiles its own copy of run.c into a temporary
directory: -O2 -g, with -mavx2 -mfma when the CPU has them (valgrind handles those), with OpenMP.
Each run is `valgrind --leak-check=full --error-exitcode=99`; any invalid read or write, use of an
uninitialised value, or definitely/possibly lost block fails the case.

With OMP_NUM_THREADS=1 libgomp starts no threads and every kind of leak counts. One run uses 2 threads:
there glibc's per-thread TLS block of libgomp's pool threads (never joined: the pool lives until exit)
shows as "possibly lost", so that run counts definite leaks only.

    /usr/bin/python3 tests/test_leaks.py        (needs valgrind and a C compiler: $CC, default cc)
Prints "ok - name" / "not ok - name: why" lines. About 15 s.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_hf_model import exported_model  # noqa: E402
from tap import exit_status, report  # noqa: E402

TOK = os.path.join(ROOT, "tokenizer.bin")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build(tmp):
    cc = os.environ.get("CC", "cc")
    exe = os.path.join(tmp, "run")
    flags = ["-O2", "-g", "-ffp-contract=off", "-std=gnu11", "-Wno-psabi"]
    if {"avx2", "fma"} <= cpu_flags():
        flags += ["-mavx2", "-mfma"]
    for omp in (["-fopenmp"], []):  # OpenMP when the compiler has it
        r = subprocess.run([cc] + flags + omp + [os.path.join(ROOT, "run.c"), "-o", exe, "-lm"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode == 0:
            return exe, None
    return None, r.stderr.decode("utf-8", "replace")[-500:]


def valgrind(name, exe, args, threads=1, kinds="definite,possible", want_status=0, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = ["valgrind", "-q", "--leak-check=full", "--show-leak-kinds=" + kinds, "--errors-for-leak-kinds=" + kinds,
           "--error-exitcode=99", "--track-origins=yes", exe] + args
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return report(name, "no exit within %ds" % timeout)
    err = r.stderr.decode("utf-8", "replace")
    vg = [l for l in err.splitlines() if re.match(r"==\d+==", l)]
    if r.returncode == 99 or vg:
        summary = [l for l in vg if re.search(r"Invalid|uninitiali|lost|definitely|possibly|Mismatched|overlap|"
                                             r"Syscall param|Process terminating|Illegal", l)]
        return report(name, "valgrind: exit %d; %s" % (r.returncode, " | ".join((summary or vg)[:6])))
    if r.returncode != want_status:
        return report(name, "exit status %d, expected %d; stderr %r" % (r.returncode, want_status, err[-300:]))
    report(name)


def main():
    if shutil.which("valgrind") is None:
        print("ok - valgrind leak checks # SKIP valgrind is not installed (apt-get install valgrind)")
        return 0
    if not os.path.isfile(TOK):
        report("tokenizer.bin present", "%s not found" % TOK)
        return 1
    tmp = tempfile.mkdtemp(prefix="test_leaks_")
    try:
        exe, why = build(tmp)
        if not exe:
            report("build run.c for valgrind", why)
            return 1
        model = exported_model(tmp, layers=2, heads=2, embd=16, ctx=24, vocab=50257)
        model32 = exported_model(tmp, layers=1, heads=1, embd=32, ctx=24, vocab=50257)  # int8 KV: heads of 32
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 4)  # 40 tokens: two --ppl chunks
        Z = ["-z", TOK]
        out = lambda name: os.path.join(tmp, name)
        valgrind("generate: text prompt, sampling, --timings, --logits", exe,
                 [model, "-p", "Hello world", "-n", "12", "-s", "1", "-t", "0.8", "--top-k", "20",
                  "--timings", out("t.csv"), "--logits", out("l.bin")] + Z)
        valgrind("generate: empty prompt, top-p, --ignore-eos, to the context limit", exe,
                 [model, "-n", "100", "-s", "2", "--ignore-eos"] + Z)
        valgrind("generate: --no-cache, greedy, --print-ids", exe,
                 [model, "-p", "Once upon a time", "-n", "6", "-t", "0", "--no-cache", "--print-ids", "-q"] + Z)
        valgrind("generate: --reference (plain-loop kernels)", exe,
                 [model, "-p", "Hello world", "-n", "4", "-s", "5", "--reference", "-q"] + Z)
        valgrind("generate: --reference --no-cache", exe,
                 [model, "-p", "Hello world", "-n", "4", "-s", "5", "--reference", "--no-cache", "-q"] + Z)
        valgrind("generate: --kv-type int8", exe,
                 [model32, "-p", "Hello world", "-n", "6", "-s", "6", "--kv-type", "int8", "-q"] + Z)
        valgrind("generate: --kv-type f16 --reference --no-cache", exe,
                 [model, "-p", "Hello world", "-n", "4", "-s", "6", "--kv-type", "f16", "--reference", "--no-cache", "-q"] + Z)
        for when in ("cold", "warm"):
            valgrind(f"generate: --prompt-cache, {when}", exe,
                     [model32, "-p", "Hello world, hello", "-n", "3", "-s", "7", "--kv-type", "int8", "-q",
                      "--prompt-cache", out("prompt.kv")] + Z)
        valgrind("generate: --context-shift --keep 4 past the context", exe,
                 [model, "-p", "Hello world", "-n", "40", "-s", "8", "--context-shift", "--keep", "4", "-q"] + Z)
        valgrind("generate: --context-shift --no-cache", exe,
                 [model, "-p", "Hello world", "-n", "30", "-s", "8", "--context-shift", "--no-cache", "-q"] + Z)
        valgrind("generate: --prompt-ids --print-ids, no tokenizer", exe,
                 [model, "--prompt-ids", "464 2068 7586", "--print-ids", "-n", "5", "-s", "3"])
        valgrind("generate: 2 OpenMP threads (definite leaks only)", exe,
                 [model, "-p", "Hello", "-n", "8", "-s", "4"] + Z, threads=2, kinds="definite")
        valgrind("--ppl over two chunks", exe, [model, "--ppl", text] + Z)
        valgrind("--tokenize", exe, ["--tokenize", "-f", text] + Z)
        valgrind("--tokenize: invalid UTF-8 and long whitespace", exe,
                 ["--tokenize", "-p", "\udcff\udcfe caf\u00e9  \t\n\n   x" + " " * 300 + "y"] + Z)
        valgrind("error exit: prompt longer than the context", exe,
                 [model, "-p", "word " * 40] + Z, want_status=1)
        valgrind("error exit: not a model file", exe, [text, "-p", "x"] + Z, want_status=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
