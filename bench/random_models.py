"""The random-weight models the bench makes, the way `make random-model` does: a Hugging Face-layout
checkpoint from tests/make_hf_model.py, converted by the real export_gpt2.py.

The checkpoint directory is kept in bench/out/ and every weight type is exported from it, so f32, f16
and int8 hold the same weights (make_hf_model.py's fixed seed gives the same ones again if it is
deleted). Each file is made once and reused until the checkpoint is newer than it. Speed does not
depend on the values; quality (quality.py) compares the types on these same weights.
"""
import os
import shutil
import subprocess
import sys

from common import ROOT, BenchError, log, model_version, numpy_python, read_config, rel

GPT2_124M = ("gpt2-124M-random", ["--gpt2-124m"])
# Few layers with large weights: attention concentrates on few positions (peaked softmax), which
# rounding of the weights disturbs more than the near-uniform attention of the std-0.02 124M model.
PEAKED = ("gpt2-4x256-std0.2-random", ["--layers", "4", "--heads", "4", "--embd", "256", "--ctx", "1024",
                                       "--vocab", "50257", "--std", "0.2"])


def _run(cmd, out_dir, what):
    log(" ".join(cmd).replace(out_dir, rel(out_dir)))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"making {what} failed: {(r.stderr or r.stdout).strip()}")


def checkpoint(out_dir, model):
    """bench/out/NAME.hf, made once (into NAME.hf.tmp first, so that only a complete one is reused)."""
    name, make_args = model
    path = os.path.join(out_dir, name + ".hf")
    if os.path.isdir(path):
        return path
    py = numpy_python()
    if py is None:
        raise BenchError("no python with numpy to make a random model (apt-get install python3-numpy)")
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run([py, "tests/make_hf_model.py", tmp, *make_args], out_dir, "a random checkpoint")
    os.rename(tmp, path)
    return path


def exported(out_dir, model, dtype):
    """bench/out/NAME-DTYPE.bin exported from the checkpoint, remade when the checkpoint is newer or the
    file is not the model.bin version this checkout writes."""
    hf = checkpoint(out_dir, model)
    path = os.path.join(out_dir, f"{model[0]}-{dtype}.bin")
    if (os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(hf)
            and read_config(path)["version"] == model_version()):
        return path
    _run([sys.executable, "export_gpt2.py", hf, path, "--dtype", dtype], out_dir, f"the {dtype} export")  # atomic itself
    return path
