#!/usr/bin/python3
"""Exports a Hugging Face checkpoint directory (Llama, Mistral, Qwen2, GPT-2) to a gpumeter
model directory (model-store/README.md, "The model contract"). See tools/README.md.

    /usr/bin/python3 tools/export_hf.py CHECKPOINT_DIR OUT_DIR --name NAME
        [--dtype float32|float16|bfloat16] [--context-length N] [--tokenizer hf|byte]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hf_export.convert import ExportError, export  # noqa: E402
from hf_export.safetensors import SafetensorsError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="Hugging Face checkpoint directory")
    ap.add_argument("out", help="model directory to write")
    ap.add_argument("--name", required=True, help="served model name (model.json 'name')")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="parameter, KV cache and activation dtype (float16/bfloat16: CUDA)")
    ap.add_argument("--context-length", type=int, default=None,
                    help="positions per sequence (default: the model's, at most 4096)")
    ap.add_argument("--tokenizer", default="hf", choices=["hf", "byte"],
                    help="model.json tokenizer kind (byte: ids 0..255 are bytes)")
    args = ap.parse_args(argv)
    try:
        info = export(args.checkpoint, args.out, args.name, args.dtype, args.context_length,
                      args.tokenizer)
    except (ExportError, SafetensorsError, OSError, KeyError) as e:
        print(f"export_hf: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
