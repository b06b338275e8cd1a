"""attention_variants: every formulation of one layer's decode attention gives the committed one's
result over a strided cache slot (the figures in RESULTS.md compare equal work), and --sdpa
rewrites exactly the placeholder's body in the archive's code."""

import os
import tempfile
import unittest
import zipfile

import torch

from hf_export import attention_variants


class AttentionVariantsTest(unittest.TestCase):
    def setUp(self):
        self.m = torch.jit.script(attention_variants.Variants())

    def test_variants_agree_with_the_committed_products(self):
        gen = torch.Generator().manual_seed(3)
        for h, r in [(4, 2), (3, 1)]:
            q = torch.randn(h, r, 16, generator=gen)
            k = torch.randn(3, 300, h, 16, generator=gen)
            v = torch.randn(3, 300, h, 16, generator=gen)
            for p in [1, 37, 300]:
                for iters in [1, 2]:  # iteration i reads slot i % 3
                    ref = self.m.run("committed", q, k, v, p, iters)
                    slot = (iters - 1) % 3
                    keys, vals = k[slot, :p], v[slot, :p]
                    att = torch.softmax(torch.einsum("hrd,phd->hrp", q, keys) / 4.0, dim=-1)
                    eager = torch.einsum("hrp,phd->hrd", att, vals)
                    self.assertLess((ref - eager).abs().max().item(), 1e-5)
                    # sdpa: its placeholder, scaled_dot_product_attention's semantics written out
                    for name in ["qk_blockdiag", "av_bag", "hybrid", "sdpa"]:
                        got = self.m.run(name, q, k, v, p, iters)
                        self.assertLess((got - ref).abs().max().item(), 1e-5, (name, h, r, p))

    def test_sdpa_rewrites_only_the_placeholder(self):
        with tempfile.TemporaryDirectory() as out:
            attention_variants.main([out, "--sdpa"])
            with zipfile.ZipFile(os.path.join(out, "variants.pt")) as z:
                code = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".py"))
                self.assertFalse(any(n.endswith(".debug_pkl") for n in z.namelist()))
            self.assertEqual(code.count("scaled_dot_product_attention"), 1)
            self.assertIn("enable_gqa=True", code)


if __name__ == "__main__":
    unittest.main()
