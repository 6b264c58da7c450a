#!/usr/bin/env python3
"""PyTorch side of the recipe benchmark: the same steps as bench_recipe, from its batch plan.

bench_recipe --dump-batches PLAN writes the recipe's batches in execution order, padded exactly as
the reference collate pads them (pad 50256, targets -100 after each row's first end token): the
first K training steps and the evaluations among them (5 train + 5 validation batches every 5
steps). This script runs them as the reference recipe does (ch07's train_model_simple):
  training step  zero_grad; cross-entropy over the padded (B, T) logits; backward; AdamW
                 (lr 5e-5, weight decay 0.1)
  evaluation     model.eval(); no_grad; the mean of the 10 batch losses; model.train()
  sample         after each epoch (and after the last step of a shortened run),
                 generate_text_simple: 50 greedy tokens from the first validation prompt, the
                 whole sequence recomputed for each token (no KV cache)
with a from-scratch GPT-2 of the model's shapes and random weights (gpt2_bench.py's GPT), fp32 or
--bf16 (CPU autocast to bfloat16). It extrapolates to the whole recipe exactly as bench_recipe
does (see bench/bench_recipe.cpp): step 0 and the first evaluation apart, the other steps and
evaluations by time per FLOP, the time per sample times the number of epochs. Real tokens and
FLOPs are llmft's counts from the plan (packed tokens, useful matrix-product FLOPs), so both sides
are credited with the same work.

Best configuration on a small Debian CPU box (what bench/recipe.sh uses; Debian's paths):
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blis-openmp BLIS_NUM_THREADS=<cores> \\
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 OMP_NUM_THREADS=<cores> \\
  /usr/bin/python3 recipe_bench.py PLAN
Prints a readable summary on stderr and one JSON line on stdout.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_bench import CTX, GPT, PRESETS  # noqa: E402


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def mm_gflops(dtype, reps=5):
    """torch.mm at bench_recipe's peak shape (450 x 1024 x 4096), median of reps."""
    a = torch.rand(450, 1024).to(dtype)
    b = torch.rand(1024, 4096).to(dtype)
    times = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        torch.mm(a, b)
        if r > 0:
            times.append(time.perf_counter() - t0)
    return 2 * 450 * 1024 * 4096 / statistics.median(times) / 1e9


def read_plan(path):
    with open(path) as f:
        header = json.loads(f.readline())
        if header.get("plan") != "recipe":
            raise SystemExit(f"{path}: not a bench_recipe plan (first line has no \"plan\": \"recipe\")")
        items = []
        for line in f:
            d = json.loads(line)
            shape = (d["B"], d["T"])
            d["inputs"] = torch.tensor(d["inputs"], dtype=torch.long).view(shape)
            d["targets"] = torch.tensor(d["targets"], dtype=torch.long).view(shape)
            items.append(d)
    return header, items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", help="file written by bench_recipe --dump-batches")
    ap.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--no-sample", action="store_true", help="skip the greedy sample (and its estimate)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(123)
    header, items = read_plan(args.plan)
    model_name = header["model"]
    steps = header["steps"]
    t_setup = time.perf_counter()
    model = GPT(**PRESETS[model_name])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=header["lr"], weight_decay=header["weight_decay"])
    setup_s = time.perf_counter() - t_setup
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    peak_before = mm_gflops(torch.bfloat16 if args.bf16 else torch.float32)

    def loss_of(d):
        with amp:
            logits = model(d["inputs"])
            return F.cross_entropy(logits.flatten(0, 1).float(), d["targets"].flatten())

    def sample():
        t0 = time.perf_counter()
        model.eval()
        idx = torch.tensor([header["sample_prompt"]], dtype=torch.long)
        with torch.no_grad(), amp:
            for _ in range(header["sample_tokens"]):
                logits = model(idx[:, -CTX:])[:, -1, :]
                idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
        model.train()
        return time.perf_counter() - t0

    step_s, step_tokens, step_flops, eval_s, eval_flops_each, sample_each = [], [], [], [], [], []
    train_flops = eval_flops = 0.0
    eval_tokens = 0
    first_val = None
    i = 0
    t_run = time.perf_counter()
    while i < len(items):
        d = items[i]
        if d["kind"] != "train":
            raise SystemExit(f"{args.plan}: batch {i} should be a training step, is {d['kind']}")
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_of(d)
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise SystemExit(f"step {d['step']}: non-finite loss")
        step_tokens.append(d["real_tokens"])
        step_flops.append(d["flops"])
        train_flops += d["flops"]
        i += 1
        evals = []
        while i < len(items) and items[i]["kind"] != "train":
            evals.append(items[i])
            i += 1
        if evals:
            t0 = time.perf_counter()
            model.eval()
            losses = {"eval_train": [], "eval_val": []}
            with torch.no_grad():
                for e in evals:
                    losses[e["kind"]].append(loss_of(e).item())
            model.train()
            eval_s.append(time.perf_counter() - t0)
            val = statistics.fmean(losses["eval_val"])
            if not math.isfinite(val):
                raise SystemExit(f"evaluation after step {d['step']}: non-finite loss")
            if first_val is None:
                first_val = val
            eval_tokens += sum(e["real_tokens"] for e in evals)
            eval_flops_each.append(sum(e["flops"] for e in evals))
            eval_flops += eval_flops_each[-1]
        # As the trainer: after each epoch, and (bench hook) after the last step of a short run.
        epoch_end = (d["step"] + 1) % header["steps_per_epoch"] == 0
        if not args.no_sample and (epoch_end or d["step"] == steps - 1):
            sample_each.append(sample())
    sample_s = sum(sample_each)
    run_s = time.perf_counter() - t_run
    peak_after = mm_gflops(torch.bfloat16 if args.bf16 else torch.float32)
    if len(step_s) != steps:
        raise SystemExit(f"{args.plan}: {len(step_s)} training steps, the header says {steps}")

    train_s, evals_s = sum(step_s), sum(eval_s)
    train_tokens = sum(step_tokens)
    subset = steps < header["total_steps"]
    est_train, est_eval, est_sample = train_s, evals_s, sample_s
    if subset:
        rest_flops = header["full_train_flops"] - step_flops[0]
        if steps > 1:
            est_train = step_s[0] + sum(step_s[1:]) / sum(step_flops[1:]) * rest_flops
        else:
            est_train = step_s[0] / step_flops[0] * header["full_train_flops"]
        est_eval = 0.0
        if len(eval_s) > 1:
            est_eval = eval_s[0] + sum(eval_s[1:]) / sum(eval_flops_each[1:]) * \
                (header["full_eval_flops"] - eval_flops_each[0])
        elif eval_s:
            est_eval = eval_s[0] / eval_flops_each[0] * header["full_eval_flops"]
        est_sample = sample_s / len(sample_each) * header["epochs"] if sample_each else 0.0
    peak = max(peak_before, peak_after)
    gflops = (train_flops + eval_flops) / (train_s + evals_s) / 1e9
    load = os.getloadavg()
    out = {
        "bench": "recipe", "impl": "pytorch", "model": model_name,
        "precision": "bf16-autocast" if args.bf16 else "fp32",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "blas_path": os.environ.get("LD_LIBRARY_PATH", "default"),
        "preload": os.environ.get("LD_PRELOAD", ""),
        "cpu": platform.processor() or platform.machine(),
        "steps_run": steps, "evaluations_run": len(eval_s), "samples_run": len(sample_each),
        "extrapolated_from_steps": steps if subset else None,
        "wall_seconds": run_s, "setup_seconds": setup_s,
        "train_seconds": train_s, "eval_seconds": evals_s, "sample_seconds": sample_s,
        "first_step_seconds": step_s[0], "train_s_per_step_median": statistics.median(step_s),
        "train_real_tokens": train_tokens, "eval_real_tokens": eval_tokens,
        "train_real_tokens_per_s": train_tokens / train_s,
        "eval_real_tokens_per_s": eval_tokens / evals_s if evals_s else 0.0,
        "train_gflops": train_flops / train_s / 1e9,
        "eval_gflops": eval_flops / evals_s / 1e9 if evals_s else 0.0,
        "gflops": gflops, "peak_gflops": peak,
        "peak_kind": f"torch.mm {'bf16' if args.bf16 else 'fp32'} 450x1024x4096",
        "percent_of_peak": 100 * gflops / peak,
        "first_val_loss": first_val,
        "recipe_steps": header["total_steps"], "recipe_evaluations": header["evaluations_total"],
        "recipe_train_seconds": est_train, "recipe_eval_seconds": est_eval,
        "recipe_sample_seconds": est_sample,
        "recipe_total_seconds": setup_s + est_train + est_eval + est_sample,
        "recipe_minutes": (setup_s + est_train + est_eval + est_sample) / 60,
        "peak_rss_gib": peak_rss_gib(), "load_avg": list(load),
    }
    print(f"\nrecipe workload (PyTorch {torch.__version__}), {model_name} random weights, "
          f"{out['precision']}, {out['threads']} threads"
          f"{f', extrapolated from {steps} steps' if subset else ''}\n"
          f"  ran           {steps} steps, {len(eval_s)} evaluations, {out['samples_run']} samples in "
          f"{run_s:.1f} s (steps {train_s:.1f}, evaluations {evals_s:.1f}, samples {sample_s:.1f})\n"
          f"  training      {out['train_real_tokens_per_s']:.1f} real tokens/s, "
          f"{out['train_s_per_step_median']:.2f} s/step median (first step {step_s[0]:.2f} s), "
          f"{out['train_gflops']:.0f} GFLOP/s\n"
          f"  evaluation    {out['eval_real_tokens_per_s']:.1f} real tokens/s, {out['eval_gflops']:.0f} GFLOP/s\n"
          f"  peak          {peak:.0f} GFLOP/s ({out['peak_kind']}); steps + evaluations at "
          f"{out['percent_of_peak']:.0f}% of it\n"
          f"  whole recipe  {out['recipe_minutes']:.1f} minutes (steps {est_train / 60:.1f} min, "
          f"evaluations {est_eval / 60:.1f} min, samples {est_sample / 60:.2f} min)"
          f"{' [extrapolated]' if subset else ''}\n"
          f"  peak memory   {out['peak_rss_gib']:.2f} GiB RSS; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
