"""Byte-level BPE (GPT-2 style), trained from a corpus and written as a Hugging Face
``tokenizer.json``; pure Python, no ``tokenizers`` package.

Format of the written tokenizer (what the Rust ``tokenizers`` library, and so DJL's Java
binding, reads):

- id 0 is the special token ``<|endoftext|>`` (end of sequence, document separator); ids 1..256
  are the 256 bytes, in byte order, spelled with GPT-2's byte-to-unicode table; then one id per
  merge, in the order the merges were learned;
- pre-tokenizer: ``Split`` on :data:`PATTERN` (isolated), then ``ByteLevel`` without its own
  regex; decoder ``ByteLevel``. The pattern is plain ASCII classes so that Python's ``re`` and
  the Rust library's Oniguruma split text the same way, which lets :func:`encode` compute ids
  independently of the Rust library (model-store's ``HfTokenizerTest`` compares the two).
"""

import collections
import heapq
import json
import re
from typing import Dict, Iterable, List, Tuple

EOS = "<|endoftext|>"
PATTERN = r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"
_SPLIT = re.compile(PATTERN)


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_CHARS = bytes_to_unicode()


def pretokens(text: str) -> List[str]:
    """Splits text like the tokenizer.json's pre-tokenizer, as byte-level strings."""
    return ["".join(BYTE_CHARS[b] for b in piece.encode("utf-8")) for piece in _SPLIT.findall(text)]


def train(texts: Iterable[str], vocab_size: int, min_count: int = 2) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """Learns vocab_size - 257 merges; returns (vocab, merges)."""
    counts = collections.Counter()
    for t in texts:
        counts.update(pretokens(t))
    words = [list(w) for w in counts]
    freq = [counts[w] for w in counts]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    vocab = {EOS: 0}
    for b in range(256):
        vocab[BYTE_CHARS[b]] = b + 1
    merges: List[Tuple[str, str]] = []
    # a heap of (-count, pair) with stale entries skipped when popped: the most frequent pair,
    # ties to the smallest pair, so a run is deterministic
    heap = [(-n, p) for p, n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, (a, b) = heapq.heappop(heap)
        n = pairs.get((a, b), 0)
        if n != -neg:
            if n > 0:
                heapq.heappush(heap, (-n, (a, b)))
            continue
        if n < min_count:
            break
        pairs.pop((a, b))
        merged = a + b
        merges.append((a, b))
        vocab[merged] = len(vocab)
        touched = set()
        for i in list(where[(a, b)]):
            w = words[i]
            f = freq[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= f
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
                where[(x, y)].discard(i)
            out = []
            j = 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                where[(x, y)].add(i)
                touched.add((x, y))
        where.pop((a, b), None)
        for p in touched:
            if p != (a, b) and pairs.get(p, 0) > 0:
                heapq.heappush(heap, (-pairs[p], p))
    return vocab, merges


def tokenizer_json(vocab: Dict[str, int], merges: List[Tuple[str, str]]) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": EOS, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }


class Encoder:
    """Encodes text with a tokenizer.json written by :func:`tokenizer_json`, in Python (no special
    tokens are recognised in the text)."""

    def __init__(self, path: str):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        self.vocab: Dict[str, int] = tj["model"]["vocab"]
        self.ranks = {tuple(m.split(" ")) if isinstance(m, str) else tuple(m): i
                      for i, m in enumerate(tj["model"]["merges"])}
        self.inverse = {i: s for s, i in self.vocab.items()}
        self.byte_of = {c: b for b, c in BYTE_CHARS.items()}
        self.cache: Dict[str, List[int]] = {}

    def _bpe(self, word: str) -> List[str]:
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), 1 << 30), k) for k, (a, b) in
                      enumerate(zip(parts, parts[1:]))]
            rank, k = min(ranked)
            if rank == 1 << 30:
                break
            parts[k:k + 2] = [parts[k] + parts[k + 1]]
        return parts

    def encode(self, text: str) -> List[int]:
        out: List[int] = []
        for w in pretokens(text):
            ids = self.cache.get(w)
            if ids is None:
                ids = [self.vocab[p] for p in self._bpe(w)]
                if len(self.cache) < 200000:
                    self.cache[w] = ids
            out.extend(ids)
        return out

    def decode_bytes(self, ids: List[int]) -> bytes:
        return bytes(self.byte_of[c] for i in ids if i != 0 for c in self.inverse[i])
