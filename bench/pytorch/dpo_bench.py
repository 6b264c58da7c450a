#!/usr/bin/env python3
"""PyTorch baseline for llmft's DPO benchmark: the reference notebook's DPO step
(dpo-from-scratch.ipynb: custom_collate_fn padding, a trainable policy and a frozen reference
model, compute_logprobs over the full logits, compute_dpo_loss, AdamW lr 5e-6, weight decay 0.01)
on gpt2_bench.py's GPT-2 with random weights, fed the batches bench_dpo_step --dump wrote (the
same token ids). Times zero_grad + policy forward/backward on chosen and rejected + reference
forward (no_grad) + AdamW step; reports the median and the peak RSS. One JSON line per result.

    bench_dpo_step --dump /tmp/b.json ... && /usr/bin/python3 dpo_bench.py --batches /tmp/b.json
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_bench import EOT, GPT, PRESETS, peak_rss_gib  # noqa: E402


def collate(batch, allowed_max_length=1024):
    """The notebook's custom_collate_fn (prompt masked, padding with 50256)."""
    out = {}
    common = max(max(len(c) + 1 for c in batch["chosen"]), max(len(r) + 1 for r in batch["rejected"]))
    for key in ("chosen", "rejected"):
        seqs, masks = [], []
        for seq, pl in zip(batch[key], batch["prompt_lens"]):
            padded = seq + [EOT] * (common - len(seq))
            mask = torch.ones(len(padded)).bool()
            mask[len(seq):] = False
            mask[:pl + 2] = False
            seqs.append(torch.tensor(padded))
            masks.append(mask)
        out[key] = torch.stack(seqs)[:, :allowed_max_length]
        out[key + "_mask"] = torch.stack(masks)[:, :allowed_max_length]
    return out


def compute_logprobs(logits, labels, mask):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    lp = F.log_softmax(logits, dim=-1)
    sel = torch.gather(input=lp, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    m = mask[:, 1:].clone()
    return (sel * m).sum(-1) / m.sum(-1)


def dpo_loss(mc, mr, rc, rr, beta=0.1):
    losses = -F.logsigmoid(beta * ((mc - mr) - (rc - rr)))
    return losses.mean(), (mc - rc).detach().mean(), (mr - rr).detach().mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2-medium", choices=sorted(PRESETS))
    ap.add_argument("--batches", required=True, help="bench_dpo_step --dump output")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(123)
    batches = [collate(b) for b in json.load(open(args.batches))]
    policy = GPT(**PRESETS[args.model])
    reference = copy.deepcopy(policy).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-6, weight_decay=0.01)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    times, losses = [], []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad()
        with amp:
            mc = compute_logprobs(policy(b["chosen"]).float(), b["chosen"], b["chosen_mask"])
            mr = compute_logprobs(policy(b["rejected"]).float(), b["rejected"], b["rejected_mask"])
            with torch.no_grad():
                rc = compute_logprobs(reference(b["chosen"]).float(), b["chosen"], b["chosen_mask"])
                rr = compute_logprobs(reference(b["rejected"]).float(), b["rejected"], b["rejected_mask"])
            loss, _, _ = dpo_loss(mc, mr, rc, rr)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(dt * 1e3)
    if abs(losses[0] - 0.6931) > 1e-3:
        print(f"validation failed: first loss {losses[0]}, expected ln 2", file=sys.stderr)
        return 1
    print(json.dumps({"bench": "pytorch_dpo_step", "model": args.model,
                      "precision": "bf16" if args.bf16 else "fp32", "threads": args.threads,
                      "steps": len(times), "ms_per_step_median": statistics.median(times),
                      "ms_per_step_min": min(times), "ms_per_step_max": max(times),
                      "peak_rss_mb": peak_rss_gib() * 1024, "torch": torch.__version__,
                      "blas": os.environ.get("LD_LIBRARY_PATH", "default"),
                      "preload": os.environ.get("LD_PRELOAD", "")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
