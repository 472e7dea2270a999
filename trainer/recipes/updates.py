"""One optimizer step each: SFT and policy updates of G, scoring and updates of D.

All forwards go through micro-batches bounded by `micro_batch_tokens` padded tokens, with
each micro-batch's loss scaled by its share of the whole batch, so the accumulated
gradient is exactly the gradient of the batch's token-mean (or pair-mean) loss while peak
memory depends on the budget, not on batch_size.

Under FSDP every forward is a collective, so every rank runs as many micro-batches as the
rank that needs the most; the extra ones are zero-weighted repeats of a real row
(``MicroBatch.weight`` 0), which add nothing to any gradient or metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from trainer import distributed, fsdp, losses
from trainer.data import Example, token_budget_batches
from trainer.models import autocast, response_logprobs
from trainer.recipes.common import clip_and_step
from trainer.recipes.run import Run
from trainer.rollout import Rollout
from trainer.sequences import SeqBatch, pack


@dataclass
class MicroBatch:
    idx: list[int]  # rows of the update's lists
    batch: SeqBatch  # on the device
    tokens: int  # response tokens (from the host-side lists: weighting costs no sync)
    weight: float = 1.0  # 0 for a padding micro-batch (FSDP: the same count on every rank)


def _micro_batches(
    run: Run, prompts: list[list[int]], responses: list[list[int]]
) -> Iterator[MicroBatch]:
    """The update's rows in micro-batches within the token budget, padded to the count of
    the rank with the most (a no-op for one process)."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    groups = token_budget_batches(lengths, run.cfg.micro_batch_tokens)
    count = int(distributed.all_max(float(len(groups))))
    pad = [[0]] * (count - len(groups))  # repeats of the first row, weighted 0
    for n, idx in enumerate(groups + pad):
        sub = pack(
            [prompts[i] for i in idx], [responses[i] for i in idx], run.tokenizer.pad_token_id
        )
        real = n < len(groups)
        tokens = sum(len(responses[i]) for i in idx) if real else 0
        yield MicroBatch(idx, sub.to(run.device), tokens, 1.0 if real else 0.0)


def sample(run: Run, batch: list[Example]) -> Rollout:
    """group_size samples per prompt from the current student, prompt-major, each prompt's
    drawn from a seed of its own (the step and its place in the global batch)."""
    positions = distributed.global_positions(len(batch))
    seeds = [distributed.sample_seed(run.cfg.seed, run.step, p) for p in positions]
    return run.rollout.sample([ex.prompt_ids for ex in batch], run.cfg.group_size, seeds=seeds)


def teacher_answers(batch: list[Example]) -> list[list[int]]:
    """The teacher answers' ids: training examples are loaded with one each
    (`load_examples(need_teacher=True)`), so none is None."""
    return [cast("list[int]", ex.teacher_ids) for ex in batch]


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


# ---------------------------------------------------------------------------- generator


def sft_update(run: Run, batch: list[Example]) -> dict[str, Any]:
    """One G step on teacher answers: token-mean NLL, prompt tokens masked out."""
    prompts = [ex.prompt_ids for ex in batch]
    answers = teacher_answers(batch)
    total = _global_count(sum(len(a) for a in answers))
    loss_sum = torch.zeros((), device=run.device)
    with fsdp.forwards(run.student):
        for mb in _micro_batches(run, prompts, answers):
            with autocast(run.device, run.dtype):
                logp, _ = response_logprobs(run.student, mb.batch)
            loss = losses.sft_loss(logp, mb.batch.response_mask) * (mb.weight * mb.tokens / total)
            loss.backward()
            loss_sum += loss.detach()
    grad_norm = clip_and_step(run.student, run.g_opt, run.cfg.optim.grad_clip)
    run.rollout.sync_weights(run.student)
    mean_loss = distributed.all_sum(loss_sum).item()
    return {"g/sft_loss": mean_loss, "g/grad_norm": grad_norm, "g/lr": _lr(run.g_opt)}


def _global_count(local: int) -> int:
    """A count summed over data-parallel ranks (the local count for one process): losses
    are scaled by their share of the global batch, so summed gradients are exact."""
    return int(distributed.all_sum(torch.tensor(float(local), dtype=torch.float64)).item())


def policy_update(
    run: Run, prompts: list[list[int]], responses: list[list[int]], advantages: Tensor
) -> dict[str, Any]:
    """One G step: clipped policy loss + kl_coef * token-mean k3 KL to the reference, every
    log-prob and the entropy at the rollout's sampling temperature.

    On-policy (one step per rollout batch): old_logp is the detached current log-prob, so
    the ratio is 1 and no second forward is spent on it. advantages: [rows].
    """
    g = run.cfg.gad
    total = _global_count(sum(len(r) for r in responses))
    names = ["g/pg_loss", "g/entropy", "g/clip_frac"] + (["g/kl"] if g.kl_coef > 0 else [])
    # accumulated on the device: one host sync per step, not one per micro-batch
    sums = {k: torch.zeros((), device=run.device) for k in names}
    with fsdp.forwards(run.student, run.reference):
        for micro in _micro_batches(run, prompts, responses):
            share, mb = micro.weight * micro.tokens / total, micro.batch
            with autocast(run.device, run.dtype):
                # At the rollout's temperature: the samples were drawn from logits / T.
                logp, entropy = response_logprobs(
                    run.student, mb, want_entropy=True, temperature=run.cfg.temperature
                )
            adv = advantages[micro.idx].to(run.device)
            pg, stats = losses.policy_loss(
                logp, logp.detach(), adv, mb.response_mask, g.clip_low, g.clip_high, g.dual_clip
            )
            loss = pg
            if g.kl_coef > 0:
                assert run.reference is not None  # set when the GAD stage starts
                with torch.no_grad(), autocast(run.device, run.dtype):
                    ref_logp, _ = response_logprobs(
                        run.reference, mb, temperature=run.cfg.temperature
                    )
                kl = losses.masked_mean(losses.k3_kl(logp, ref_logp), mb.response_mask)
                loss = loss + g.kl_coef * kl
                sums["g/kl"] += kl.detach() * share
            (loss * share).backward()
            sums["g/pg_loss"] += pg.detach() * share
            sums["g/entropy"] += losses.masked_mean(entropy, mb.response_mask) * share
            sums["g/clip_frac"] += stats["clip_frac"] * share
    grad_norm = clip_and_step(run.student, run.g_opt, run.cfg.optim.grad_clip)
    run.rollout.sync_weights(run.student)
    summed = distributed.all_sum(torch.stack(list(sums.values()))).tolist()
    metrics = dict(zip(sums, summed, strict=True))
    return {**metrics, "g/grad_norm": grad_norm, "g/lr": _lr(run.g_opt)}


# ---------------------------------------------------------------------------- discriminator


def disc_rows(batch: list[Example], rollout: Rollout) -> tuple[list[list[int]], list[list[int]]]:
    """Teacher rows first (B), then the B*N student samples, prompt-major."""
    n = len(rollout.responses) // len(batch)
    prompts = [ex.prompt_ids for ex in batch] + [ex.prompt_ids for ex in batch for _ in range(n)]
    responses = teacher_answers(batch) + rollout.responses
    return prompts, responses


@torch.no_grad()
def score(
    run: Run, prompts: list[list[int]], responses: list[list[int]], update_follows: bool = False
) -> Tensor:
    """D's scores [rows] in eval mode without grad (rewards, metrics, cached for the update).

    ``update_follows``: D's update is next, so a sharded D stays as gathered as its last
    forward left it, and the update's first forward gathers nothing (a whole model with
    ``parallel.gather: model``); otherwise it is resharded here."""
    assert run.disc is not None  # GAD runs are built with_disc
    run.disc.eval()
    out = torch.empty(len(prompts), dtype=torch.float32)
    with fsdp.forwards(run.disc, keep_gathered=update_follows):
        try:
            for mb in _micro_batches(run, prompts, responses):
                with autocast(run.device, run.dtype):
                    scores = run.disc(mb.batch).float().cpu()
                if mb.weight:
                    out[mb.idx] = scores
        finally:
            run.disc.train()
    return out


def disc_loss_fn(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    return losses.bradley_terry_loss if name == "bradley_terry" else losses.cross_entropy_disc_loss


def disc_metrics(teacher: Tensor, student: Tensor, loss_name: str) -> dict[str, Any]:
    """teacher [B], student [B, N] scores of the not-yet-updated D."""
    return {
        "d/loss": disc_loss_fn(loss_name)(teacher, student).item(),
        "d/acc": losses.disc_accuracy(teacher, student).item(),
        "d/teacher_score": teacher.mean().item(),
        "d/student_score": student.mean().item(),
    }


def disc_update(
    run: Run, prompts: list[list[int]], responses: list[list[int]], cached: Tensor, n_prompts: int
) -> dict[str, Any]:
    """One D step from the scores already computed by `score` (no extra forward).

    The loss couples a teacher answer with its N samples, which may not fit one
    micro-batch; so dL/dscore is taken on the cached scores first, then each micro-batch
    backpropagates sum(score * dL/dscore). The cached scores are exactly what this
    forward recomputes (same weights, dropout off), so the gradient is exact.
    """
    assert run.disc is not None and run.d_opt is not None  # GAD runs are built with_disc
    teacher = cached[:n_prompts].clone().requires_grad_(True)
    student = cached[n_prompts:].view(n_prompts, -1).clone().requires_grad_(True)
    disc_loss_fn(run.cfg.disc.loss)(teacher, student).backward()
    # Data parallel: the global loss is the mean of the ranks' equal-sized shares.
    world = distributed.world().size
    assert teacher.grad is not None and student.grad is not None  # leaves of that backward
    score_grads = torch.cat([teacher.grad, student.grad.reshape(-1)]) / world
    with fsdp.forwards(run.disc):  # also frees what score kept gathered for this update
        for mb in _micro_batches(run, prompts, responses):
            with autocast(run.device, run.dtype):
                scores = run.disc(mb.batch)
            (scores * score_grads[mb.idx].to(scores.device) * mb.weight).sum().backward()
    grad_norm = clip_and_step(run.disc, run.d_opt, run.cfg.optim.grad_clip)
    return {"d/grad_norm": grad_norm, "d/lr": _lr(run.d_opt)}


# ---------------------------------------------------------------------------- lengths


def teacher_length_metrics(batch: list[Example]) -> dict[str, Any]:
    lengths = distributed.gather_list([len(a) for a in teacher_answers(batch)])
    return {"len/teacher_mean": sum(lengths) / len(lengths)}


def student_length_metrics(rollout: Rollout) -> dict[str, Any]:
    pairs = distributed.gather_list(list(zip(rollout.lengths, rollout.terminated, strict=True)))
    lengths = [n for n, _ in pairs]
    return {
        "len/student_mean": sum(lengths) / len(lengths),
        "len/student_max": max(lengths),
        "len/truncated_frac": 1.0 - sum(t for _, t in pairs) / len(lengths),
    }
