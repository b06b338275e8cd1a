"""The CPU side of gpu-check's check 8 (tools/gpu-check/llama_shape.py) and of random_model: a
tiny Llama shape exported in bf16 with random weights, its decode timed through the TorchScript
file and eagerly, and table.py's rows for it. The 1B shape and CUDA run only on the GPU machine."""

import os
import subprocess
import sys
import tempfile
import unittest

import torch

from hf_export import random_model
from hf_export.tests import scenario

TOOLS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LlamaShapeTest(unittest.TestCase):
    def test_check_8_runs_on_the_cpu_with_a_tiny_shape(self):
        with tempfile.TemporaryDirectory() as out:
            r = subprocess.run(
                [sys.executable, os.path.join(TOOLS, "gpu-check", "llama_shape.py"), "--out", out,
                 "--preset", "llama-tiny", "--dtype", "bfloat16", "--device", "cpu",
                 "--batches", "1,3", "--steps", "4", "--prompt", "5"],
                capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            kv = [dict(p.split("=", 1) for p in ln.split()[1:]) for ln in lines]
            self.assertEqual([d["check"] for d in kv],
                             ["llama-export", "llama-decode", "llama-decode"])
            # embed 300x64 (tied) + 2 layers of 4 attention and 3 MLP matrices, norms
            self.assertEqual(kv[0]["params"], str(300 * 64 + 2 * (64 * 64 * 2 + 32 * 64 * 2
                                                                  + 3 * 96 * 64 + 2 * 64) + 64))
            self.assertEqual(kv[0]["dtype"], "bfloat16")
            for d, b in ((kv[1], "1"), (kv[2], "3")):
                self.assertEqual(d["batch"], b)
                self.assertGreater(float(d["torchscript_tok_s"]), 0)
                self.assertGreater(float(d["eager_tok_s"]), 0)
            self.assertEqual(os.listdir(out), [], "the exported model is removed")
            # table.py turns the lines into check 8's rows
            # run.sh's next check, ModelDecode through DJL, prints lines of this form
            djl = (f"RESULT check=llama-djl status=OK model=llama-tiny dtype=bfloat16 device=cpu"
                   f" batch=1 djl_tok_s={kv[1]['eager_tok_s']} tokens=8")
            results = os.path.join(out, "results.txt")
            with open(results, "w") as f:
                f.write("\n".join(lines + [djl]) + "\n")
            table = subprocess.run([sys.executable, os.path.join(TOOLS, "gpu-check", "table.py"),
                                    results], capture_output=True, text=True, timeout=60)
            self.assertEqual(table.returncode, 0, table.stderr)
            self.assertIn("8 llama export", table.stdout)
            self.assertIn("80960 parameters", table.stdout)
            self.assertIn("8 llama batch 1", table.stdout)
            self.assertRegex(table.stdout, r"8 llama djl batch 1 +INFO +DJL bfloat16 on cpu")
            self.assertIn("ratio 1.000", table.stdout)

    def test_random_model_exports_a_shape_whose_step_matches_its_forward(self):
        with tempfile.TemporaryDirectory() as out:
            info = random_model.main(["llama-tiny", out, "--name", "t", "--layers", "1"])
            # embed 300x64 (tied) + 1 layer: q 64x64, k, v 32x64, o 64x64, 3 MLP 96x64, 2 norms
            # + final norm
            self.assertEqual(info["parameters"],
                             300 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 96 * 64 + 2 * 64 + 64)
            self.assertEqual(info["layers"], 1)
            self.assertEqual(sorted(os.listdir(out)),
                             ["export.json", "generation_config.json", "model.json", "model.pt"])
            m = torch.jit.load(os.path.join(out, "model.pt"))
            steps = scenario.plan(info["vocabSize"], seed=3)
            seqs, records = scenario.run(m, steps, info["contextLength"], info["layers"],
                                         info["kvHeads"], info["headDim"])
            with torch.no_grad():
                full = {s: m.forward(torch.tensor([t]))[0] for s, t in seqs.items()}
            worst = max((logits - full[s][pos]).abs().max().item() for s, pos, logits in records)
            self.assertLess(worst, 1e-4)


if __name__ == "__main__":
    unittest.main()
