"""Generative Adversarial Distillation (GAD.md "Training procedure").

Warmup: D learns teacher vs the current G's samples (alone for the first d_only_steps),
G does SFT on teacher answers. Adversarial stage, every step: sample N answers per prompt;
score them with D (eval, no grad) -> rewards -> group advantages; update D once; update G
once with the clipped policy loss + beta * KL to the warmed-up student.

The off-policy ablation (disc.update: frozen, the paper's Fig. 6): warmup is G's SFT only;
then a "disc" stage trains D on the fixed warmed-up student's samples; then the
adversarial stage updates G only, against the frozen D.

setup -> train -> save -> cleanup.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainer import checkpoint as ckpt_io
from trainer import distributed, fsdp
from trainer.config import TrainConfig
from trainer.data import Example
from trainer.losses import grpo_advantages
from trainer.metrics import MetricsSink
from trainer.models import as_reference, freeze, frozen_copy, load_reference, load_student
from trainer.recipes import samples, saving
from trainer.recipes.common import StepFn, train_to_end
from trainer.recipes.run import Run
from trainer.recipes.saving import load_weights, trainer_state
from trainer.recipes.setup import build_run
from trainer.recipes.updates import (
    disc_metrics,
    disc_rows,
    disc_update,
    policy_update,
    sample,
    score,
    sft_update,
    student_length_metrics,
    teacher_answers,
    teacher_length_metrics,
)
from trainer.rollout import Rollout


@dataclass
class Scored:
    """A rollout of the current G and the not-yet-updated D's scores of it."""

    rollout: Rollout
    rollout_s: float
    prompts: list[list[int]]  # D's rows: B teacher answers, then B*N samples
    responses: list[list[int]]
    scores: Tensor  # [B + B*N], the rows' scores (cached for D's update)
    teacher: Tensor  # [B]
    student: Tensor  # [B, N]


def _sample_and_score(run: Run, batch: list[Example], update_disc: bool) -> Scored:
    t0 = time.perf_counter()
    rollout = sample(run, batch)
    rollout_s = time.perf_counter() - t0
    prompts, responses = disc_rows(batch, rollout)
    scores = score(run, prompts, responses, update_follows=update_disc)
    teacher, student = scores[: len(batch)], scores[len(batch) :].view(len(batch), -1)
    return Scored(rollout, rollout_s, prompts, responses, scores, teacher, student)


def _gathered(s: Scored) -> tuple[Tensor, Tensor]:
    """Teacher [B] and student [B, N] scores of the whole batch (all data-parallel ranks)."""
    return distributed.gather(s.teacher), distributed.gather(s.student)


def _update_disc(run: Run, s: Scored) -> dict[str, Any]:
    return disc_update(run, s.prompts, s.responses, s.scores, n_prompts=len(s.teacher))


def _tokens(batch: list[Example], rollout: Rollout | None) -> int:
    """Tokens through the step's forwards (for perf/tokens_per_s)."""
    teacher = sum(len(ex.prompt_ids) for ex in batch) + sum(map(len, teacher_answers(batch)))
    n = len(rollout.responses) // len(batch) if rollout else 0
    student = sum(len(r) for r in rollout.responses) if rollout else 0
    return teacher + student + n * sum(len(ex.prompt_ids) for ex in batch)


def warmup_step(run: Run, batch: list[Example]) -> dict[str, Any]:
    cfg = run.cfg
    # The same in the off-policy ablation (the paper's): D learns here, then stops.
    train_d = cfg.warmup.discriminator
    # D alone for the first steps, so it is not random when G starts to move.
    train_g = cfg.warmup.generator and (not train_d or run.step >= cfg.warmup.d_only_steps)
    record = teacher_length_metrics(batch)
    rollout = None
    if train_d:
        s = _sample_and_score(run, batch, update_disc=True)
        rollout = s.rollout
        record |= {"perf/rollout_s": s.rollout_s, **student_length_metrics(rollout)}
        record |= disc_metrics(*_gathered(s), cfg.disc.loss)
        if samples.due(run):
            samples.log_samples(run, "warmup", batch, rollout, s.teacher, s.student)
        record |= _update_disc(run, s)
    if train_g:
        record |= sft_update(run, batch)
    record["_tokens"] = _tokens(batch, rollout)
    return record


def disc_step(run: Run, batch: list[Example]) -> dict[str, Any]:
    """The off-policy variant's extra D stage (``disc.frozen_epochs`` > 0, ours): D learns
    teacher vs the samples of a fixed student (the warmed-up G, which does not move)."""
    s = _sample_and_score(run, batch, update_disc=True)
    record = teacher_length_metrics(batch) | student_length_metrics(s.rollout)
    record |= {"perf/rollout_s": s.rollout_s}
    record |= disc_metrics(*_gathered(s), run.cfg.disc.loss)
    if samples.due(run):
        samples.log_samples(run, "disc", batch, s.rollout, s.teacher, s.student)
    record |= _update_disc(run, s)
    record["_tokens"] = _tokens(batch, s.rollout)
    return record


def adversarial_step(run: Run, batch: list[Example]) -> dict[str, Any]:
    cfg = run.cfg
    s = _sample_and_score(run, batch, update_disc=cfg.disc.update == "on_policy")
    # Rewards come from D *before* its update in this step (GAD.md pitfall 3).
    rewards = s.student
    advantages = grpo_advantages(rewards, std_norm=cfg.gad.std_norm)
    record = teacher_length_metrics(batch) | student_length_metrics(s.rollout)
    record |= {"perf/rollout_s": s.rollout_s}
    teacher, student = _gathered(s)  # the whole batch's scores, for metrics only
    record |= disc_metrics(teacher, student, cfg.disc.loss)
    record |= {"reward/mean": student.mean().item(), "reward/std": student.std().item()}
    if samples.due(run):
        samples.log_samples(run, "gad", batch, s.rollout, s.teacher, s.student, rewards, advantages)
    if cfg.disc.update == "on_policy":
        record |= _update_disc(run, s)
    g_prompts = [ex.prompt_ids for ex in batch for _ in range(cfg.group_size)]
    record |= policy_update(run, g_prompts, s.rollout.responses, advantages.reshape(-1))
    record["_tokens"] = _tokens(batch, s.rollout)
    return record


def start_adversarial_stage(run: Run) -> None:
    """G's optimizer goes on from the warmup at the GAD lr; the KL reference = the
    warmed-up student, now.

    The optimizer keeps its AdamW moments from the warmup's SFT, as the paper's reference
    scripts do (their GAD run resumes the warmup's checkpoint, optimizer state included);
    only its learning rate changes. A resume at this boundary loads the same state from
    the warmup's last checkpoint, so it takes the same path.

    The reference is saved (as the checkpoint of this step, marked to keep) so a resumed
    run reloads the same weights rather than the original model (GAD.md pitfalls 4, 5).
    """
    cfg = run.cfg
    for group in run.g_opt.param_groups:
        group["lr"] = cfg.gad.lr
    if cfg.gad.kl_coef > 0 and run.reference is None:
        run.reference = _reference_of(run, run.student)
    if run.reference_path is None and run.reference_step is None:
        if run.step == 0:  # no warmup: the starting student is the warmed-up one
            run.reference_path = cfg.student
        else:
            run.reference_step = run.step
            if run.last_saved_step == run.step:  # the warmup's last save: mark it kept
                mark_reference(run)
            else:
                saving.save(run)


def mark_reference(run: Run) -> None:
    """The checkpoint of this step holds the KL reference: keep it through retention,
    and record it in its state (a resume reloads the reference from it)."""
    if distributed.world().main:
        path = run.out_dir / "checkpoints" / f"step-{run.step}"
        ckpt_io.mark(path, "the KL reference of the adversarial stage")
        ckpt_io.write_state(path, trainer_state(run))
    distributed.barrier()


def _reference_of(run: Run, student: nn.Module, copy: bool = True) -> nn.Module:
    """A frozen ``student`` (a copy, or itself) in the compute dtype: LoRA merged for one
    process; under FSDP a second sharded model of its architecture, given its shards."""
    if not fsdp.is_sharded(student):
        return frozen_copy(student, run.dtype) if copy else as_reference(student, run.dtype)
    reference = _empty_sharded_like(run)
    fsdp.set_model_state(reference, fsdp.model_state(student))
    return reference


def _empty_sharded_like(run: Run) -> nn.Module:
    """A sharded model of the student's structure in the compute dtype, frozen, with the
    student's buffers and room for its weights (each rank builds it on the meta device:
    no rank reads the base model for it)."""
    cfg = run.cfg
    model = freeze(load_student(cfg.student, torch.device("meta"), lora=cfg.lora), run.dtype)
    fsdp.shard(model, run.dtype, cfg.parallel.cpu_offload)
    model.to_empty(device=next(run.student.parameters()).device)
    buffers = dict(run.student.named_buffers())
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return model


def _load_saved_reference(run: Run) -> None:
    """The reference of a resumed run: the warmed-up student from the DCP state of the
    checkpoint that marks it, or the base model when there was no warmup."""
    cfg = run.cfg
    if run.reference_step is not None:
        ckpt = run.out_dir / "checkpoints" / f"step-{run.reference_step}"
        if distributed.world().parallel:  # the checkpoint's fp32 shards, in the compute dtype
            run.reference = _empty_sharded_like(run)
            load_weights(ckpt, {"student": run.reference})
            return
        student = load_student(cfg.student, torch.device("cpu"), lora=cfg.lora)
        load_weights(ckpt, {"student": student})
        run.reference = _reference_of(run, student, copy=False).to(run.device)
        return
    path = run.reference_path
    assert path is not None  # load_models calls this only when one is set
    if not os.path.isabs(path) and (run.out_dir / path).exists():  # a pre-DCP checkpoint
        path = str(run.out_dir / path)
    if distributed.world().parallel:
        run.reference = fsdp.shard_from_rank0(
            lambda on: (
                load_reference(path, cfg.student, on, run.dtype)
                if on.type != "meta"
                else freeze(load_student(cfg.student, on), run.dtype)
            ),
            run.dtype,
            cfg.parallel.cpu_offload,
        )
    else:
        run.reference = load_reference(path, cfg.student, run.device, run.dtype)


def run_gad(cfg: TrainConfig, sink: MetricsSink | None = None) -> str:
    """Train; return how the run ended: finished, max_steps or stopped (SIGTERM)."""
    run, state = build_run(cfg, sink, with_disc=True)

    def load_models(run: Run) -> None:
        saved = run.reference_path is not None or run.reference_step is not None
        if saved and cfg.gad.kl_coef > 0:
            _load_saved_reference(run)

    def on_stage_start(run: Run, stage: str) -> None:
        if stage == "gad":
            start_adversarial_stage(run)

    steps: dict[str, StepFn] = {
        "warmup": warmup_step,
        "disc": disc_step,
        "gad": adversarial_step,
    }
    return train_to_end(run, state, steps, on_stage_start, load_models)
