#!/usr/bin/python3
"""Checks that a model folder written by llmft (write_hf_folder) loads as transformers'
GPT2LMHeadModel: config.json carries GPT2Config's fields, and model.safetensors' names and shapes
are exactly the state dict of a from-scratch module tree with transformers' GPT-2 module names
(transformers itself is not a dependency). It follows transformers' prefix rule: a checkpoint
whose names lack "transformer." is loaded into the base model only, which would drop an untied
lm_head, so llmft writes the prefix.

    /usr/bin/python3 tests/reference/check_hf_folder.py FOLDER [FOLDER...]
"""
import json
import struct
import sys

import torch
import torch.nn as nn

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CONFIG_KEYS = {  # GPT2Config fields and their JSON types
    "model_type": str, "architectures": list, "vocab_size": int, "n_positions": int,
    "n_ctx": int, "n_embd": int, "n_layer": int, "n_head": int, "activation_function": str,
    "resid_pdrop": float, "embd_pdrop": float, "attn_pdrop": float, "layer_norm_epsilon": float,
    "initializer_range": float, "bos_token_id": int, "eos_token_id": int,
    "tie_word_embeddings": bool, "torch_dtype": str, "scale_attn_weights": bool,
}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=DTYPES[e["dtype"]])
        tensors[name] = t.reshape(e["shape"])
    return tensors, meta


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D: weight [in, out]
    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))


class Attention(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_attn = Conv1D(3 * C, C)
        self.c_proj = Conv1D(C, C)


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = Conv1D(4 * C, C)
        self.c_proj = Conv1D(C, 4 * C)


class Block(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = Attention(C)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(C)


class Model(nn.Module):  # GPT2Model
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.wte = nn.Embedding(cfg["vocab_size"], C)
        self.wpe = nn.Embedding(cfg["n_positions"], C)
        self.h = nn.ModuleList(Block(C, cfg["layer_norm_epsilon"]) for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(C, eps=cfg["layer_norm_epsilon"])


class LMHeadModel(nn.Module):  # GPT2LMHeadModel, base_model_prefix = "transformer"
    def __init__(self, cfg):
        super().__init__()
        self.transformer = Model(cfg)
        self.lm_head = nn.Linear(cfg["n_embd"], cfg["vocab_size"], bias=False)


def check(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    for key, typ in CONFIG_KEYS.items():
        assert key in cfg, f"config.json lacks {key}"
        assert isinstance(cfg[key], typ), f"config.json {key}={cfg[key]!r} is not {typ.__name__}"
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert cfg["activation_function"] == "gelu_new"
    assert "n_inner" in cfg and cfg["n_inner"] is None
    tensors, meta = read_safetensors(f"{folder}/model.safetensors")
    assert meta.get("format") == "pt", "transformers requires metadata format=pt"
    model = LMHeadModel(cfg)
    expected = model.state_dict()
    tied = cfg["tie_word_embeddings"]
    if tied:  # save_pretrained drops the shared head; tie_weights() restores it
        expected.pop("lm_head.weight")
    assert any(k.startswith("transformer.") for k in tensors), "no transformer. prefix"
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    assert not missing and not unexpected, f"missing {missing}, unexpected {unexpected}"
    for k, t in tensors.items():
        assert tuple(t.shape) == tuple(expected[k].shape), f"{k}: {tuple(t.shape)} vs {tuple(expected[k].shape)}"
    model.load_state_dict(tensors, strict=not tied)
    if tied:
        model.lm_head.weight = model.transformer.wte.weight
    for name in ("vocab.json", "merges.txt"):
        open(f"{folder}/{name}", "rb").close()
    print(f"{folder}: OK ({len(tensors)} tensors, {'tied' if tied else 'untied'}, "
          f"L={cfg['n_layer']} C={cfg['n_embd']})")


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        check(folder)
