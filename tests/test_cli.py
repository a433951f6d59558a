#!/usr/bin/python3
"""Untrusted input at the command line: bad model files, bad tokenizer files, bad prompts, bad flags.

Every error case must end the program with exit status 1, exactly one line on stderr that starts with
"error: " and names the problem (checked by keyword), and nothing on stdout; never a crash, a hang or a
success that prints garbage. Also checks what must succeed: -n 0, --help, and the prompt's exact text
first on stdout (--prompt-ids in text mode, against the tokenizer fixture's ids; -f - from a pipe).

    /usr/bin/python3 tests/test_cli.py          (uses ./run, built by `make`; builds nothing itself)
Environment: GPT2C_RUN=path/to/run to test another build (e.g. a sanitizer build; RUN_BIN also works), RUN_WRAPPER="valgrind -q"
to run every case under a wrapper, RUN_TIMEOUT=seconds per run (default 20).
Prints "ok - name" / "not ok - name: why" lines (the protocol tests/run_all.sh counts).
"""
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_hf_model import exported_model  # noqa: E402
from ref_tokenizer import parse_fixture  # noqa: E402
from tap import exit_status, report  # noqa: E402

RUN = os.path.abspath(os.environ.get("GPT2C_RUN") or os.environ.get("RUN_BIN") or os.path.join(ROOT, "run"))
WRAPPER = shlex.split(os.environ.get("RUN_WRAPPER", ""))
TIMEOUT = float(os.environ.get("RUN_TIMEOUT", "20"))
TOK = os.path.join(ROOT, "tokenizer.bin")
FIXTURE = os.path.join(HERE, "tokenizer_fixture.txt")
HEADER_BYTES = 256  # README, "model.bin": the header, then the tensors
FIELD_OFFSET = {"n_layer": 8, "n_head": 12, "n_embd": 16, "n_ctx": 20, "vocab": 24, "eps": 28}


def run(args, cwd=None, stdin_bytes=b"", exe=None, stdout_path=None):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # the models are tiny; threads only add contention
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    try:
        r = subprocess.run(WRAPPER + [exe or RUN] + args, input=stdin_bytes or b"", stdout=out,
                           stderr=subprocess.PIPE, cwd=cwd, env=env, timeout=TIMEOUT)
        if r.stdout is None:
            r.stdout = b""
        return r
    except subprocess.TimeoutExpired:
        return None
    finally:
        if stdout_path:
            out.close()


def short(b, n=160):
    s = b.decode("utf-8", "replace")
    return repr(s if len(s) <= n else s[:n] + "...")


def check_error(name, args, keywords, cwd=None, stdin_bytes=b"", exe=None, allow_stdout=False, stdout_path=None):
    """keywords: strings that must all appear in the error line (case-insensitive); a tuple entry means
    any one of its strings. allow_stdout: for errors that can only show up after output has streamed."""
    r = run(args, cwd, stdin_bytes, exe, stdout_path)
    if r is None:
        return report(name, "hung (no exit within %gs)" % TIMEOUT)
    problems = []
    if r.returncode < 0:
        problems.append("killed by signal %d" % -r.returncode)
    elif r.returncode != 1:
        problems.append("exit status %d, expected 1" % r.returncode)
    lines = r.stderr.decode("utf-8", "replace").splitlines()
    err = [l for l in lines if l.startswith("error: ")]
    if len(lines) != 1 or len(err) != 1:
        problems.append("stderr must be exactly one 'error: ' line, got %d lines: %s" % (len(lines), short(r.stderr, 300)))
    if err:
        low = err[0].lower()
        for k in keywords:
            alts = k if isinstance(k, tuple) else (k,)
            if not any(a.lower() in low for a in alts):
                problems.append("error line does not mention %s: %r" % (" or ".join(map(repr, alts)), err[0]))
    if r.stdout and not allow_stdout:
        problems.append("stdout not empty: %s" % short(r.stdout))
    report(name, "; ".join(problems))


def check_success(name, args, want_stdout=None, stdout_check=None, cwd=None, stdin_bytes=b""):
    r = run(args, cwd, stdin_bytes)
    if r is None:
        return report(name, "hung (no exit within %gs)" % TIMEOUT)
    problems = []
    if r.returncode != 0:
        problems.append("exit status %d, expected 0 (stderr %s)" % (r.returncode, short(r.stderr, 300)))
    if re.search(rb"Sanitizer|runtime error:|==\d+==", r.stderr):
        problems.append("sanitizer or valgrind report on stderr: %s" % short(r.stderr, 400))
    if want_stdout is not None and r.stdout != want_stdout:
        problems.append("stdout %s, expected %s" % (short(r.stdout), short(want_stdout)))
    if stdout_check is not None:
        why = stdout_check(r.stdout)
        if why:
            problems.append(why)
    report(name, "; ".join(problems))
    return r


def prompt_text_cases(wide):
    """--prompt-ids in text mode prints the prompt's text first, as -p does. The ids and their text are the
    tokenizer fixture's (ids from independent encoders): the first case of each group that fits in 12 ids."""
    groups = set()
    for _, group, data, ids, _ in parse_fixture(FIXTURE):
        if group in groups or not 0 < len(ids) <= 12:
            continue
        groups.add(group)
        args = [wide, "--prompt-ids", " ".join(map(str, ids)), "-q", "-z", TOK]
        check_success("--prompt-ids in text mode, -n 0, prints the prompt's text (%s: %s)" % (group, short(data, 40)),
                      args + ["-n", "0"], want_stdout=data)
        check_success("--prompt-ids in text mode, -n 3, starts with the prompt's text (%s)" % group,
                      args + ["-n", "3", "-s", "1"],
                      stdout_check=lambda out: None if out.startswith(data) else "stdout %s" % short(out))


def main():
    if not os.path.isfile(RUN) or not os.access(RUN, os.X_OK):
        report("the run binary exists", "%s not found; build it with make" % RUN)
        return 1
    have_tok = os.path.isfile(TOK)
    tmp = tempfile.mkdtemp(prefix="test_cli_")
    try:
        return cases(tmp, have_tok)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cases(tmp, have_tok):
    def path(name):
        return os.path.join(tmp, name)

    def put(name, data):
        with open(path(name), "wb") as f:
            f.write(data)
        return path(name)

    # Models, exported from random Hugging Face checkpoints: a tiny one with 16 positions and 64 tokens
    # (id prompts), and one with GPT-2's vocabulary (text prompts, --ppl) that is still small (8 wide).
    # The corrupt files below are edits of the tiny one's bytes.
    tiny = exported_model(tmp, layers=1, heads=2, embd=16, ctx=16, vocab=64)
    with open(tiny, "rb") as f:
        good = f.read()
    wide = exported_model(tmp, layers=1, heads=2, embd=8, ctx=16, vocab=50257)
    ids_ok = ["--prompt-ids", "1 2 3", "--print-ids", "-n", "2", "-s", "1"]
    Z = ["-z", TOK]

    # ---------------- the model file ----------------
    check_error("model: no model given", ["-p", "hi"], ["model"])
    check_error("model: path does not exist, with a hint how to make one", [path("nope.bin")] + ids_ok,
                [("no such file", "cannot open"), "hint", ("export_gpt2.py", "make random-model")])
    check_error("model: empty file", [put("empty.bin", b"")] + ids_ok, ["empty"])
    check_error("model: is a directory", [tmp] + ids_ok, ["directory"])
    check_error("model: 100 bytes (shorter than the header)", [put("short.bin", good[:100])] + ids_ok, ["too small"])
    check_error("model: header only", [put("hdr.bin", good[:HEADER_BYTES])] + ids_ok, ["truncated"])
    check_error("model: truncated by one byte", [put("trunc.bin", good[:-1])] + ids_ok, ["truncated"])
    check_error("model: truncated mid-tensor", [put("trunc2.bin", good[:len(good) // 2])] + ids_ok, ["truncated"])
    check_error("model: one extra byte", [put("extra.bin", good + b"\0")] + ids_ok, [("does not match", "size")])
    check_error("model: 64 extra bytes", [put("extra64.bin", good + bytes(64))] + ids_ok, [("does not match", "size")])
    check_error("model: wrong magic", [put("magic.bin", b"GGUF" + good[4:])] + ids_ok, ["magic"])
    check_error("model: tokenizer.bin given as the model", [TOK] + ids_ok, ["magic"])
    check_error("model: version 4", [put("v4.bin", good[:4] + struct.pack("<I", 4) + good[8:])] + ids_ok, ["version"])
    check_error("model: version 0", [put("v0.bin", good[:4] + struct.pack("<I", 0) + good[8:])] + ids_ok, ["version"])
    # A version 1 file is a version 3 f32 file without the weight-type field, and version 2 differs from 3
    # only in how int8 rows are stored: both still load (a version 2 int8 file is refused below).
    v3 = run([tiny] + ids_ok)
    for old in (1, 2):
        v = run([put(f"v{old}.bin", good[:4] + struct.pack("<I", old) + good[8:])] + ids_ok)
        report(f"model: a version {old} (f32) file loads and gives the same ids as version 3",
               "" if v and v3 and v.returncode == 0 and v.stdout == v3.stdout and good[32:36] == bytes(4)
               else "exit %s, stdout %s vs %s" % (v and v.returncode, v and short(v.stdout), v3 and short(v3.stdout)))
    good8 = open(exported_model(tmp, "int8", layers=1, heads=2, embd=32, ctx=16, vocab=64), "rb").read()
    check_error("model: a version 2 int8 file (rows not interleaved), with how to re-export",
                [put("v2q8.bin", good8[:4] + struct.pack("<I", 2) + good8[8:])] + ids_ok, ["version 2", "re-export", "--dtype int8"])

    def with_header(name, **fields):
        """The tiny model with some header fields set to other values (uint32, or float32 for eps)."""
        d = bytearray(good)
        for k, v in fields.items():
            struct.pack_into("<f" if k == "eps" else "<I", d, FIELD_OFFSET[k], v)
        return put(name, bytes(d))

    bad_headers = [
        ("n_embd = 2^31", dict(n_embd=2 ** 31), "n_embd"),
        ("n_embd = 2^32-1", dict(n_embd=2 ** 32 - 1), "n_embd"),
        ("n_embd = 0", dict(n_embd=0), "n_embd"),
        ("vocab_size = 0", dict(vocab=0), "vocab"),
        ("vocab_size = 2^31", dict(vocab=2 ** 31), "vocab"),
        ("n_layer = 0", dict(n_layer=0), "n_layer"),
        ("n_layer = 2^32-1", dict(n_layer=2 ** 32 - 1), "n_layer"),
        ("n_head = 0", dict(n_head=0), "n_head"),
        ("n_head = 2^31", dict(n_head=2 ** 31), "n_head"),
        ("n_head does not divide n_embd", dict(n_head=3), "n_head"),
        ("n_ctx = 0", dict(n_ctx=0), "n_ctx"),
        ("n_ctx = 2^31", dict(n_ctx=2 ** 31), "n_ctx"),
        ("epsilon NaN", dict(eps=float("nan")), "eps"),
        ("epsilon 0", dict(eps=0.0), "eps"),
        ("epsilon -1", dict(eps=-1.0), "eps"),
        ("epsilon inf", dict(eps=float("inf")), "eps"),
    ]
    for label, fields, kw in bad_headers:
        check_error("model header: " + label, [with_header("h.bin", **fields)] + ids_ok, [kw])
    # fields each in range, but describing another file size than this one
    for label, fields in [("n_ctx 17 for a 16-position file", dict(n_ctx=17)),
                          ("n_layer 2 for a 1-layer file", dict(n_layer=2)),
                          ("vocab 63 for a 64-token file", dict(vocab=63)),
                          ("n_embd 32 for a 16-wide file", dict(n_embd=32)),
                          ("the largest allowed config", dict(n_layer=4096, n_head=4096, n_embd=65536,
                                                              n_ctx=1 << 20, vocab=1 << 24))]:
        check_error("model header: " + label, [with_header("h.bin", **fields)] + ids_ok,
                    [("does not match", "size")])
    reserved = bytearray(good)
    reserved[100] = 1
    check_error("model header: non-zero reserved byte", [put("res.bin", bytes(reserved))] + ids_ok, ["reserved"])

    # Weights that are not numbers: the engine must not print tokens sampled from NaN logits as a success.
    # This shows only once the forward pass has run, so -q keeps the summary lines out of stderr.
    nan_model = bytearray(good)
    nan_model[HEADER_BYTES:HEADER_BYTES + 4 * 16 * 64] = struct.pack("<f", math.nan) * (16 * 64)  # wte
    nan_path = put("nan.bin", bytes(nan_model))
    check_error("model: NaN weights (generate)", [nan_path, "-q"] + ids_ok, [("nan", "finite")])
    check_error("model: NaN weights (greedy)", [nan_path, "-q"] + ids_ok + ["-t", "0"], [("nan", "finite")])
    check_error("model: NaN weights (--no-cache, top-k)", [nan_path, "-q", "--no-cache", "--top-k", "5"] + ids_ok,
                [("nan", "finite")])

    # ---------------- the tokenizer file ----------------
    if not have_tok:
        report("tokenizer.bin present for the tokenizer cases", "%s not found" % TOK)
    else:
        with open(TOK, "rb") as f:
            tokdata = f.read()
        text = ["-p", "Hello", "-n", "1", "-s", "1"]
        check_error("tokenizer: -z path does not exist", [wide, "-z", path("nope.tok")] + text,
                    ["tokenizer", ("no such file", "cannot open")])
        check_error("tokenizer: -z is a directory", [wide, "-z", tmp] + text, ["tokenizer", "directory"])
        check_error("tokenizer: empty", [wide, "-z", put("empty.tok", b"")] + text, ["tokenizer", "empty"])
        check_error("tokenizer: header only", [wide, "-z", put("t36.tok", tokdata[:36])] + text, ["tokenizer"])
        check_error("tokenizer: truncated by one byte", [wide, "-z", put("t1.tok", tokdata[:-1])] + text, ["tokenizer"])
        check_error("tokenizer: truncated to half", [wide, "-z", put("th.tok", tokdata[:len(tokdata) // 2])] + text,
                    ["tokenizer"])
        check_error("tokenizer: one extra byte", [wide, "-z", put("tx.tok", tokdata + b"\0")] + text, ["tokenizer"])
        check_error("tokenizer: bad magic", [wide, "-z", put("tm.tok", b"XTOK" + tokdata[4:])] + text,
                    ["tokenizer", "magic"])
        check_error("tokenizer: the model given as -z", [wide, "-z", tiny] + text, ["tokenizer", "magic"])
        check_error("tokenizer: version 9", [wide, "-z", put("tv.tok", tokdata[:4] + struct.pack("<I", 9) + tokdata[8:])]
                    + text, ["tokenizer", "version"])
        n_vocab = struct.unpack_from("<I", tokdata, 8)[0]
        n_merges = struct.unpack_from("<I", tokdata, 12)[0]

        def patched(name, off, value):
            d = bytearray(tokdata)
            struct.pack_into("<I", d, off, value)
            return put(name, bytes(d))

        corrupt = [
            ("n_vocab 0", 8, 0),
            ("n_vocab 2^32-1", 8, 2 ** 32 - 1),
            ("n_merges > n_vocab - 256", 12, n_vocab),
            ("n_token_bytes + 1", 32, struct.unpack_from("<I", tokdata, 32)[0] + 1),
            ("a letter-range count of 2^32-1", 20, 2 ** 32 - 1),
            ("token offset not increasing", 36 + 4 * 300, 0),
            ("token offset past the end", 36 + 4 * 300, 2 ** 32 - 1),
            ("merge with an id out of range", 36 + 4 * (n_vocab + 1), n_vocab),
            ("merge result out of range", 36 + 4 * (n_vocab + 1) + 8, 2 ** 31),
            ("last merge result is an earlier token", 36 + 4 * (n_vocab + 1) + 12 * (n_merges - 1) + 8, 300),
            ("code point range past U+10FFFF", 36 + 4 * (n_vocab + 1) + 12 * n_merges + 4, 0x110000),
        ]
        for label, off, value in corrupt:
            check_error("tokenizer: " + label, [wide, "-z", patched("c.tok", off, value)] + text, ["tokenizer"])
        # the second merge made a copy of the first (same pair, same result)
        d = bytearray(tokdata)
        m0 = 36 + 4 * (n_vocab + 1)
        d[m0 + 12:m0 + 24] = d[m0:m0 + 12]
        check_error("tokenizer: merge repeated", [wide, "-z", put("rep.tok", bytes(d))] + text, ["tokenizer"])
        # a byte with no single-byte token: swap the first byte token's byte for one that another token has
        d = bytearray(tokdata)
        off_bytes = len(tokdata) - struct.unpack_from("<I", tokdata, 32)[0]
        d[off_bytes] = d[off_bytes + 1]
        check_error("tokenizer: two tokens for one byte", [wide, "-z", put("dup.tok", bytes(d))] + text, ["tokenizer"])
        check_error("tokenizer: corrupt, in --tokenize mode", ["--tokenize", "-p", "hi", "-z", put("t1b.tok", tokdata[:-1])],
                    ["tokenizer"])
        # no -z, and no tokenizer.bin in the working directory or next to the program
        lone = os.path.join(tmp, "lone")
        os.mkdir(lone)
        shutil.copy(RUN, os.path.join(lone, "run"))
        check_error("tokenizer: default tokenizer.bin missing", [wide] + text, ["tokenizer"], cwd=lone,
                    exe=os.path.join(lone, "run"))

    # ---------------- prompts ----------------
    check_error("prompt: 17 ids for a 16-position context", [tiny, "--prompt-ids", " ".join(["5"] * 17), "--print-ids"],
                ["17", "16"])
    check_error("prompt: 1000 ids for a 16-position context", [tiny, "--prompt-ids", ",".join(["5"] * 1000), "--print-ids"],
                ["1000", "16"])
    check_error("prompt: id = vocab", [tiny, "--prompt-ids", "1 64", "--print-ids"], ["64", "vocab"])
    check_error("prompt: id 2^31", [tiny, "--prompt-ids", "2147483648", "--print-ids"], ["vocab"])
    check_error("prompt: id -1", [tiny, "--prompt-ids", "3 -1", "--print-ids"], ["vocab"])
    check_error("prompt: id 99999999999999999999", [tiny, "--prompt-ids", "99999999999999999999", "--print-ids"],
                ["prompt-ids"])
    check_error("prompt: id 'abc'", [tiny, "--prompt-ids", "1 abc", "--print-ids"], ["prompt-ids"])
    check_error("prompt: id '1x'", [tiny, "--prompt-ids", "1x 2", "--print-ids"], ["prompt-ids"])
    check_error("prompt: given twice (-p and --prompt-ids)", [tiny, "-p", "a", "--prompt-ids", "1"], ["prompt"])
    check_error("prompt: -f does not exist", [tiny, "-f", path("nope.txt")], [("no such file", "cannot open")])
    check_error("prompt: -f is a directory", [tiny, "-f", tmp], ["prompt"])
    check_error("prompt: --tokenize with --prompt-ids", ["--tokenize", "--prompt-ids", "1"], ["tokenize"])
    if have_tok:
        long_text = "The quick brown fox jumps over the lazy dog. " * 3
        r = run(["--tokenize", "-p", long_text] + Z)
        n_tok = len(r.stdout.split()) if r is not None and r.returncode == 0 else None
        if not n_tok or n_tok <= 16:
            report("prompt: --tokenize counts the long prompt", "got %r" % (r and (r.returncode, r.stdout[:80])))
        else:
            check_error("prompt: text of %d tokens for a 16-position context" % n_tok, [wide, "-p", long_text] + Z,
                        [str(n_tok), "16"])
            check_error("prompt: text file of %d tokens for a 16-position context" % n_tok,
                        [wide, "-f", put("long.txt", long_text.encode())] + Z, [str(n_tok), "16"])
            check_error("prompt: text from stdin of %d tokens for a 16-position context" % n_tok,
                        [wide, "-f", "-"] + Z, [str(n_tok), "16"], stdin_bytes=long_text.encode())
        check_error("prompt: text whose tokens the 64-token model lacks", [tiny, "-p", "Hello world"] + Z, ["vocab"])
        check_error("prompt: empty prompt starts from <|endoftext|>, which the 64-token model lacks", [tiny, "-n", "1"] + Z,
                    ["endoftext"])

    # ---------------- numeric options ----------------
    bad_values = [
        ("-n", "-1"), ("-n", "abc"), ("-n", ""), ("-n", "1.5"), ("-n", "99999999999999999999999"), ("-n", "2147483648"),
        ("-n", "5x"),
        ("-t", "-0.5"), ("-t", "nan"), ("-t", "inf"), ("-t", "-inf"), ("-t", "abc"), ("-t", ""), ("-t", "1e999"),
        ("-t", "1.0x"),
        ("--top-p", "0"), ("--top-p", "1.5"), ("--top-p", "-0.1"), ("--top-p", "nan"), ("--top-p", "x"),
        ("--top-k", "-3"), ("--top-k", "abc"), ("--top-k", "1e3"), ("--top-k", "99999999999999999999"),
        ("-s", "-1"), ("-s", "99999999999999999999999"), ("-s", "18446744073709551616"), ("-s", "abc"), ("-s", ""),
        ("-s", "12abc"), ("-s", " -1"), ("-s", "1.5"),
    ]
    for flag, value in bad_values:
        # the flag name and the offending value are both in the message
        check_error("option %s %r" % (flag, value), [tiny, flag, value, "--prompt-ids", "1", "--print-ids"],
                    [flag + " "] + ([value.strip()] if value.strip() else []))
    check_error("option: unknown flag --bogus", [tiny, "--bogus"], ["--bogus"])
    check_error("option: unknown flag -x", [tiny, "-x", "1"], ["-x"])
    check_error("option: unknown flag before the model", ["--temperature", "0.5", tiny], ["--temperature"])
    check_error("option: second model path", [tiny, tiny], ["unexpected"])
    for flag in ["-p", "-f", "--prompt-ids", "-n", "-t", "--top-p", "--top-k", "-s", "-z", "--ppl", "--timings", "--logits"]:
        check_error("option: %s without its value" % flag, [tiny, flag], [flag, "value"])

    # ---------------- files named on the command line ----------------
    check_error("--ppl: file does not exist", [wide, "--ppl", path("nope.txt")] + Z, ["--ppl", ("no such file", "cannot open")])
    check_error("--ppl: file is a directory", [wide, "--ppl", tmp] + Z, ["--ppl"])
    if os.geteuid() != 0:
        unreadable = put("unreadable.txt", b"hello")
        os.chmod(unreadable, 0)
        check_error("--ppl: file not readable", [wide, "--ppl", unreadable] + Z, ["--ppl", "permission"])
    if have_tok:
        check_error("--ppl: empty file", [wide, "--ppl", put("empty.txt", b"")] + Z, ["--ppl", "no tokens"])
        check_error("--ppl: tokens the 64-token model lacks", [tiny, "--ppl", put("hello.txt", b"Hello world")] + Z,
                    ["--ppl", "vocab"])
        # The text is scored after <|endoftext|> (50256); a model without that token cannot score it.
        check_error("--ppl: model vocabulary without <|endoftext|>", [tiny, "--ppl", put("bang.txt", b"!")] + Z,
                    [("endoftext", "50256")])
        ctx1 = exported_model(tmp, layers=1, heads=2, embd=8, ctx=1, vocab=50257)
        check_error("--ppl: model with a 1-position context", [ctx1, "--ppl", put("hello.txt", b"Hello world")] + Z,
                    ["--ppl", "context"])
        nan_wide = bytearray(open(wide, "rb").read())
        nan_wide[HEADER_BYTES:HEADER_BYTES + 4 * 8 * 100] = struct.pack("<f", math.nan) * (8 * 100)
        check_error("--ppl: NaN weights", ["-q", put("nanwide.bin", bytes(nan_wide)), "--ppl", put("hello.txt", b"Hello world")] + Z,
                    [("nan", "finite")])
    check_error("--timings: directory does not exist", [tiny, "--timings", path("no/dir/t.csv")] + ids_ok, ["--timings"])
    check_error("--logits: directory does not exist", [tiny, "--logits", path("no/dir/l.bin")] + ids_ok, ["--logits"])
    check_error("--logits: path is a directory", [tiny, "--logits", tmp] + ids_ok, ["--logits"])
    if os.path.exists("/dev/full"):  # found when the buffered output is flushed: after tokens have streamed
        for flag in ["--logits", "--timings"]:
            for n in ["3", "15"]:
                check_error("%s: disk full, -n %s" % (flag, n),
                            [tiny, flag, "/dev/full", "--prompt-ids", "1", "--print-ids", "-n", n, "-q"], [flag],
                            allow_stdout=True)
        check_error("stdout: disk full", [tiny, "--prompt-ids", "1", "--print-ids", "-n", "3", "-q"], ["stdout"],
                    stdin_bytes=None, allow_stdout=True, stdout_path="/dev/full")

    # ---------------- what must succeed ----------------
    check_success("--help exits 0 with usage on stdout", ["--help"],
                      stdout_check=lambda out: None if b"Usage" in out and b"--top-p" in out else "no usage text")
    check_success("-h exits 0 with usage on stdout", [tiny, "-n", "5", "-h"],
                  stdout_check=lambda out: None if b"Usage" in out else "no usage text")
    if have_tok:
        check_success("-n 0 prints just the prompt", [wide, "-p", "Hello world", "-n", "0", "-q"] + Z,
                      want_stdout=b"Hello world")
        check_success("-n 0 with a prompt exactly as long as the context",
                      [wide, "-p", " a" * 16, "-n", "0", "-q"] + Z, want_stdout=b" a" * 16)
        check_success("-n 5 with a prompt exactly as long as the context stops at the limit",
                      [wide, "-p", " a" * 16, "-n", "5", "-q"] + Z, want_stdout=b" a" * 16)
    if have_tok:
        prompt_text_cases(wide)
        for data in (b"Hello world\n", b"line one\nline two\n\n"):
            check_success("-f - from a pipe keeps the trailing newline: %r, -n 0" % data, [wide, "-f", "-", "-n", "0", "-q"] + Z,
                          want_stdout=data, stdin_bytes=data)
            check_success("-f - from a pipe keeps the trailing newline: %r, -n 3" % data,
                          [wide, "-f", "-", "-n", "3", "-s", "1", "-q"] + Z, stdin_bytes=data,
                          stdout_check=lambda out, data=data: None if out.startswith(data) else "stdout %s" % short(out))
    check_success("-n 0 with --print-ids prints an empty line", [tiny, "--prompt-ids", "1 2", "--print-ids", "-n", "0", "-q"],
                  want_stdout=b"\n")

    def ids_in_range(out):
        ids = out.split()
        if len(ids) != 13 or not all(0 <= int(x) < 64 for x in ids):
            return "expected 13 ids in 0..63, got %s" % short(out)
        return None
    check_success("generation runs to the context limit", [tiny, "--prompt-ids", "1 2 3", "--print-ids", "-n", "100",
                                                           "-q", "-s", "7"], stdout_check=ids_in_range)
    check_success("--reference and --ignore-eos are accepted", [tiny, "--prompt-ids", "1 2 3", "--print-ids", "-n", "100",
                                                             "-q", "-s", "7", "--reference", "--ignore-eos"],
                  stdout_check=ids_in_range)
    check_success("-s 18446744073709551615 (2^64-1) is a valid seed",
                  [tiny, "--prompt-ids", "1", "--print-ids", "-n", "1", "-q", "-s", "18446744073709551615"])
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
