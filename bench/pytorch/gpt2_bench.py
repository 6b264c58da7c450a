#!/usr/bin/env python3
"""PyTorch baseline for llmft's benchmarks: the same GPT-2 work, timed the same way.

A from-scratch GPT-2 (the architecture of SPEC §4, as the reference recipe writes it) with random
weights, fed the recipe's real batch shapes: batches of 8 consecutive train-split entries, padded as
the reference collate does (T = longest item in the batch; padding targets -100). "Real tokens" are
the entries' own tokens (sum of their lengths), the figure llmft's benchmarks report too.

Modes:
  train     forward + backward + AdamW step, ms/step and real tokens/s
  eval      forward only (loss), as the recipe's evaluation batches
  generate  the textbook greedy loop (recomputes the whole sequence for each new token)

Best configuration on a small CPU box (what bench/compare.sh uses):
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blis-openmp BLIS_NUM_THREADS=<cores> \
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/bin/python3 gpt2_bench.py ...
Prints one JSON line per result.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import time

import torch
import torch.nn as nn

PRESETS = {
    "gpt2": dict(emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large": dict(emb_dim=1280, n_layers=36, n_heads=20),
}
VOCAB, CTX, EOT = 50257, 1024, 50256


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        self.register_buffer("mask", torch.triu(torch.ones(CTX, CTX, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        HS = C // self.NH
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, HS).transpose(1, 2)
        k = k.view(B, T, self.NH, HS).transpose(1, 2)
        v = v.view(B, T, self.NH, HS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = att.masked_fill(self.mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        h = nn.functional.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp_proj(h)


class GPT(nn.Module):
    def __init__(self, emb_dim, n_layers, n_heads):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, emb_dim)
        self.wpe = nn.Embedding(CTX, emb_dim)
        self.h = nn.ModuleList(Block(emb_dim, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(emb_dim, eps=1e-5)
        self.lm_head = nn.Linear(emb_dim, VOCAB, bias=False)  # untied, as the reference recipe

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def recipe_batches(lengths, batch_size, n_train):
    """Padded (inputs, targets, real_tokens) for consecutive train-split batches (drop_last)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for s in range(0, n_train - batch_size + 1, batch_size):
        lens = lengths[s:s + batch_size]
        T = max(lens)
        inp = torch.full((batch_size, T), EOT, dtype=torch.long)
        tgt = torch.full((batch_size, T), -100, dtype=torch.long)
        for i, n in enumerate(lens):
            ids = torch.randint(0, EOT, (n,), generator=g)
            inp[i, :n] = ids
            tgt[i, :n - 1] = ids[1:]
            tgt[i, n - 1] = EOT
        out.append((inp, tgt, sum(lens)))
    return out


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2-medium", choices=sorted(PRESETS))
    ap.add_argument("--mode", default="train", choices=["train", "eval", "generate"])
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    ap.add_argument("--new-tokens", type=int, default=8, help="generate: new tokens (default 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lengths", default=os.path.join(os.path.dirname(__file__), "..", "data",
                                                      "recipe_lengths.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(123)
    lengths = json.load(open(args.lengths))["full"]
    model = GPT(**PRESETS[args.model])
    batches = recipe_batches(lengths, 8, int(len(lengths) * 0.85))
    ctx = dict(torch=torch.__version__, threads=args.threads, blas=os.environ.get("LD_LIBRARY_PATH", "default"),
               preload=os.environ.get("LD_PRELOAD", ""), cpu=platform.processor() or platform.machine())
    print(json.dumps({"context": ctx}), flush=True)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    times, tokens = [], []
    if args.mode in ("train", "eval"):
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
        loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
        for i in range(args.warmup + args.steps):
            inp, tgt, real = batches[i % len(batches)]
            t0 = time.perf_counter()
            if args.mode == "train":
                opt.zero_grad(set_to_none=True)
                with amp:
                    loss = loss_fn(model(inp).flatten(0, 1).float(), tgt.flatten())
                loss.backward()
                opt.step()
            else:
                with torch.no_grad(), amp:
                    loss = loss_fn(model(inp).flatten(0, 1).float(), tgt.flatten())
            dt = time.perf_counter() - t0
            if not math.isfinite(loss.item()):
                raise SystemExit("non-finite loss")
            if i >= args.warmup:
                times.append(dt)
                tokens.append(real)
        med = statistics.median(times)
        print(json.dumps({
            "bench": f"pytorch_{args.mode}", "model": args.model, "precision": "bf16" if args.bf16 else "fp32",
            "steps": args.steps, "median_s_per_step": round(med, 4),
            "min_s": round(min(times), 4), "max_s": round(max(times), 4),
            "real_tokens_per_s": round(statistics.median(t / d for t, d in zip(tokens, times)), 2),
            "peak_rss_gib": round(peak_rss_gib(), 2)}), flush=True)
    else:
        prompt = torch.randint(0, EOT, (1, 40), generator=torch.Generator().manual_seed(1))
        for i in range(args.warmup + args.steps):
            idx = prompt
            t0 = time.perf_counter()
            with torch.no_grad(), amp:
                for _ in range(args.new_tokens):
                    nxt = model(idx[:, -CTX:])[:, -1, :].argmax(dim=-1, keepdim=True)
                    idx = torch.cat([idx, nxt], dim=1)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(json.dumps({
            "bench": "pytorch_generate_textbook", "model": args.model,
            "precision": "bf16" if args.bf16 else "fp32", "prompt_tokens": 40,
            "new_tokens": args.new_tokens, "tokens_per_s": round(args.new_tokens / med, 3),
            "peak_rss_gib": round(peak_rss_gib(), 2)}), flush=True)


if __name__ == "__main__":
    main()
