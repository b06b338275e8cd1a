#!/usr/bin/python3
"""Trains gpumeter's demo model: a small byte-level causal transformer, saved as TorchScript.

Run with Debian's Python and python3-torch (1.13); no pip and no network needed:

    apt-get install -y python3-torch python3.11-doc
    apt-get install -y libopenblas0-pthread               # optional, about 5x faster
    /usr/bin/python3 tools/train_demo_model.py [CORPUS_DIR]   # writes models/demo-byte-lm/

Corpus (default CORPUS_DIR): the reStructuredText sources of the Python 3.11 documentation as
shipped by the Debian package ``python3.11-doc`` (``/usr/share/doc/python3.11/html/_sources``).
The documentation is distributed under the PSF License Agreement (see
``/usr/share/doc/python3.11-doc/copyright`` and ``license.rst.txt`` in the corpus); code examples
in it are additionally under the Zero-Clause BSD licence. Markup is stripped roughly (directives,
roles, literal and doctest blocks, section underlines), each ``.rst.txt`` file is one document,
and documents are separated by the end-of-sequence id 256. The C API pages are left out (little
prose). Any other folder of ``*.txt`` / ``*.rst`` files can be given instead.

Model: byte-level causal transformer, vocabulary 257 (256 bytes + end-of-sequence 256), learned
position embeddings (initialised with sinusoids) for a context of 1024, pre-LayerNorm blocks,
GELU MLP, and an ALiBi distance penalty in attention (fixed per-head slopes), which lets the
model leave the bigram plateau within minutes on a CPU and keeps it sane beyond its training
windows. Training windows grow from 128 to 1024 bytes over the run (``--windows``).

The model contract the saved file implements (methods ``forward`` and ``step``, shapes, KV cache
layout) is written down in model-store/README.md. Before saving, the script checks on the scripted
module and on the saved file that ``step`` (packed, KV-cached) generates exactly the same greedy
tokens as ``forward`` recomputation, and that packing sequences of different lengths into one
step gives the same logits as running each alone.

Training uses a fixed seed and stops after ``--steps`` steps or ``--max-minutes`` minutes,
whichever comes first; the learning-rate and window schedules follow the same progress measure,
so a busy machine gets a shorter but fully annealed run (and a slightly different model).
"""

import argparse
import json
import math
import os
import random
import re
import sys
import time
from typing import List

# Debian's python3-torch links the reference BLAS (BLAS_INFO=generic), which makes training about
# five times slower. When OpenBLAS is installed (apt-get install -y libopenblas0-pthread), re-run
# this process with it on the library path, leaving the system-wide BLAS alternative untouched.
_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
if (__name__ == "__main__" and os.path.exists(os.path.join(_OPENBLAS, "libblas.so.3"))
        and _OPENBLAS not in os.environ.get("LD_LIBRARY_PATH", "")):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = _OPENBLAS + (":" + env["LD_LIBRARY_PATH"]
                                          if env.get("LD_LIBRARY_PATH") else "")
    _threads = "2"  # --threads, read before argparse: OpenBLAS reads its thread count at load
    for _i, _a in enumerate(sys.argv):
        if _a == "--threads" and _i + 1 < len(sys.argv):
            _threads = sys.argv[_i + 1]
        elif _a.startswith("--threads="):
            _threads = _a.split("=", 1)[1]
    env["OPENBLAS_NUM_THREADS"] = _threads
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

VOCAB = 257  # 256 byte values + end-of-sequence
EOS = 256
DEFAULT_CORPUS = "/usr/share/doc/python3.11/html/_sources"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "demo-byte-lm")


# --------------------------------------------------------------------------------------------
# Corpus: rough reST -> prose
# --------------------------------------------------------------------------------------------

# directives whose whole body is dropped (code, tables of contents, indexes, comments ...)
DROP_DIRECTIVES = {
    "index", "toctree", "code-block", "sourcecode", "code", "highlight", "literalinclude",
    "testcode", "testsetup", "testcleanup", "testoutput", "doctest", "productionlist",
    "image", "figure", "csv-table", "list-table", "table", "raw", "only", "include",
    "moduleauthor", "sectionauthor", "module", "currentmodule", "program", "option",
    "envvar", "opcode", "cmdoption", "audit-event", "audit-event-table", "impl-detail",
    "c:function", "c:macro", "c:type", "c:member", "c:var", "c:struct", "c:data",
    "availability", "grammar-snippet", "rubric", "seealso", "literal", "tabularcolumns",
    "sidebar", "pypi", "default-role",
}
ROLE_RE = re.compile(r":[\w:+.-]+:`([^`]*)`")
LINK_RE = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}")
REF_RE = re.compile(r"`([^`]+)`_{1,2}")
LITERAL_RE = re.compile(r"``([^`]*)``")
INTERP_RE = re.compile(r"`([^`]*)`")
EMPH_RE = re.compile(r"(\*\*|\*)(\S(?:.*?\S)?)\1")
SUBST_RE = re.compile(r"\|(\w[\w -]*)\|")
UNDERLINE_RE = re.compile(r"^\s*([=\-~^\"'`#*+_.:<>])\1{2,}\s*$")
TABLE_RE = re.compile(r"^\s*[+|=\-][-=+| ]*$")
DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")


def _role_text(m):
    text = m.group(1)
    text = re.sub(r"\s*<[^>]*>$", "", text)  # :ref:`label <target>` -> label
    text = text.lstrip("~!")
    if m.group(0).startswith(":") and "." in text and " " not in text and m.group(0).find("~") >= 0:
        text = text.rsplit(".", 1)[-1]
    return text


def inline(text: str) -> str:
    text = ROLE_RE.sub(_role_text, text)
    text = LINK_RE.sub(r"\1", text)
    text = REF_RE.sub(r"\1", text)
    text = LITERAL_RE.sub(r"\1", text)
    text = INTERP_RE.sub(r"\1", text)
    text = EMPH_RE.sub(r"\2", text)
    text = SUBST_RE.sub(r"\1", text)
    text = text.replace("\\ ", "").replace("\\", "")
    return text


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_prose(src: str) -> str:
    """Keeps paragraphs of prose, one line each, separated by blank lines."""
    lines = src.expandtabs(8).splitlines()
    paragraphs: List[str] = []
    current: List[str] = []
    skip_indent = -1  # drop lines indented more than this (body of a dropped block)
    literal_next = False  # previous paragraph ended with '::'

    def flush():
        nonlocal literal_next
        if current:
            para = " ".join(s.strip() for s in current)
            para = re.sub(r"\s+", " ", para).strip()
            if para.endswith("::"):
                literal_next = True
                para = para[:-2].rstrip()
                if para and para[-1] not in ".:!?":
                    para += ":"
            para = inline(para)
            # field-list and option lines, bullets of pure markup
            if len(re.sub(r"[^A-Za-z]", "", para)) >= 12:
                paragraphs.append(para)
            current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        ind = indent_of(line)
        if skip_indent >= 0:
            if not stripped or ind > skip_indent:
                i += 1
                continue
            skip_indent = -1
        if not stripped:
            flush()
            i += 1
            continue
        if literal_next:
            literal_next = False
            base = indent_of(lines[i - 1]) if i > 0 and lines[i - 1].strip() else 0
            # the literal block is the indented block that follows
            if ind > 0 and (not current):
                skip_indent = max(0, ind - 1)
                continue
            del base
        if stripped.startswith(">>>") or stripped.startswith("..."):
            flush()
            skip_indent = ind - 1 if ind > 0 else 0
            # a doctest block runs until the next blank line
            while i < len(lines) and lines[i].strip():
                i += 1
            skip_indent = -1
            continue
        m = DIRECTIVE_RE.match(line)
        if m or stripped.startswith(".. "):
            flush()
            name = m.group(2) if m else ""
            if (not m) or name in DROP_DIRECTIVES or name.startswith("c:"):
                skip_indent = ind
            else:
                # keep the body (note, warning, function descriptions ...), drop the directive
                arg = m.group(3).strip()
                if name in ("note", "warning", "tip", "important", "caution", "attention",
                            "hint", "danger", "error", "admonition", "versionadded",
                            "versionchanged", "deprecated", "deprecated-removed"):
                    if name.startswith("version") or name.startswith("deprecated"):
                        verb = {"versionadded": "New in version",
                                "versionchanged": "Changed in version",
                                "deprecated": "Deprecated since version",
                                "deprecated-removed": "Deprecated since version"}[name]
                        head = arg.split(" ", 1)
                        current.append(verb + " " + head[0] + ("." if len(head) == 1 else ": " + head[1]))
                    elif arg:
                        current.append(arg)
                # option lines (":noindex:") directly under the directive are skipped below
            i += 1
            while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]) and m and \
                    not (skip_indent >= 0):
                i += 1
            continue
        if UNDERLINE_RE.match(line) or TABLE_RE.match(line) and len(stripped) > 3:
            flush()
            i += 1
            continue
        if re.match(r"^\s*:[\w -]+:\s*$", line):  # lone field markers like ':noindex:'
            i += 1
            continue
        # bullets start new paragraphs
        if re.match(r"^\s*([*+-]|\d+\.|#\.)\s+", line) and current:
            flush()
        current.append(re.sub(r"^\s*([*+-]|#\.)\s+", "", line))
        i += 1
    flush()
    return "\n\n".join(paragraphs)


def load_corpus(root: str, skip_dirs=("c-api",)) -> List[bytes]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for f in sorted(filenames):
            if f.endswith(".txt") or f.endswith(".rst"):
                files.append(os.path.join(dirpath, f))
    if not files:
        sys.exit("no *.txt or *.rst files under %s (apt-get install -y python3.11-doc?)" % root)
    docs = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = rst_to_prose(fh.read())
        if len(text) >= 200:
            docs.append(text.encode("utf-8"))
    return docs


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        # ALiBi (Press et al., 2022): a fixed per-head penalty proportional to the distance
        # between query and key, in addition to the learned position embeddings. It gives every
        # head a recency prior from the first step (a small model trained for minutes on a CPU
        # otherwise sits at the bigram loss for a long time) and keeps attention well behaved
        # at positions beyond the training windows. Geometric slopes 2^(-8i/H), i = 1..H.
        self.register_buffer("slopes", torch.tensor(
            [2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)], dtype=torch.float32))
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim)
        self.proj = nn.Linear(n_heads * head_dim, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def mlp(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln2(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Full causal self-attention over x: [B, T, D]."""
        b, t, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, self.head_dim)
        q = qkv[:, :, 0].transpose(1, 2)  # [B, H, T, Dh]
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale  # [B, H, T, T]
        pos = torch.arange(t, device=x.device)
        dist = (pos.view(t, 1) - pos.view(1, t)).clamp(min=0).to(scores.dtype)  # [query, key]
        scores = scores - self.slopes.view(1, -1, 1, 1) * dist.view(1, 1, t, t)
        future = pos.view(1, t) > pos.view(t, 1)  # [query, key]
        scores = scores.masked_fill(future.view(1, 1, t, t), float("-inf"))
        att = torch.softmax(scores, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        x = x + self.proj(y)
        return x + self.mlp(x)

    def attend_cached(self, q: Tensor, qpos: Tensor, gslots: Tensor, kc: Tensor, vc: Tensor,
                      p: int) -> Tensor:
        """q: [G, T, H, Dh] queries of G sequences (padded to T), qpos: [G, T] their positions,
        gslots: [G] cache slots, kc/vc: [S, C, H, Dh]. Keys/values at positions [0, p) of each
        slot; key position > query position is masked. Returns [G, T, H, Dh]."""
        keys = kc.narrow(1, 0, p).index_select(0, gslots)  # [G, P, H, Dh]
        vals = vc.narrow(1, 0, p).index_select(0, gslots)
        scores = torch.matmul(q.transpose(1, 2), keys.permute(0, 2, 3, 1)) * self.scale
        kpos = torch.arange(p, device=q.device)
        dist = (qpos.unsqueeze(2) - kpos.view(1, 1, p)).clamp(min=0).to(scores.dtype)  # [G,T,P]
        scores = scores - self.slopes.view(1, -1, 1, 1) * dist.unsqueeze(1)
        masked = kpos.view(1, 1, p) > qpos.unsqueeze(2)  # [G, T, P]
        scores = scores.masked_fill(masked.unsqueeze(1), float("-inf"))  # [G, H, T, P]
        att = torch.softmax(scores, dim=-1)
        return torch.matmul(att, vals.transpose(1, 2)).transpose(1, 2)  # [G, T, H, Dh]

    def attend_decode(self, q: Tensor, qpos: Tensor, gslots: Tensor, kc: Tensor, vc: Tensor,
                      p: int) -> Tensor:
        """One query per sequence (decode). q: [G, H, Dh], qpos: [G], gslots: [G].

        The keys are gathered once as [G, P, H*Dh] and used as they lie: a block-diagonal query
        [G, H, H*Dh] makes one batched product give every head's scores, so the gathered keys
        and values are not copied a second time into a head-major layout. This step is memory
        bound; the extra multiplications by zero cost less than that copy. Returns [G, H, Dh]."""
        g = q.size(0)
        h = self.n_heads
        hd = h * self.head_dim
        keys = kc.narrow(1, 0, p).index_select(0, gslots).view(g, p, hd)  # [G, P, H*Dh]
        vals = vc.narrow(1, 0, p).index_select(0, gslots).view(g, p, hd)
        eye = torch.eye(h, dtype=q.dtype, device=q.device).view(1, h, h, 1)
        qb = (q.unsqueeze(1) * eye).reshape(g, h, hd)  # qb[g, i, j*Dh + d] = q[g, j, d] [i == j]
        scores = torch.bmm(qb, keys.transpose(1, 2)) * self.scale  # [G, H, P]
        kpos = torch.arange(p, device=q.device)
        dist = (qpos.view(g, 1) - kpos.view(1, p)).clamp(min=0).to(scores.dtype)  # [G, P]
        scores = scores - self.slopes.view(1, -1, 1) * dist.unsqueeze(1)
        masked = kpos.view(1, p) > qpos.view(g, 1)  # [G, P]
        scores = scores.masked_fill(masked.unsqueeze(1), float("-inf"))
        att = torch.softmax(scores, dim=-1)  # [G, H, P]
        out = torch.bmm(att, vals).view(g, h, h, self.head_dim)  # [G, H, H, Dh]: keep i == j
        return torch.diagonal(out, 0, 1, 2).transpose(1, 2)  # [G, H, Dh]

    def step(self, x: Tensor, slots: Tensor, positions: Tensor, kc: Tensor, vc: Tensor, p: int,
             single_idx: Tensor, single_pos: Tensor, single_slots: Tensor,
             multi_seq_slots: Tensor, multi_idx: Tensor, multi_row: Tensor, multi_col: Tensor,
             multi_t: int) -> Tensor:
        """Packed ragged step over x: [N, D]; writes k, v into kc/vc [S, C, H, Dh] in place."""
        n = x.size(0)
        qkv = self.qkv(self.ln1(x)).view(n, 3, self.n_heads, self.head_dim)
        q = qkv[:, 0]
        k = qkv[:, 1]
        v = qkv[:, 2]
        kc.index_put_((slots, positions), k)
        vc.index_put_((slots, positions), v)
        if multi_idx.numel() == 0:
            # decode only: every token is its own sequence, in order
            y = self.attend_decode(q, positions, slots, kc, vc, p)
            x = x + self.proj(y.reshape(n, self.n_heads * self.head_dim))
            return x + self.mlp(x)
        y = torch.empty_like(q)
        if single_idx.numel() > 0:
            # tokens that are alone in their sequence this step (decode): one row each
            out = self.attend_decode(q.index_select(0, single_idx), single_pos, single_slots,
                                     kc, vc, p)
            y.index_copy_(0, single_idx, out)
        if multi_idx.numel() > 0:
            # sequences with several tokens (prefill chunks): padded to the longest of them
            g = multi_seq_slots.size(0)
            qp = torch.zeros(g, multi_t, self.n_heads, self.head_dim, dtype=q.dtype,
                             device=q.device)
            qp.index_put_((multi_row, multi_col), q.index_select(0, multi_idx))
            pp = torch.full([g, multi_t], p - 1, dtype=torch.long, device=q.device)
            pp.index_put_((multi_row, multi_col), positions.index_select(0, multi_idx))
            out = self.attend_cached(qp, pp, multi_seq_slots, kc, vc, p)
            y.index_copy_(0, multi_idx, out[multi_row, multi_col])
        x = x + self.proj(y.reshape(n, self.n_heads * self.head_dim))
        return x + self.mlp(x)


class ByteLM(nn.Module):
    def __init__(self, d_model: int, layers: int, head_dim: int, context: int):
        super().__init__()
        assert d_model % head_dim == 0
        self.vocab_size = VOCAB
        self.context_length = context
        self.n_layers = layers
        self.n_heads = d_model // head_dim
        self.head_dim = head_dim
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList([Block(d_model, self.n_heads, head_dim) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)
        self.apply(self._init)
        for blk in self.blocks:  # GPT-2 style scaled init of residual projections
            nn.init.normal_(blk.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(blk.fc2.weight, std=0.02 / math.sqrt(2 * layers))
        # The position embeddings are learned, but start from sinusoids (std 0.02 like the token
        # embeddings): their dot products then already depend on relative offsets, so heads that
        # look at the previous few bytes are found in the first hundreds of steps instead of
        # thousands, which matters for a model trained for minutes on two cores.
        with torch.no_grad():
            pos = torch.arange(context, dtype=torch.float32).unsqueeze(1)
            freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                             * (-math.log(10000.0) / d_model))
            table = torch.zeros(context, d_model)
            table[:, 0::2] = torch.sin(pos * freq)
            table[:, 1::2] = torch.cos(pos * freq)
            self.pos.weight.copy_(table * (0.02 / table.std()))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: [B, T] int64 -> logits [B, T, V] float32; full causal recomputation."""
        return self.forward_at(tokens, 0)

    @torch.jit.export
    def forward_at(self, tokens: Tensor, offset: int) -> Tensor:
        """Like forward, with positions offset..offset+T-1 (training uses it to cover every
        learned position embedding with short windows)."""
        t = tokens.size(1)
        pos = torch.arange(offset, offset + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos).unsqueeze(0)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))

    @torch.jit.export
    def step(self, tokens: Tensor, slots: Tensor, positions: Tensor, last_index: Tensor,
             k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Packed ragged step; see model-store/README.md.

        tokens, slots, positions: [N] int64; last_index: [B] int64 (strictly increasing, last
        is N-1: sequence b owns tokens (last_index[b-1], last_index[b]]); k_cache, v_cache:
        [L, S, C, H, Dh] float32, written in place at [l, slot, position]. Returns [B, V]
        float32: logits of each sequence's last token.
        """
        n = tokens.size(0)
        b = last_index.size(0)
        dev = tokens.device
        p = int(positions.max().item()) + 1
        if n == b:
            # decode only (every sequence has one token): no structure to work out
            none = torch.zeros(0, dtype=torch.long, device=dev)
            single_idx = torch.arange(n, device=dev)
            single_pos = positions
            single_slots = slots
            multi_idx = none
            multi_row = none
            multi_col = none
            multi_seq_slots = none
            multi_t = 0
        else:
            # sequence structure: seq b owns tokens [starts[b], ends[b])
            ends = last_index + 1
            starts = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), ends[:-1]])
            lens = ends - starts
            seq_of = torch.repeat_interleave(torch.arange(b, device=dev), lens)  # [N]
            col = torch.arange(n, device=dev) - starts.index_select(0, seq_of)  # offset in seq
            token_len = lens.index_select(0, seq_of)
            single_idx = torch.nonzero(token_len == 1).view(-1)
            single_pos = positions.index_select(0, single_idx)
            single_slots = slots.index_select(0, single_idx)
            multi_idx = torch.nonzero(token_len > 1).view(-1)
            multi_seq = torch.nonzero(lens > 1).view(-1)
            multi_rank = torch.cumsum((lens > 1).to(torch.long), 0) - 1  # per seq
            multi_row = multi_rank.index_select(0, seq_of.index_select(0, multi_idx))
            multi_col = col.index_select(0, multi_idx)
            multi_seq_slots = slots.index_select(0, last_index.index_select(0, multi_seq))
            multi_t = int(lens.index_select(0, multi_seq).max().item())

        x = self.tok(tokens) + self.pos(positions)  # [N, D]
        layer = 0
        for blk in self.blocks:
            x = blk.step(x, slots, positions, k_cache[layer], v_cache[layer], p, single_idx,
                         single_pos, single_slots, multi_seq_slots, multi_idx, multi_row,
                         multi_col, multi_t)
            layer += 1
        x = x.index_select(0, last_index)
        return self.head(self.ln_f(x))


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def new_cache(m, slots: int):
    shape = [m.n_layers, slots, m.context_length, m.n_heads, m.head_dim]
    return torch.zeros(shape), torch.zeros(shape)


def greedy_forward(m, prompt: List[int], n: int) -> List[int]:
    ids = list(prompt)
    out = []
    for _ in range(n):
        logits = m.forward(torch.tensor([ids], dtype=torch.long))[0, -1]
        nxt = int(torch.argmax(logits).item())
        out.append(nxt)
        ids.append(nxt)
    return out


def greedy_step(m, prompt: List[int], n: int, slot: int = 1, slots: int = 3) -> List[int]:
    kc, vc = new_cache(m, slots)
    kc.normal_()  # stale garbage from a previous sequence must not matter
    vc.normal_()
    t = len(prompt)
    logits = m.step(torch.tensor(prompt), torch.full([t], slot, dtype=torch.long),
                    torch.arange(t), torch.tensor([t - 1]), kc, vc)
    out = []
    pos = t
    for _ in range(n):
        nxt = int(torch.argmax(logits[0]).item())
        out.append(nxt)
        logits = m.step(torch.tensor([nxt]), torch.tensor([slot]), torch.tensor([pos]),
                        torch.tensor([0]), kc, vc)
        pos += 1
    return out


def check_contract(m, corpus_sample: bytes):
    """Raises AssertionError when step() and forward() disagree."""
    with torch.no_grad():
        prompt = list(corpus_sample[:60])
        a = greedy_forward(m, prompt, 40)
        b = greedy_step(m, prompt, 40)
        assert a == b, "greedy step() %r != forward() %r" % (b, a)
        # packed: seq A prefill 7 tokens in slot 0, seq B decode 1 token in slot 2 (after a
        # 5-token prefill), seq C prefill 3 tokens in slot 1; compare with each alone.
        ta = list(corpus_sample[100:107])
        tb = list(corpus_sample[200:206])
        tc = list(corpus_sample[300:303])
        kc, vc = new_cache(m, 3)
        m.step(torch.tensor(tb[:5]), torch.full([5], 2, dtype=torch.long), torch.arange(5),
               torch.tensor([4]), kc, vc)
        toks = torch.tensor(ta + tb[5:] + tc)
        slots = torch.tensor([0] * 7 + [2] + [1] * 3)
        pos = torch.tensor(list(range(7)) + [5] + list(range(3)))
        packed = m.step(toks, slots, pos, torch.tensor([6, 7, 10]), kc, vc)
        ref = [m.forward(torch.tensor([s]))[0, -1] for s in (ta, tb, tc)]
        for i in range(3):
            diff = (packed[i] - ref[i]).abs().max().item()
            assert diff < 1e-4, "packed step row %d differs by %g" % (i, diff)
        # then all three decode one token together (slots in another order than the rows)
        nxt = [int(torch.argmax(packed[i]).item()) for i in range(3)]
        decoded = m.step(torch.tensor([nxt[2], nxt[0], nxt[1]]), torch.tensor([1, 0, 2]),
                         torch.tensor([3, 7, 6]), torch.tensor([0, 1, 2]), kc, vc)
        for row, (seq, i) in enumerate(((tc, 2), (ta, 0), (tb, 1))):
            ref_i = m.forward(torch.tensor([seq + [nxt[i]]]))[0, -1]
            diff = (decoded[row] - ref_i).abs().max().item()
            assert diff < 1e-4, "decode step row %d differs by %g" % (row, diff)
    return a


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def sample_text(m, prompt: str, n: int, temperature: float, gen: torch.Generator) -> str:
    ids = list(prompt.encode("utf-8"))
    with torch.no_grad():
        kc, vc = new_cache(m, 1)
        t = len(ids)
        logits = m.step(torch.tensor(ids), torch.zeros(t, dtype=torch.long), torch.arange(t),
                        torch.tensor([t - 1]), kc, vc)
        out = []
        for i in range(n):
            if temperature <= 0:
                nxt = int(torch.argmax(logits[0]).item())
            else:
                probs = torch.softmax(logits[0] / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen).item())
            if nxt == EOS or t + i + 1 >= m.context_length:
                break
            out.append(nxt)
            logits = m.step(torch.tensor([nxt]), torch.tensor([0]), torch.tensor([t + i]),
                            torch.tensor([0]), kc, vc)
    return bytes(out).decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS,
                    help="folder of reST/text files (default: %(default)s, Debian package "
                         "python3.11-doc, PSF License)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--tokens-per-step", type=int, default=1024,
                    help="bytes per optimizer step (windows x window length)")
    ap.add_argument("--windows", default="0:128,0.55:256,0.8:512,0.95:1024",
                    help="curriculum of training window lengths, as progress:length pairs; "
                         "short windows first (cheap steps learn local structure), then longer "
                         "ones so that attention over the whole context is trained")
    ap.add_argument("--steps", type=int, default=4000, help="training steps at most")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="training wall time at most; the learning-rate and window schedules "
                         "follow whichever of steps and minutes runs out first")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--offset-every", type=int, default=2,
                    help="every Nth short window gets a random position offset (0: never)")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads to use (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dump-corpus", help="write the stripped corpus to this file and exit")
    ap.add_argument("--from-model", metavar="MODEL_PT",
                    help="skip training: take the weights of an earlier model.pt (same sizes) "
                         "and export them with this script's model code")
    args = ap.parse_args()

    if _OPENBLAS in os.environ.get("LD_LIBRARY_PATH", ""):
        # OpenBLAS runs the matrix products on its own --threads threads; a second pool of
        # OpenMP threads for torch's element-wise ops would compete with it for the same cores
        # (measured here: 0.45 s per step with 2 + 2 threads, 0.165 s with 1 + 2)
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t0 = time.time()
    docs = load_corpus(args.corpus)
    if args.dump_corpus:
        with open(args.dump_corpus, "wb") as fh:
            fh.write(b"\n\n=====\n\n".join(docs))
        print("wrote %d documents to %s" % (len(docs), args.dump_corpus))
        return
    rng = random.Random(args.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_val = max(1, len(docs) // 20)
    val_docs = [docs[i] for i in order[:n_val]]
    train_docs = [docs[i] for i in order[n_val:]]

    def stream(ds):
        ids = []
        for d in ds:
            ids.extend(d)
            ids.append(EOS)
        return torch.tensor(ids, dtype=torch.long)

    train = stream(train_docs)
    val = stream(val_docs)
    print("corpus: %d documents (%d train / %d val), %d train bytes, %d val bytes, %.1fs" % (
        len(docs), len(train_docs), len(val_docs), train.numel(), val.numel(), time.time() - t0),
        flush=True)

    model = ByteLM(args.d_model, args.layers, args.head_dim, args.context)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: d_model=%d layers=%d heads=%d head_dim=%d context=%d params=%d" % (
        args.d_model, args.layers, model.n_heads, args.head_dim, args.context, n_params),
        flush=True)
    # script now: TorchScript compiles from this file's source, so a scripting error shows before
    # minutes of training, and an edit of the file during training cannot break the save
    scripted = torch.jit.script(model)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 30)
    budget_s = args.max_minutes * 60

    def lr_at(step, progress):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    schedule = sorted((float(a), int(b)) for a, b in
                      (pair.split(":") for pair in args.windows.split(",")))
    assert all(0 < w <= args.context for _, w in schedule), "window lengths must fit the context"

    def window_at(progress):
        w = schedule[0][1]
        for start, length in schedule:
            if progress >= start:
                w = length
        return w

    def batch(data, block, bsz):
        starts = torch.randint(0, data.numel() - block - 1, (bsz,), generator=gen)
        x = torch.stack([data[s:s + block] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + block + 1] for s in starts.tolist()])
        return x, y

    def evaluate(block, n_batches=8):
        model.eval()
        g = torch.Generator().manual_seed(99)
        losses = []
        with torch.no_grad():
            for _ in range(n_batches):
                starts = torch.randint(0, val.numel() - block - 1, (8,), generator=g)
                x = torch.stack([val[s:s + block] for s in starts.tolist()])
                y = torch.stack([val[s + 1:s + block + 1] for s in starts.tolist()])
                logits = model(x)
                losses.append(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).item())
        model.train()
        return sum(losses) / len(losses)

    t_train = time.time()
    model.train()
    loss_ema = float("nan")
    step = 0
    if args.from_model:
        # re-export the weights of an earlier build with this file's code (no training)
        model.load_state_dict(torch.jit.load(args.from_model).state_dict())
        print("weights from %s; not training" % args.from_model, flush=True)
    while not args.from_model:
        progress = max(step / args.steps, (time.time() - t_train) / budget_s)
        if progress >= 1.0:
            break
        lr = lr_at(step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        window = window_at(progress)
        x, y = batch(train, window, max(1, args.tokens_per_step // window))
        # every other step, place a window shorter than the context at a random position
        # offset, so that every learned position embedding gets trained
        offset = 0
        if (window < args.context and args.offset_every > 0
                and step % args.offset_every == args.offset_every - 1):
            offset = int(torch.randint(0, args.context - window + 1, (1,), generator=gen).item())
        logits = model.forward_at(x, offset)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if step == 0 else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 50 == 0:
            print("step %4d  progress %.2f  lr %.2e  window %4d  loss %.4f  (ema %.4f)  %.0fs" % (
                step, progress, lr, x.size(1), loss.item(), loss_ema, time.time() - t_train),
                flush=True)
        step += 1
    train_seconds = time.time() - t_train
    steps_done = step
    short = schedule[0][1]
    val_loss = evaluate(short)
    val_loss_long = evaluate(args.context, n_batches=2)
    print("final: train loss (ema) %.4f  val loss %.4f nats/byte (%.3f bits/byte) on %d-byte "
          "windows, %.4f on %d-byte windows; %d steps in %.0fs" % (
              loss_ema, val_loss, val_loss / math.log(2), short, val_loss_long, args.context,
              steps_done, train_seconds), flush=True)

    # ---- script, check, save ----
    model.eval()
    scripted.eval()
    scripted.load_state_dict(model.state_dict())  # (shares the tensors already; made explicit)
    for p in list(model.parameters()) + list(scripted.parameters()):
        p.requires_grad_(False)
    sample_doc = val_docs[0]
    check_contract(scripted, sample_doc)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.pt")
    scripted.save(path)
    loaded = torch.jit.load(path)
    greedy_ids = check_contract(loaded, sample_doc)
    size = os.path.getsize(path)
    assert size < 16 * 1024 * 1024, "model file too large: %d bytes" % size
    print("saved %s (%d bytes); step()/forward() greedy equality and packed-step checks passed"
          % (path, size), flush=True)

    prompt = "The Python interpreter"
    greedy = sample_text(loaded, prompt, 200, 0.0, gen)
    warm = sample_text(loaded, prompt, 300, 0.8, torch.Generator().manual_seed(7))
    print("greedy:      %r" % (prompt + greedy))
    print("temperature: %r" % (prompt + warm))

    config = {
        "name": "demo-byte-lm",
        "file": "model.pt",
        "tokenizer": "byte",
        "vocabSize": VOCAB,
        "contextLength": args.context,
        "eosId": EOS,
        "dtype": "float32",
        "layers": args.layers,
        "kvHeads": model.n_heads,
        "headDim": args.head_dim,
    }
    with open(os.path.join(args.out, "model.json"), "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    print("summary: params=%d steps=%d train_seconds=%.0f train_loss_ema=%.4f val_loss=%.4f "
          "val_loss_full_context=%.4f bytes=%d train_bytes=%d documents=%d torch=%s" % (
              n_params, steps_done, train_seconds, loss_ema, val_loss, val_loss_long, size,
              train.numel(), len(docs), torch.__version__))
    print("greedy check prompt %r -> ids %s" % (
        bytes(list(sample_doc[:60])).decode("utf-8", "replace"), greedy_ids))
    print("wrote %s/model.json" % args.out)

if __name__ == "__main__":
    main()
