#!/usr/bin/python3
"""LoRA on GPT-2 as PEFT defines it (FACTS-phase2 §2), in plain PyTorch: the reference for llmft's
adapters. Each adapted Conv1D layer computes  y = x @ W + b + scale * (x @ lora_A.T) @ lora_B.T
(PEFT's lora.Linear forward: result + lora_B(lora_A(dropout(x))) * scaling, scaling = alpha / r),
lora_A (r, in), lora_B (out, r); the base is frozen.

Writes tests/golden/lora_tiny.safetensors for gpt2_reference.py's tiny untied model and batch.
Regenerate with (from the repository root):

    /usr/bin/python3 tests/reference/lora_reference.py            # torch 1.13, CPU

Contents:
  config               I32 [V, maxT, C, L, NH, r]   lora.alpha F32 (1)
  param.<name>         the frozen base (gpt2_reference.init_params, untied)
  batch.inputs/targets/lengths   as gpt2_tiny.safetensors
  lora.<peft name>     initial adapters on c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj and lm_head:
                       lora_A kaiming_uniform(a=sqrt(5)) as PEFT, lora_B N(0, 0.1) instead of
                       zeros so that every gradient is non-zero at the first step
  loss                 (1) masked mean cross-entropy with the adapters
  grad.<peft name>     d loss / d adapter tensor
  adamw.losses         (3) loss before each of 3 AdamW steps over the adapters only
                       (lr 1e-2, wd 0.1, default betas)
  adamw.<peft name>    adapters after those 3 steps
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference as g  # noqa: E402

R, ALPHA = 4, 8.0
SCALE = ALPHA / R
MODULES = [("attn.c_attn", g.C, 3 * g.C), ("attn.c_proj", g.C, g.C),
           ("mlp.c_fc", g.C, 4 * g.C), ("mlp.c_proj", 4 * g.C, g.C)]


def lora_names():
    """(PEFT prefix, in, out) of every adapter, in llmft's order."""
    out = []
    for l in range(g.L):
        for m, i, o in MODULES:
            out.append((f"base_model.model.transformer.h.{l}.{m}.", i, o))
    out.append(("base_model.model.lm_head.", g.C, g.V))
    return out


def init_lora():
    gen = torch.Generator().manual_seed(g.SEED + 7)
    lo = {}
    for prefix, i, o in lora_names():
        a = torch.empty(R, i)
        bound = 1.0 / math.sqrt(i)  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) * sqrt(3 / fan_in)
        a.uniform_(-bound, bound, generator=gen)
        lo[prefix + "lora_A.weight"] = a
        lo[prefix + "lora_B.weight"] = 0.1 * torch.randn(o, R, generator=gen)
    return lo


def adapted(x, w, b, lo, prefix):
    y = x @ w + b
    return y + SCALE * (x @ lo[prefix + "lora_A.weight"].t()) @ lo[prefix + "lora_B.weight"].t()


def forward(P, lo, idx):
    B, T = idx.shape
    C, NH = g.C, g.NH
    HS = C // NH
    x = P["wte.weight"][idx] + P["wpe.weight"][torch.arange(T)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(g.L):
        h = f"h.{l}."
        p = f"base_model.model.transformer.h.{l}."
        a = F.layer_norm(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], 1e-5)
        qkv = adapted(a, P[h + "attn.c_attn.weight"], P[h + "attn.c_attn.bias"], lo, p + "attn.c_attn.")
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NH, HS).transpose(1, 2)
        v = v.view(B, T, NH, HS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + adapted(y, P[h + "attn.c_proj.weight"], P[h + "attn.c_proj.bias"], lo, p + "attn.c_proj.")
        a = F.layer_norm(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], 1e-5)
        a = F.gelu(adapted(a, P[h + "mlp.c_fc.weight"], P[h + "mlp.c_fc.bias"], lo, p + "mlp.c_fc."),
                   approximate="tanh")
        x = x + adapted(a, P[h + "mlp.c_proj.weight"], P[h + "mlp.c_proj.bias"], lo, p + "mlp.c_proj.")
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
    # lm_head is an nn.Linear (weight (V, C)): x @ W^T + scale * (x @ A^T) @ B^T
    return adapted(x, P["lm_head.weight"].t(), 0.0, lo, "base_model.model.lm_head.")


def loss_fn(P, lo, inputs, targets):
    logits = forward(P, lo, inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def main():
    torch.set_num_threads(1)
    out = {"config": torch.tensor([g.V, g.MAXT, g.C, g.L, g.NH, R], dtype=torch.int32),
           "lora.alpha": torch.tensor([ALPHA], dtype=torch.float32)}
    P = g.init_params()
    for name, t in P.items():
        out["param." + name] = t
    gen = torch.Generator().manual_seed(g.SEED + 1)
    lengths = [9, 5, 3, 1]
    items = [torch.randint(0, g.EOT, (n,), generator=gen).tolist() for n in lengths]
    inputs, targets = g.collate(items, prompt_lens=[5, 0, 0, 0])
    out["batch.inputs"] = inputs.int()
    out["batch.targets"] = targets.int()
    out["batch.lengths"] = torch.tensor(lengths, dtype=torch.int32)

    lo0 = init_lora()
    for name, t in lo0.items():
        out["lora." + name] = t
    lo = {k: v.clone().requires_grad_(True) for k, v in lo0.items()}
    loss = loss_fn(P, lo, inputs, targets)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    for name in lo:
        out["grad." + name] = lo[name].grad.detach().clone()

    la = {k: v.clone().requires_grad_(True) for k, v in lo0.items()}
    opt = torch.optim.AdamW(list(la.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.1)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        l = loss_fn(P, la, inputs, targets)
        l.backward()
        losses.append(l.item())
        opt.step()
    out["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)
    for name in la:
        out["adamw." + name] = la[name].detach().clone()

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "golden", "lora_tiny.safetensors"))
    g.write_safetensors(path, out)
    print(f"wrote {path}: loss {loss.item():.6f}, adamw losses {losses}")


if __name__ == "__main__":
    sys.exit(main())
