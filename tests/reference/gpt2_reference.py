#!/usr/bin/python3
"""From-scratch GPT-2 (SPEC §4) in plain PyTorch: the reference llmft's C++ model must match.

Writes tests/golden/gpt2_tiny.safetensors (float32/int32 little-endian) for a tiny config with
a fixed-seed GPT-2 initialisation. Regenerate with (from the repository root):

    /usr/bin/python3 tests/reference/gpt2_reference.py            # torch 1.13, CPU

Contents (names; parameters use Hugging Face GPT-2 names, Conv1D weights stored [in, out]):
  config               I32 [V, maxT, C, L, NH]
  param.<name>         initial parameters (untied: lm_head.weight separate from wte.weight)
  batch.inputs/targets I32 (B, T) padded batch built with SPEC §3's collate (eot = V-1 used as
                       <|endoftext|> and padding, -100 after the first eot, row 0 prompt-masked)
  batch.lengths        I32 (B) real tokens per row (packed sequences = first lengths[b] rows)
  logits               (B, T, V) untied model on batch.inputs
  loss                 (1) mean cross-entropy over targets != -100
  grad.<name>          d loss / d param for every parameter
  adamw.losses         (3) loss before each of 3 AdamW steps (lr 1e-3, wd 0.1, default betas)
  adamw.<name>         parameters after those 3 steps
  tied.loss            (1) loss when the head is wte (same params, lm_head unused)
  tied.grad.<name>     gradients of the tied model for wte (embedding + head parts), wpe, ln_f
  greedy.prompt/tokens I32 textbook greedy loop (recompute the whole sequence, argmax) from the
                       untied initial model, 8 new tokens
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

V, MAXT, C, L, NH = 97, 24, 36, 2, 3  # C not a multiple of 16, HS = 12
EOT = V - 1
SEED = 123


def param_specs(tied):
    specs = [("wte.weight", (V, C)), ("wpe.weight", (MAXT, C))]
    for l in range(L):
        h = f"h.{l}."
        specs += [
            (h + "ln_1.weight", (C,)), (h + "ln_1.bias", (C,)),
            (h + "attn.c_attn.weight", (C, 3 * C)), (h + "attn.c_attn.bias", (3 * C,)),
            (h + "attn.c_proj.weight", (C, C)), (h + "attn.c_proj.bias", (C,)),
            (h + "ln_2.weight", (C,)), (h + "ln_2.bias", (C,)),
            (h + "mlp.c_fc.weight", (C, 4 * C)), (h + "mlp.c_fc.bias", (4 * C,)),
            (h + "mlp.c_proj.weight", (4 * C, C)), (h + "mlp.c_proj.bias", (C,)),
        ]
    specs += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    if not tied:
        specs.append(("lm_head.weight", (V, C)))
    return specs


def init_params():
    """GPT-2 init, but with non-trivial biases and LayerNorm affines so their gradients matter."""
    g = torch.Generator().manual_seed(SEED)
    params = {}
    for name, shape in param_specs(tied=False):
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") else 0.02
            # Larger than GPT-2's 0.02 on embeddings/head so logits are not near uniform.
            if name in ("wte.weight", "wpe.weight", "lm_head.weight"):
                std = 0.3
            t = std * torch.randn(shape, generator=g)
        params[name] = t.float()
    return params


def forward(P, idx, tied):
    """idx: (B, T) -> logits (B, T, V)."""
    B, T = idx.shape
    HS = C // NH
    x = P["wte.weight"][idx] + P["wpe.weight"][torch.arange(T)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(L):
        h = f"h.{l}."
        a = F.layer_norm(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], 1e-5)
        qkv = a @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NH, HS).transpose(1, 2)
        v = v.view(B, T, NH, HS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + (y @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"])
        a = F.layer_norm(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], 1e-5)
        a = F.gelu(a @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"], approximate="tanh")
        x = x + (a @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
    head = P["wte.weight"] if tied else P["lm_head.weight"]
    return x @ head.t()


def loss_fn(P, inputs, targets, tied):
    logits = forward(P, inputs, tied)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def collate(items, prompt_lens):
    """SPEC §3: append one eot, pad with eot to max+1, shift, -100 on every eot but the first,
    and -100 on the first prompt_len-1 targets (prompt masking)."""
    Lmax = max(len(it) for it in items) + 1
    inputs, targets = [], []
    for it, pl in zip(items, prompt_lens):
        padded = it + [EOT] * (Lmax - len(it))
        inp = padded[:-1]
        tgt = padded[1:]
        first = len(it) - 1  # index in tgt of the first eot
        tgt = [t if (t != EOT or i == first) else -100 for i, t in enumerate(tgt)]
        for i in range(max(0, pl - 1)):
            tgt[i] = -100
        inputs.append(inp)
        targets.append(tgt)
    return torch.tensor(inputs), torch.tensor(targets)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        data = t.numpy().astype("<f4" if dtype == "F32" else "<i4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    # The script that ran (this one, or lora_reference.py / dpo_reference.py importing it).
    header["__metadata__"] = {"generator": "tests/reference/" + os.path.basename(sys.argv[0]),
                              "torch": torch.__version__}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    out = {"config": torch.tensor([V, MAXT, C, L, NH], dtype=torch.int32)}
    P0 = init_params()
    for name, t in P0.items():
        out["param." + name] = t

    g = torch.Generator().manual_seed(SEED + 1)
    lengths = [9, 5, 3, 1]
    items = [torch.randint(0, EOT, (n,), generator=g).tolist() for n in lengths]
    inputs, targets = collate(items, prompt_lens=[5, 0, 0, 0])
    out["batch.inputs"] = inputs.int()
    out["batch.targets"] = targets.int()
    out["batch.lengths"] = torch.tensor(lengths, dtype=torch.int32)

    P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
    out["logits"] = forward(P, inputs, tied=False).detach()
    loss = loss_fn(P, inputs, targets, tied=False)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    for name in P:
        out["grad." + name] = P[name].grad.detach().clone()

    Pt = {k: v.clone().requires_grad_(True) for k, v in P0.items() if k != "lm_head.weight"}
    tl = loss_fn(Pt, inputs, targets, tied=True)
    tl.backward()
    out["tied.loss"] = tl.detach().reshape(1)
    for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):  # keeps the file small
        out["tied.grad." + name] = Pt[name].grad.detach().clone()

    Pa = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
    opt = torch.optim.AdamW(list(Pa.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.1)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        l = loss_fn(Pa, inputs, targets, tied=False)
        l.backward()
        losses.append(l.item())
        opt.step()
    out["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)
    for name in Pa:
        out["adamw." + name] = Pa[name].detach().clone()

    prompt = torch.randint(0, EOT, (1, 5), generator=g)
    idx = prompt.clone()
    with torch.no_grad():
        for _ in range(8):
            logits = forward(P0, idx[:, -MAXT:], tied=False)
            nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
    out["greedy.prompt"] = prompt[0].int()
    out["greedy.tokens"] = idx[0, 5:].int()

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "golden", "gpt2_tiny.safetensors")
    write_safetensors(os.path.normpath(path), out)
    print(f"wrote {os.path.normpath(path)}: loss {loss.item():.6f}, tied {tl.item():.6f}, "
          f"adamw losses {losses}, greedy {out['greedy.tokens'].tolist()}")


if __name__ == "__main__":
    sys.exit(main())
