#!/usr/bin/python3
"""DPO (SPEC §9, FACTS-phase2 §4a) in plain PyTorch, as the reference notebook writes it
(dpo-from-scratch.ipynb: custom_collate_fn, compute_logprobs, compute_dpo_loss,
compute_dpo_loss_batch, a policy model and a frozen reference model, padded batches). llmft's
packed, reference-scored-once DPO must give the same numbers.

Writes tests/golden/dpo_tiny.safetensors for gpt2_reference.py's tiny config and initial
parameters. Regenerate with (from the repository root):

    /usr/bin/python3 tests/reference/dpo_reference.py            # torch 1.13, CPU

Contents (F32 unless noted):
  config                   I32 [V, maxT, C, L, NH, K, S, B, max_length]
  beta, lr, weight_decay   (1) the run's settings (AdamW betas 0.9/0.999, eps 1e-8)
  param.<name>             initial parameters (policy = reference), Hugging Face names
  pairs.chosen, .rejected  I32 K token lists end to end (prompt + response, no eot), offsets in
  pairs.chosen_offsets ... I32 (K+1); pairs.prompt_lens I32 (K)
  steps.batches            I32 (S, B) pair indices of each training batch
  reference.chosen/.rejected (K) the frozen model's mean response log-prob of every pair
  steps.loss, steps.chosen_reward, steps.rejected_reward   (S) batch means before each update
  steps.policy             (S, 2B) the policy's mean log-probs, chosen 0..B-1 then rejected
  grad<s>.<name>           d loss / d param at steps s = 0 and S-1
  after.<name>             parameters after the S AdamW steps
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference as g  # noqa: E402  (the one model definition of the references)

K, S, B = 6, 3, 3          # pairs, steps, pairs per batch
MAX_LENGTH = g.MAXT        # allowed_max_length; pair 5's rejected text is longer: cropped
BETA, LR, WD = 0.1, 3e-2, 0.01
PAD = g.EOT


def custom_collate_fn(batch, pad_token_id=PAD, allowed_max_length=None, mask_prompt_tokens=True):
    """The notebook's collate (cell 33)."""
    data = {"prompt": [], "chosen": [], "rejected": [], "rejected_mask": [], "chosen_mask": []}
    max_length_common = 0
    for key in ["chosen", "rejected"]:
        max_length_common = max(max_length_common, max(len(it[key]) + 1 for it in batch))
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        data["prompt"].append(prompt)
        for key in ["chosen", "rejected"]:
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()
            mask[len(sequence):] = False
            if mask_prompt_tokens:
                mask[:prompt.shape[0] + 2] = False
            data[key].append(torch.tensor(padded))
            data[f"{key}_mask"].append(mask)
    for key in ["chosen", "rejected", "chosen_mask", "rejected_mask"]:
        t = torch.stack(data[key])
        if allowed_max_length is not None:
            t = t[:, :allowed_max_length]
        data[key] = t
    return data


def compute_logprobs(logits, labels, selection_mask=None):
    """The notebook's compute_logprobs (cell 89): mean log-prob over the selected tokens."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    log_probs = F.log_softmax(logits, dim=-1)
    selected = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()
        selected = selected * mask
        return selected.sum(-1) / mask.sum(-1)
    return selected.mean(-1)


def compute_dpo_loss(mc, mr, rc, rr, beta=BETA):
    """The notebook's compute_dpo_loss (cell 84)."""
    logits = (mc - mr) - (rc - rr)
    losses = -F.logsigmoid(beta * logits)
    return losses.mean(), (mc - rc).detach().mean(), (mr - rr).detach().mean()


def logprobs(P, batch, key):
    logits = g.forward(P, batch[key], tied=False)
    return compute_logprobs(logits, batch[key], batch[f"{key}_mask"])


def make_pairs(gen):
    pairs = []
    for k in range(K):
        p = 3 + k % 3
        prompt = torch.randint(0, g.EOT, (p,), generator=gen).tolist()
        lc = 4 + (k * 5) % 7
        lr = 3 + (k * 3) % 8 if k != 5 else g.MAXT  # pair 5: rejected runs past max_length
        chosen = prompt + torch.randint(0, g.EOT, (lc,), generator=gen).tolist()
        rejected = prompt + torch.randint(0, g.EOT, (lr,), generator=gen).tolist()
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def main():
    torch.set_num_threads(1)
    torch.manual_seed(g.SEED)
    gen = torch.Generator().manual_seed(g.SEED + 7)
    P0 = g.init_params()
    pairs = make_pairs(gen)
    batches = [[0, 1, 2], [3, 4, 5], [5, 2, 0]]
    assert len(batches) == S and all(len(b) == B for b in batches)

    out = {"config": torch.tensor([g.V, g.MAXT, g.C, g.L, g.NH, K, S, B, MAX_LENGTH],
                                  dtype=torch.int32),
           "beta": torch.tensor([BETA]), "lr": torch.tensor([LR]),
           "weight_decay": torch.tensor([WD])}
    for name, t in P0.items():
        out["param." + name] = t
    for key in ["chosen", "rejected"]:
        flat, offs = [], [0]
        for p in pairs:
            flat += p[key]
            offs.append(len(flat))
        out[f"pairs.{key}"] = torch.tensor(flat, dtype=torch.int32)
        out[f"pairs.{key}_offsets"] = torch.tensor(offs, dtype=torch.int32)
    out["pairs.prompt_lens"] = torch.tensor([len(p["prompt"]) for p in pairs], dtype=torch.int32)
    out["steps.batches"] = torch.tensor(batches, dtype=torch.int32)

    reference = {k: v.clone() for k, v in P0.items()}  # frozen
    with torch.no_grad():
        allb = custom_collate_fn(pairs, allowed_max_length=MAX_LENGTH)
        out["reference.chosen"] = logprobs(reference, allb, "chosen")
        out["reference.rejected"] = logprobs(reference, allb, "rejected")

    P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
    opt = torch.optim.AdamW(list(P.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=WD)
    losses, cr, rr, pol = [], [], [], []
    for s, idx in enumerate(batches):
        batch = custom_collate_fn([pairs[i] for i in idx], allowed_max_length=MAX_LENGTH)
        opt.zero_grad()
        pc, pr = logprobs(P, batch, "chosen"), logprobs(P, batch, "rejected")
        with torch.no_grad():
            rc, rj = logprobs(reference, batch, "chosen"), logprobs(reference, batch, "rejected")
        loss, c_rew, r_rew = compute_dpo_loss(pc, pr, rc, rj)
        loss.backward()
        losses.append(loss.item())
        cr.append(c_rew.item())
        rr.append(r_rew.item())
        pol.append(torch.cat([pc, pr]).detach())
        if s in (0, S - 1):
            for name in P:
                out[f"grad{s}.{name}"] = P[name].grad.detach().clone()
        opt.step()
    out["steps.loss"] = torch.tensor(losses)
    out["steps.chosen_reward"] = torch.tensor(cr)
    out["steps.rejected_reward"] = torch.tensor(rr)
    out["steps.policy"] = torch.stack(pol)
    for name in P:
        out["after." + name] = P[name].detach().clone()

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "golden", "dpo_tiny.safetensors"))
    g.write_safetensors(path, out)
    print(f"wrote {path}: losses {losses}, chosen rewards {cr}, rejected rewards {rr}")


if __name__ == "__main__":
    sys.exit(main())
