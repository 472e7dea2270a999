"""Building a Run: resume lookup, data, models, optimizers, sampler, sink."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from trainer import checkpoint as ckpt_io
from trainer import distributed, fsdp
from trainer import plan as planner
from trainer.config import TrainConfig, parallel_problems, to_dict
from trainer.data import EncodeStats, Example, load_examples
from trainer.discriminator import HEAD_FILE, Discriminator, build_discriminator
from trainer.errors import BadInput
from trainer.metrics import FanOut, JsonlSink, MetricsSink, NullSink, Progress, truncate_after
from trainer.models import load_student, load_tokenizer, resolve_device, resolve_dtype
from trainer.recipes.common import make_optimizer, seed_everything, write_run_files
from trainer.recipes.run import Run, restore
from trainer.recipes.saving import load_optimizers, load_weights
from trainer.rollout import RolloutBackend, SamplingSettings, make_backend


def stage_plan(cfg: TrainConfig) -> list[tuple[str, int]]:
    """The stages and their epochs. GAD: warmup (G's SFT with D on its samples), then the
    adversarial stage. The off-policy ablation (``disc.update: frozen``, the paper's Fig. 6)
    has the same warmup, then runs G's RL against D frozen; ``disc.frozen_epochs`` > 0, a
    variant of ours, adds epochs of D alone on the warmed-up student's samples ("disc")
    before it is frozen."""
    if cfg.method == "seqkd":
        return [("seqkd", cfg.seqkd.epochs)]
    warm = cfg.warmup.epochs if (cfg.warmup.generator or cfg.warmup.discriminator) else 0
    if cfg.disc.update == "frozen" and cfg.disc.frozen_epochs:
        return [("warmup", warm), ("disc", cfg.disc.frozen_epochs), ("gad", cfg.gad.epochs)]
    return [("warmup", warm), ("gad", cfg.gad.epochs)]


def stage_lr(cfg: TrainConfig, stage: str) -> float:
    """The generator's learning rate in a stage (it does not move in "disc")."""
    lrs = {"seqkd": cfg.seqkd.lr, "warmup": cfg.warmup.lr, "disc": cfg.warmup.lr}
    return lrs.get(stage, cfg.gad.lr)


def _discriminator(cfg: TrainConfig, device: torch.device) -> Discriminator:
    """D with a new head on the student's starting weights (or ``discriminator``); a
    resume then loads its trained weights from the checkpoint's DCP state."""
    return build_discriminator(
        cfg.discriminator or cfg.student,
        device,
        lora=cfg.lora,
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
        base_model=cfg.student,
    )


def _student(
    cfg: TrainConfig,
    world: distributed.World,
    device: torch.device,
    dtype: torch.dtype,
    keep: bool,
) -> nn.Module:
    """One process: the student on its device. Several: sharded with FSDP2 (fp32 master
    shards, compute in ``dtype``, fp32 reduction), its weights read by rank 0 only."""

    def build(on: torch.device) -> nn.Module:
        return load_student(
            cfg.student, on, lora=cfg.lora, gradient_checkpointing=cfg.gradient_checkpointing
        )

    if not world.parallel:
        return build(device)
    return fsdp.shard_from_rank0(build, dtype, cfg.parallel.cpu_offload, keep_gathered=keep)


def _keeps_gathered(cfg: TrainConfig, world: distributed.World, device: torch.device) -> bool:
    """``parallel.gather`` for this run: 'auto' asks the planner whether G kept whole
    from a forward to its backward fits the memory of the process with the least (its
    GPU's, or its share of its host's on a CPU). A collective when sharded: every rank
    must make the same choice, or their gathers would not match."""
    if not world.parallel:
        return False
    if device.type == "cuda":
        memory = float(torch.cuda.get_device_properties(device).total_memory)
    else:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // per_node)
    least = -distributed.all_max(-memory)
    return planner.keeps_gathered(cfg, world.size, least / planner.GIB, device.type)


def _sharded_discriminator(
    cfg: TrainConfig,
    world: distributed.World,
    device: torch.device,
    dtype: torch.dtype,
    keep: bool,
) -> Discriminator:
    """D like the student; a saved discriminator (``discriminator: DIR``) is read by
    every rank, then sharded."""
    if not world.parallel:
        return _discriminator(cfg, device)

    def head(model: nn.Module) -> tuple[nn.Module, ...]:
        return (cast(Discriminator, model).head,)

    init = cfg.discriminator or cfg.student
    if Path(init, HEAD_FILE).exists():
        disc = _discriminator(cfg, torch.device("cpu"))
        fsdp.shard(disc, dtype, cfg.parallel.cpu_offload, (disc.head,), keep)
        return disc
    built = fsdp.shard_from_rank0(
        lambda on: _discriminator(cfg, on), dtype, cfg.parallel.cpu_offload, head, keep
    )
    return cast(Discriminator, built)


def _sink(cfg: TrainConfig) -> MetricsSink:
    """metrics.jsonl, and the trackers ``report_to`` names (rank 0 only)."""
    if not cfg.report_to:
        return JsonlSink(cfg.output_dir)
    from trainer import trackers

    extra = trackers.make(cfg.report_to, cfg.output_dir, to_dict(cfg))
    return FanOut([JsonlSink(cfg.output_dir), *extra])


def check_parallel(cfg: TrainConfig, world: distributed.World) -> None:
    """What data parallelism needs of a config; names the key and what to do."""
    problems = parallel_problems(cfg, world.size)
    if problems:
        raise BadInput(problems[0][1])


def build_run(
    cfg: TrainConfig, sink: MetricsSink | None, with_disc: bool
) -> tuple[Run, dict[str, Any] | None]:
    """Everything but the loop; returns the run and the checkpoint state it resumes from."""
    ckpt, state = _resume_state(cfg)
    world, device, dtype = _process(cfg)
    tokenizer, examples, stats = _data(cfg, world)
    keep = _keeps_gathered(cfg, world, device)
    student, disc = _models(cfg, world, device, dtype, keep, with_disc, ckpt)
    plan = stage_plan(cfg)
    g_opt, d_opt = _optimizers(cfg, plan, state, student, disc)
    rollout = _sampler(cfg, student, tokenizer, device, dtype)
    run = Run(
        cfg=cfg,
        device=device,
        dtype=dtype,
        tokenizer=tokenizer,
        examples=examples,
        student=student,
        g_opt=g_opt,
        sink=_run_sink(cfg, world, sink, state),
        rollout=rollout,
        plan=plan,
        disc=disc,
        d_opt=d_opt,
    )
    if state is not None:
        assert ckpt is not None
        restore(run, state)
        load_optimizers(run, ckpt, state)
    _check_shares(run, world)
    if world.main:  # rank 0 reports for everyone
        _announce(run, world, stats, keep, ckpt)
    return run, state


def _resume_state(cfg: TrainConfig) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint this run resumes from and its trainer state (None, None: a new
    run), once the partial checkpoints an earlier run left are removed."""
    # Rank 0 only (torchrun's RANK: the process group is not up yet), before any save.
    if os.environ.get("RANK", "0") == "0":
        for partial in ckpt_io.remove_partial(cfg.output_dir):
            print(f"removed the partial checkpoint {partial} left by an earlier run", flush=True)
    ckpt = ckpt_io.resolve_resume(cfg.resume, cfg.output_dir)
    state = ckpt_io.load_state(ckpt) if ckpt else None
    if state is not None and state["config"].get("method") != cfg.method:
        raise BadInput(
            f"resume: checkpoint {ckpt} is from a {state['config'].get('method')} run, this "
            f"config is method: {cfg.method}; use another output_dir or resume: never"
        )
    return ckpt, state


def _process(cfg: TrainConfig) -> tuple[distributed.World, torch.device, torch.dtype]:
    """This process's group (none for one process), device and compute dtype; seeded."""
    world = distributed.init(cfg.device)
    check_parallel(cfg, world)
    seed_everything(cfg.seed)
    device = distributed.device_for(resolve_device(cfg.device))
    return world, device, resolve_dtype(cfg.dtype, device)


def _data(cfg: TrainConfig, world: distributed.World) -> tuple[Any, list[Example], EncodeStats]:
    """The tokenizer and the training examples; rank 0 writes the run's config and the
    data's statistics beside them."""
    tokenizer = load_tokenizer(cfg.student)
    examples, stats = load_examples(
        cfg.train_file, tokenizer, cfg.max_prompt_tokens, cfg.max_response_tokens
    )
    if world.main:
        write_run_files(cfg, dataclasses.asdict(stats))
    return tokenizer, examples, stats


def _models(
    cfg: TrainConfig,
    world: distributed.World,
    device: torch.device,
    dtype: torch.dtype,
    keep: bool,
    with_disc: bool,
    ckpt: Path | None,
) -> tuple[nn.Module, Discriminator | None]:
    """G and (``with_disc``) D, sharded under torchrun, with a resumed run's weights."""
    student = _student(cfg, world, device, dtype, keep)
    disc = _sharded_discriminator(cfg, world, device, dtype, keep) if with_disc else None
    if ckpt is not None:
        load_weights(ckpt, {"student": student} | ({"disc": disc} if disc is not None else {}))
    return student, disc


def _optimizers(
    cfg: TrainConfig,
    plan: list[tuple[str, int]],
    state: dict[str, Any] | None,
    student: nn.Module,
    disc: Discriminator | None,
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """G's optimizer at the learning rate of the stage the run starts (or resumes) in,
    and D's; a resumed run loads their states once the run is built."""
    position_stage = min(state["position"]["stage"], len(plan) - 1) if state else 0
    stage = plan[position_stage][0]
    g_opt = make_optimizer(student, stage_lr(cfg, stage), cfg.optim.weight_decay)
    d_opt = None
    if disc is not None:
        d_opt = make_optimizer(disc, cfg.disc.lr, cfg.optim.weight_decay)
    return g_opt, d_opt


def _sampler(
    cfg: TrainConfig, student: nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype
) -> RolloutBackend:
    """G's sampler (``rollout.backend``) at the run's sampling settings."""
    settings = SamplingSettings(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_response_tokens,
        batch_size=cfg.rollout.generation_batch_size,
        device=device,
        dtype=dtype,
        seed=cfg.seed,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        tensor_parallel_size=cfg.rollout.tensor_parallel_size,
        max_model_len=cfg.max_prompt_tokens + cfg.max_response_tokens,
    )
    return make_backend(cfg.rollout.backend, student, tokenizer, settings)


def _run_sink(
    cfg: TrainConfig,
    world: distributed.World,
    sink: MetricsSink | None,
    state: dict[str, Any] | None,
) -> MetricsSink:
    """The caller's sink or the configured ones on rank 0 (the others record nothing)."""
    if state is not None and world.main:  # records after the checkpoint are replayed
        truncate_after(cfg.output_dir, state["step"])
    if not world.main:
        return NullSink()
    return sink if sink is not None else _sink(cfg)


def _check_shares(run: Run, world: distributed.World) -> None:
    if world.parallel and run.epoch_examples() == 0:
        raise BadInput(
            f"train_file: {len(run.examples)} examples cannot be shared over {world.size} "
            "processes (each needs at least one per batch); train on fewer GPUs"
        )


def _announce(
    run: Run, world: distributed.World, stats: EncodeStats, keep: bool, ckpt: Path | None
) -> None:
    """Rank 0: the progress bar, progress.json and the log lines that open a run."""
    cfg = run.cfg
    run.progress = Progress(run.total_steps(), initial=run.step)
    _write_progress(run)
    run.progress.log(f"data: {stats.summary()}")
    if world.parallel:
        run.progress.log(
            f"data parallel: {world.size} processes, {cfg.batch_size // world.size} prompts "
            f"each per step, {run.epoch_examples()} of {len(run.examples)} examples per epoch; "
            f"FSDP2 parallel.gather: {'model' if keep else 'layer'}"
        )
    if ckpt is not None:
        run.progress.log(f"resuming from {ckpt} at step {run.step}")


def _write_progress(run: Run) -> None:
    """Tells a reader of the run directory (the worker) where this attempt starts and ends."""
    progress = {"start_step": run.step, "total_steps": run.total_steps(), "time": time.time()}
    tmp = run.out_dir / f".progress-{os.getpid()}.json"
    tmp.write_text(json.dumps(progress))
    os.replace(tmp, run.out_dir / "progress.json")  # a reader never sees half
