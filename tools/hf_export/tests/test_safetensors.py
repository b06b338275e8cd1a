"""The safetensors reader against hand-built files whose bytes are known."""

import json
import os
import struct
import tempfile
import unittest

import torch

from hf_export import safetensors
from hf_export.safetensors import SafetensorsError


def build(header: dict, data: bytes, pad: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + data


class SafetensorsReaderTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def write(self, content: bytes) -> str:
        path = os.path.join(self.dir.name, "t.safetensors")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_known_values_of_each_dtype_at_their_offsets(self):
        # F32 1.5, -2.0 | F16 1.0, -0.5, 65504 | BF16 1.0, 3.0 (2x1) | I64 -3
        f32 = struct.pack("<2f", 1.5, -2.0)
        f16 = bytes.fromhex("003c" "00b8" "ff7b")      # little-endian halfs
        bf16 = bytes.fromhex("803f" "4040")            # 0x3f80 = 1.0, 0x4040 = 3.0
        i64 = struct.pack("<q", -3)
        data = f32 + f16 + bf16 + i64
        o1, o2, o3 = len(f32), len(f32) + len(f16), len(f32) + len(f16) + len(bf16)
        header = {"__metadata__": {"format": "pt"},
                  "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, o1]},
                  "h": {"dtype": "F16", "shape": [3], "data_offsets": [o1, o2]},
                  "b": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [o2, o3]},
                  "i": {"dtype": "I64", "shape": [], "data_offsets": [o3, len(data)]}}
        t = safetensors.load(self.write(build(header, data, pad=5)))
        self.assertEqual(sorted(t), ["a", "b", "h", "i"])
        self.assertEqual(t["a"].dtype, torch.float32)
        self.assertEqual(t["a"].tolist(), [1.5, -2.0])
        self.assertEqual(t["h"].dtype, torch.float16)
        self.assertEqual(t["h"].tolist(), [1.0, -0.5, 65504.0])
        self.assertEqual(t["b"].dtype, torch.bfloat16)
        self.assertEqual(t["b"].shape, (2, 1))
        self.assertEqual(t["b"].float().view(-1).tolist(), [1.0, 3.0])
        self.assertEqual(t["i"].shape, ())
        self.assertEqual(t["i"].item(), -3)

    def test_tensors_out_of_file_order(self):
        data = struct.pack("<3f", 1.0, 2.0, 3.0)
        header = {"late": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
                  "early": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
        t = safetensors.load(self.write(build(header, data)))
        self.assertEqual(t["early"].tolist(), [1.0, 2.0])
        self.assertEqual(t["late"].tolist(), [3.0])

    def test_writer_round_trip(self):
        g = torch.Generator().manual_seed(0)
        src = {"x": torch.randn(3, 5, generator=g), "y": torch.randn(4, generator=g).half(),
               "z": torch.randn(2, 2, generator=g).bfloat16()}
        path = os.path.join(self.dir.name, "w.safetensors")
        safetensors.save(path, src)
        back = safetensors.load(path)
        for k, v in src.items():
            self.assertEqual(back[k].dtype, v.dtype)
            self.assertTrue(torch.equal(back[k], v), k)

    def assert_rejected(self, content: bytes, message: str):
        with self.assertRaises(SafetensorsError) as e:
            safetensors.load(self.write(content))
        self.assertIn(message, str(e.exception))

    def test_bad_headers_are_rejected_with_a_reason(self):
        ok = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
        data = bytes(8)
        self.assert_rejected(b"\x01\x02", "shorter than the 8-byte header length")
        self.assert_rejected(struct.pack("<Q", 10 ** 6) + b"{}", "does not fit")
        self.assert_rejected(struct.pack("<Q", 4) + b"{no}", "not valid UTF-8 JSON")
        self.assert_rejected(build([1, 2], b""), "not a JSON object")  # type: ignore[arg-type]
        self.assert_rejected(build({"a": dict(ok, dtype="F8")}, data), "unsupported dtype 'F8'")
        self.assert_rejected(build({"a": dict(ok, data_offsets=[0, 16])}, data),
                             "outside the 8-byte buffer")
        self.assert_rejected(build({"a": dict(ok, shape=[3])}, data), "12 expected")
        self.assert_rejected(build({"a": {"dtype": "F32", "shape": [2]}}, data),
                             "expected dtype, shape, data_offsets")
        self.assert_rejected(build({"a": dict(ok, shape=[1], data_offsets=[0, 4]),
                                    "b": dict(ok, shape=[1], data_offsets=[2, 6])}, data),
                             "overlap")


if __name__ == "__main__":
    unittest.main()
