"""Formulations of one decode step's attention (one query token, grouped heads, one layer), each a
method of one TorchScript module, for ``AttentionVariants`` (benchmarks) to time through DJL: the
libtorch 2.7.1 and MKL that the server runs, which the exporter's torch 1.13 cannot stand for.

Every method takes q [Hkv, R, Dh] and key/value caches k, v [S, C, Hkv, Dh] (the model contract's
layout of one layer, S slots), attends over positions [0, p) of slot i % S for i < iters and
returns the last result. With S slots of 2 * C * Hkv * Dh floats each well beyond the last-level
cache, every iteration reads its keys and values from memory, as a decode step does (between two
uses of a layer's cache, the step reads the other layers' caches and all the weights).

    committed   q.K^T and att.V as Hkv batched products of R rows (matmul -> aten::bmm), as
                hf_export/model.py's attend_slot does for a decode step
    qk_blockdiag  q.K^T as one 2-D product over the contiguous [P, Hkv*Dh] prefix, q spread
                block-diagonally to [Hkv*R, Hkv*Dh] (Hkv times the multiply-adds, one MKL sgemm);
                att.V as committed
    av_bag      q.K^T as committed; att.V as embedding_bag(mode=sum, per_sample_weights=att) over
                the slot viewed as a table of [C*Hkv, Dh] rows (FBGEMM's kernel, not MKL)
    hybrid      qk_blockdiag's q.K^T and av_bag's att.V
    read_floor  no attention: the sum of the keys and the sum of the values, a streaming read of
                the same bytes (what memory bandwidth allows)
    sdpa        torch.scaled_dot_product_attention (libtorch >= 2.5, enable_gqa): torch 1.13
                cannot script it, so --sdpa writes the module with this method's body replaced
                in the archive's code (the file then loads in libtorch 2.x only)

    /usr/bin/python3 -m hf_export.attention_variants OUT_DIR [--sdpa]   (from tools/)

writes OUT_DIR/variants.pt after checking that every variant but read_floor (sdpa: its placeholder,
the same attention written out) agrees with committed within 1e-5 at p = 700.
"""

import argparse
import os
import shutil
import tempfile
import zipfile

import torch
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ["committed", "qk_blockdiag", "av_bag", "hybrid", "read_floor", "sdpa"]


class Variants(torch.nn.Module):
    def qk_bmm(self, q: Tensor, keys: Tensor) -> Tensor:
        return torch.matmul(q, keys.permute(1, 2, 0))  # [Hkv, R, P]

    def qk_blockdiag_(self, q: Tensor, keys: Tensor) -> Tensor:
        h, r, d, p = q.size(0), q.size(1), q.size(2), keys.size(0)
        eye = torch.eye(h, dtype=q.dtype).view(h, 1, h, 1)
        qbd = (q.view(h, r, 1, d) * eye).view(h * r, h * d)
        return torch.mm(qbd, keys.reshape(p, h * d).t()).view(h, r, p)

    def av_bmm(self, att: Tensor, vals: Tensor) -> Tensor:
        return torch.matmul(att, vals.transpose(0, 1))  # [Hkv, R, Dh]

    def av_bag_(self, att: Tensor, slot: Tensor, p: int) -> Tensor:
        h, r, c, d = att.size(0), att.size(1), slot.size(0), slot.size(2)
        rows = torch.arange(p).view(1, 1, p) * h + torch.arange(h).view(h, 1, 1)
        idx = rows.expand(h, r, p).reshape(-1)  # bag (head, r): rows p*Hkv + head
        offsets = torch.arange(h * r) * p
        return F.embedding_bag(idx, slot.view(c * h, d), offsets, mode="sum",
                               per_sample_weights=att.reshape(-1)).view(h, r, d)

    def sdpa_(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """What torch.scaled_dot_product_attention(q, k, v, enable_gqa=True) computes (query head
        i reads key/value head i // R, scale 1/sqrt(Dh)); --sdpa replaces this body by the call."""
        r = q.size(1) // k.size(1)
        k = k.repeat_interleave(r, dim=1)
        v = v.repeat_interleave(r, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / float(q.size(-1)) ** 0.5)
        return torch.matmul(torch.softmax(scores, -1), v)

    @torch.jit.export
    def run(self, variant: str, q: Tensor, k: Tensor, v: Tensor, p: int, iters: int) -> Tensor:
        s = k.size(0)
        scale = 1.0 / float(q.size(2)) ** 0.5
        y = q
        for i in range(iters):
            slot_k = k[i % s]
            slot_v = v[i % s]
            keys = slot_k.narrow(0, 0, p)  # [P, Hkv, Dh], a view
            vals = slot_v.narrow(0, 0, p)
            if variant == "read_floor":
                y = keys.sum() + vals.sum()
            elif variant == "sdpa":
                h, r, d = q.size(0), q.size(1), q.size(2)
                y = self.sdpa_(q.reshape(1, h * r, 1, d), keys.transpose(0, 1).unsqueeze(0),
                               vals.transpose(0, 1).unsqueeze(0)).view(h, r, d)
            else:
                if variant == "qk_blockdiag" or variant == "hybrid":
                    scores = self.qk_blockdiag_(q, keys)
                else:
                    scores = self.qk_bmm(q, keys)
                att = torch.softmax(scores * scale, dim=-1)
                if variant == "av_bag" or variant == "hybrid":
                    y = self.av_bag_(att, slot_v, p)
                else:
                    y = self.av_bmm(att, vals)
        return y


def check(m) -> None:
    c, h, r, d = 1024, 4, 2, 32
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(h, r, d, generator=gen)
    k = torch.randn(2, c, h, d, generator=gen)
    v = torch.randn(2, c, h, d, generator=gen)
    ref = m.run("committed", q, k, v, 700, 1)
    for name in VARIANTS:
        if name == "read_floor":
            continue
        err = (m.run(name, q, k, v, 700, 1) - ref).abs().max().item()
        if err > 1e-5:
            raise SystemExit(f"{name} differs from committed by {err}")


def with_sdpa(path: str) -> None:
    """Rewrites the archive at path with sdpa_'s body calling torch.scaled_dot_product_attention
    (the code is compiled again when libtorch loads the file)."""
    tmp = path + ".tmp"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        done = False
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith(".debug_pkl"):
                continue  # source ranges of the original code; optional, and now wrong
            if item.filename.endswith("code/__torch__.py") or "code/__torch__/" in item.filename:
                text = data.decode()
                start = text.find("  def sdpa_(")
                if start >= 0:
                    body = text.index("-> Tensor:\n", start) + len("-> Tensor:\n")
                    end = text.index("    return ", body)
                    end = text.index("\n", end) + 1
                    text = (text[:body] + "    return torch.scaled_dot_product_attention(q, k, v,"
                            " None, 0., False, scale=None, enable_gqa=True)\n" + text[end:])
                    done = True
                data = text.encode()
            dst.writestr(item, data)
    if not done:
        os.remove(tmp)
        raise SystemExit("sdpa_ not found in the archive's code")
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--sdpa", action="store_true")
    args = ap.parse_args(argv)
    m = torch.jit.script(Variants())
    check(m)
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "variants.pt")
    with tempfile.TemporaryDirectory() as tmp:
        m.save(os.path.join(tmp, "variants.pt"))
        if args.sdpa:
            with_sdpa(os.path.join(tmp, "variants.pt"))
        shutil.copyfile(os.path.join(tmp, "variants.pt"), path)
    print(f"{path}: {', '.join(VARIANTS)}{' (sdpa: libtorch >= 2.5 only)' if args.sdpa else ''}")


if __name__ == "__main__":
    main()
