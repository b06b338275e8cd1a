"""Reads a Hugging Face checkpoint directory and builds the exported model (see model.py)."""

import json
import math
import os
import shutil
from typing import Dict, List, Optional

import torch
from torch import Tensor

from . import safetensors
from .model import DecoderLM

LLAMA_FAMILY = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                "qwen2": "Qwen2ForCausalLM"}
ARCHITECTURES = sorted(list(LLAMA_FAMILY) + ["gpt2"])
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ExportError(ValueError):
    pass


def load_weights(src: str) -> Dict[str, Tensor]:
    """model.safetensors, sharded safetensors with model.safetensors.index.json, or
    pytorch_model.bin (and its sharded index)."""
    index = os.path.join(src, "model.safetensors.index.json")
    single = os.path.join(src, "model.safetensors")
    bin_index = os.path.join(src, "pytorch_model.bin.index.json")
    bin_single = os.path.join(src, "pytorch_model.bin")
    if os.path.exists(index) or os.path.exists(bin_index):
        path = index if os.path.exists(index) else bin_index
        with open(path) as f:
            weight_map = json.load(f)["weight_map"]
        out: Dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(src, shard)
            part = (safetensors.load(shard_path) if shard.endswith(".safetensors")
                    else torch.load(shard_path, map_location="cpu"))
            out.update(part)
        missing = [k for k in weight_map if k not in out]
        if missing:
            raise ExportError(f"{path}: tensors listed but not in their shards: {missing[:5]}")
        return out
    if os.path.exists(single):
        return safetensors.load(single)
    if os.path.exists(bin_single):
        return torch.load(bin_single, map_location="cpu")
    raise ExportError(f"{src}: no model.safetensors, model.safetensors.index.json or "
                      f"pytorch_model.bin")


def rope_inv_freq(cfg: dict, head_dim: int) -> Tensor:
    """Rotary frequencies theta^(-2i/Dh), with rope_scaling types default, linear and llama3."""
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        low_wavelen = old / low
        high_wavelen = old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ExportError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def _get(w: Dict[str, Tensor], name: str, used: set) -> Tensor:
    if name not in w:
        raise ExportError(f"checkpoint has no tensor {name!r}")
    used.add(name)
    return w[name]


def _opt(w: Dict[str, Tensor], name: str, used: set, size: int) -> Tensor:
    if name in w:
        used.add(name)
        return w[name]
    return torch.zeros(size)


def build(src: str, dtype: str = "float32", context_length: Optional[int] = None):
    """Returns (scripted-ready DecoderLM, info dict) for the checkpoint in src."""
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    arch = cfg.get("model_type")
    if arch not in ARCHITECTURES:
        raise ExportError(f"{src}/config.json: model_type {arch!r} not supported "
                          f"({', '.join(ARCHITECTURES)})")
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r}: use one of {sorted(DTYPES)}")
    w = load_weights(src)
    used: set = set()
    layers: List[dict] = []
    if arch == "gpt2":
        pre = "transformer." if "transformer.wte.weight" in w else ""
        d, n_layers, heads = cfg["n_embd"], cfg["n_layer"], cfg["n_head"]
        kv_heads, head_dim = heads, d // heads
        eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        max_pos = cfg["n_positions"]
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ExportError(f"gpt2 activation_function {act!r} not supported (gelu_new)")
        if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
            raise ExportError("gpt2 scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn "
                              "are not supported")
        for i in range(n_layers):
            p = f"{pre}h.{i}."
            g = lambda n: _get(w, p + n, used)  # noqa: E731
            # Conv1D stores [in, out] (y = x W + b): transpose to Linear's [out, in]
            qkv_w = g("attn.c_attn.weight").t()
            qkv_b = g("attn.c_attn.bias")
            layers.append({
                "ln1_w": g("ln_1.weight"), "ln1_b": g("ln_1.bias"),
                "wq": qkv_w[:d], "wk": qkv_w[d:2 * d], "wv": qkv_w[2 * d:],
                "bq": qkv_b[:d], "bk": qkv_b[d:2 * d], "bv": qkv_b[2 * d:],
                "wo": g("attn.c_proj.weight").t(), "bo": g("attn.c_proj.bias"),
                "ln2_w": g("ln_2.weight"), "ln2_b": g("ln_2.bias"),
                "w1": g("mlp.c_fc.weight").t(), "b1": g("mlp.c_fc.bias"),
                "w3": torch.zeros(0), "b3": torch.zeros(0),
                "w2": g("mlp.c_proj.weight").t(), "b2": g("mlp.c_proj.bias"),
            })
        embed = _get(w, pre + "wte.weight", used)
        top = {"embed": embed, "pos_embed": _get(w, pre + "wpe.weight", used),
               "lnf_w": _get(w, pre + "ln_f.weight", used),
               "lnf_b": _get(w, pre + "ln_f.bias", used)}
        top["lm_head"] = _get(w, "lm_head.weight", used) if "lm_head.weight" in w else embed
        tied = "lm_head.weight" not in w or torch.equal(w["lm_head.weight"], embed)
        inv_freq = torch.zeros(0)
        windows: List[int] = []
    else:
        d, n_layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or d // heads
        if heads % kv_heads:
            raise ExportError(f"num_attention_heads {heads} is not a multiple of "
                              f"num_key_value_heads {kv_heads}")
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        max_pos = cfg["max_position_embeddings"]
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ExportError(f"hidden_act {act!r} not supported (silu)")
        for i in range(n_layers):
            p = f"model.layers.{i}."
            g = lambda n: _get(w, p + n, used)  # noqa: E731
            o = lambda n, size: _opt(w, p + n, used, size)  # noqa: E731
            inter = g("mlp.gate_proj.weight").shape[0]
            layers.append({
                "ln1_w": g("input_layernorm.weight"), "ln1_b": torch.zeros(0),
                "wq": g("self_attn.q_proj.weight"), "bq": o("self_attn.q_proj.bias", heads * head_dim),
                "wk": g("self_attn.k_proj.weight"), "bk": o("self_attn.k_proj.bias", kv_heads * head_dim),
                "wv": g("self_attn.v_proj.weight"), "bv": o("self_attn.v_proj.bias", kv_heads * head_dim),
                "wo": g("self_attn.o_proj.weight"), "bo": o("self_attn.o_proj.bias", d),
                "ln2_w": g("post_attention_layernorm.weight"), "ln2_b": torch.zeros(0),
                "w1": g("mlp.gate_proj.weight"), "b1": o("mlp.gate_proj.bias", inter),
                "w3": g("mlp.up_proj.weight"), "b3": o("mlp.up_proj.bias", inter),
                "w2": g("mlp.down_proj.weight"), "b2": o("mlp.down_proj.bias", d),
            })
        embed = _get(w, "model.embed_tokens.weight", used)
        top = {"embed": embed, "pos_embed": torch.zeros(0),
               "lnf_w": _get(w, "model.norm.weight", used), "lnf_b": torch.zeros(0)}
        if "lm_head.weight" in w:
            top["lm_head"] = _get(w, "lm_head.weight", used)
        elif cfg.get("tie_word_embeddings", False):
            top["lm_head"] = embed
        else:
            raise ExportError("no lm_head.weight and tie_word_embeddings is false")
        tied = top["lm_head"] is embed
        inv_freq = rope_inv_freq(cfg, head_dim)
        windows = []
        if cfg.get("sliding_window") and cfg.get("use_sliding_window", arch == "mistral"):
            windows.append(int(cfg["sliding_window"]))
    unused = sorted(k for k in w if k not in used and not k.endswith((
        ".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")))
    if unused:
        raise ExportError(f"checkpoint tensors not used by the {arch} architecture: {unused[:8]}")
    vocab = top["embed"].shape[0]
    # attention over the whole context is exact only inside a sliding window: cap there
    limit = min([max_pos] + windows)
    context = min(limit, context_length) if context_length else min(limit, 4096)
    params = sum(t.numel() for t in used_tensors(w, used))
    tdtype = DTYPES[dtype]
    cast = lambda t: t.to(tdtype)  # noqa: E731
    layers = [{k: cast(v) for k, v in layer.items()} for layer in layers]
    top = {k: cast(v) for k, v in top.items()}
    model = DecoderLM(arch, top, layers, vocab, context, heads, kv_heads, head_dim, eps, inv_freq,
                      bool(tied))
    model.eval()
    info = {"architecture": arch, "dtype": dtype, "vocabSize": vocab, "contextLength": context,
            "maxPositionEmbeddings": max_pos, "layers": n_layers, "heads": heads,
            "kvHeads": kv_heads, "headDim": head_dim, "hiddenSize": d, "parameters": params,
            "tiedEmbeddings": bool(tied)}
    return model, info


def used_tensors(w: Dict[str, Tensor], used: set) -> List[Tensor]:
    seen = set()
    out = []
    for k in sorted(used):
        t = w[k]
        key = (t.data_ptr(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def eos_ids(src: str, vocab: int) -> List[int]:
    """eos_token_id of generation_config.json, else of config.json (an int or a list)."""
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(src, name)
        if os.path.exists(path):
            with open(path) as f:
                value = json.load(f).get("eos_token_id")
            if value is not None:
                ids = value if isinstance(value, list) else [value]
                bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < vocab]
                if bad:
                    raise ExportError(f"{path}: eos_token_id {bad} outside the vocabulary")
                return ids
    raise ExportError(f"{src}: no eos_token_id in generation_config.json or config.json")


def export(src: str, out: str, name: str, dtype: str = "float32",
           context_length: Optional[int] = None, tokenizer: str = "hf") -> dict:
    """Writes out/{model.pt, model.json, export.json, tokenizer.json, chat_template.jinja,
    generation_config.json, tokenizer_config.json} and returns export.json's contents."""
    model, info = build(src, dtype, context_length)
    eos = eos_ids(src, info["vocabSize"])
    if tokenizer not in ("hf", "byte"):
        raise ExportError(f"tokenizer {tokenizer!r}: use hf or byte")
    if tokenizer == "hf" and not os.path.exists(os.path.join(src, "tokenizer.json")):
        raise ExportError(f"{src}: no tokenizer.json (use --tokenizer byte for byte-level ids)")
    os.makedirs(out, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.save(os.path.join(out, "model.pt"))
    model_json = {"name": name, "file": "model.pt", "tokenizer": tokenizer,
                  "vocabSize": info["vocabSize"], "contextLength": info["contextLength"],
                  "eosId": eos[0], "dtype": dtype, "layers": info["layers"],
                  "kvHeads": info["kvHeads"], "headDim": info["headDim"], "eosIds": eos}
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(model_json, f, indent=1)
        f.write("\n")
    copied = []
    for fname in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(src, fname)):
            shutil.copyfile(os.path.join(src, fname), os.path.join(out, fname))
            copied.append(fname)
    template = None
    tc = os.path.join(src, "tokenizer_config.json")
    if os.path.exists(tc):
        with open(tc) as f:
            template = json.load(f).get("chat_template")
        if isinstance(template, list):  # named templates: keep the default one
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        if template:
            with open(os.path.join(out, "chat_template.jinja"), "w") as f:
                f.write(template)
            copied.append("chat_template.jinja")
    export_json = dict(info, eosIds=eos, source=os.path.abspath(src), files=copied)
    with open(os.path.join(out, "export.json"), "w") as f:
        json.dump(export_json, f, indent=1)
        f.write("\n")
    return export_json
