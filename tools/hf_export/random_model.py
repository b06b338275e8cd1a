"""Exports a random-weight model of a named shape (GPT-2 small, a 1B Llama, ...) through the same
path as a real checkpoint: writes a Hugging Face checkpoint (config.json, model.safetensors,
generation_config.json) to a temporary folder, runs export_hf's ``export`` on it with the byte
tokenizer (ids 0..255 are bytes, eos 256), and removes the checkpoint. For figures at realistic
sizes, not for text: the weights are N(0, 0.02) (norm weights 1), so the model's output is noise.

    /usr/bin/python3 -m hf_export.random_model PRESET OUT_DIR [--name NAME] [--dtype D]
        [--context-length N] [--layers N] [--keep-checkpoint DIR] [--seed S]   (from tools/)

Presets (``--layers`` overrides the depth, e.g. for a quick test of a wide shape):
"""

import argparse
import json
import os
import shutil
import tempfile
from typing import Dict

import torch
from torch import Tensor

from . import safetensors
from .convert import export

PRESETS: Dict[str, dict] = {
    # GPT-2 small: 124,439,808 parameters (tied head), context 1024
    "gpt2-small": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
                   "n_positions": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-5,
                   "activation_function": "gelu_new"},
    # Llama 3.2 1B's shape: 1,235,814,400 parameters (tied), GQA 32 on 8, context capped 4096
    "llama-1b": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 8192, "vocab_size": 128256,
                 "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                 "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": True},
    # a small Llama with a 2k context, for decode cost against context length
    "llama-2k": {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4,
                 "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 688,
                 "vocab_size": 2048, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                 "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True},
    # a tiny Llama for tests of this script
    "llama-tiny": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
                   "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
                   "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True},
}
EOS = 256
__doc__ += "".join(f"    {k}\n" for k in PRESETS)


def random_weights(cfg: dict, seed: int) -> Dict[str, Tensor]:
    """Every tensor the architecture reads, by its Hugging Face name, float32."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    w: Dict[str, Tensor] = {}
    if cfg["model_type"] == "gpt2":
        v, d, c = cfg["vocab_size"], cfg["n_embd"], cfg["n_positions"]
        w["wte.weight"], w["wpe.weight"] = r(v, d), r(c, d)
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            w[p + "ln_1.weight"], w[p + "ln_1.bias"] = torch.ones(d), torch.zeros(d)
            w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"] = r(d, 3 * d), r(3 * d)
            w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"] = r(d, d), r(d)
            w[p + "ln_2.weight"], w[p + "ln_2.bias"] = torch.ones(d), torch.zeros(d)
            w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = r(d, 4 * d), r(4 * d)
            w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = r(4 * d, d), r(d)
        w["ln_f.weight"], w["ln_f.bias"] = torch.ones(d), torch.zeros(d)
        return w
    v, d = cfg["vocab_size"], cfg["hidden_size"]
    h, kv, f = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    dh = d // h
    w["model.embed_tokens.weight"] = r(v, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(d)
        w[p + "self_attn.q_proj.weight"] = r(h * dh, d)
        w[p + "self_attn.k_proj.weight"] = r(kv * dh, d)
        w[p + "self_attn.v_proj.weight"] = r(kv * dh, d)
        w[p + "self_attn.o_proj.weight"] = r(d, h * dh)
        w[p + "post_attention_layernorm.weight"] = torch.ones(d)
        w[p + "mlp.gate_proj.weight"] = r(f, d)
        w[p + "mlp.up_proj.weight"] = r(f, d)
        w[p + "mlp.down_proj.weight"] = r(d, f)
    w["model.norm.weight"] = torch.ones(d)
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = r(v, d)
    return w


def write_checkpoint(path: str, cfg: dict, seed: int, dtype: str = "float32") -> None:
    """config.json, generation_config.json and model.safetensors with the weights in dtype (as
    checkpoints of large models are stored: bf16 halves the bytes written for a 1B shape)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(cfg, eos_token_id=EOS), f, indent=1)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": EOS}, f)
    cast = getattr(torch, dtype)
    weights = {k: v.to(cast) for k, v in random_weights(cfg, seed).items()}
    safetensors.save(os.path.join(path, "model.safetensors"), weights)


def config_for(preset: str, layers: int = 0) -> dict:
    if preset not in PRESETS:
        raise SystemExit(f"preset {preset!r}: use one of {sorted(PRESETS)}")
    cfg = dict(PRESETS[preset])
    if layers:
        cfg["n_layer" if cfg["model_type"] == "gpt2" else "num_hidden_layers"] = layers
    return cfg


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("out")
    ap.add_argument("--name", help="served model name (default: the preset)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--context-length", type=int)
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-checkpoint", metavar="DIR",
                    help="write the checkpoint here and keep it (default: a temporary folder)")
    args = ap.parse_args(argv)
    cfg = config_for(args.preset, args.layers)
    src = args.keep_checkpoint or tempfile.mkdtemp(prefix="random-checkpoint-")
    try:
        write_checkpoint(src, cfg, args.seed, args.dtype)
        info = export(src, args.out, args.name or args.preset, dtype=args.dtype,
                      context_length=args.context_length, tokenizer="byte")
    finally:
        if not args.keep_checkpoint:
            shutil.rmtree(src, ignore_errors=True)
    print(f"{args.out}: {args.preset} {info['architecture']}, {info['parameters']:,} parameters, "
          f"{info['dtype']}, context {info['contextLength']}, "
          f"{os.path.getsize(os.path.join(args.out, 'model.pt')):,} bytes")
    return info


if __name__ == "__main__":
    main()
