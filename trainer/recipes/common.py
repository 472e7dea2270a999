"""What the SeqKD and GAD recipes share: data order, the optimizer step, the step loop.

The loop is stage -> epoch -> batch, one optimizer step (for G and/or D) per batch. The
position saved in a checkpoint is the *next* batch to run; with the per-epoch order a pure
function of (seed, stage, epoch), that position, the optimizers and the RNG states are all
a resume needs to continue exactly (GAD.md pitfall 5).
"""

from __future__ import annotations

import functools
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from trainer import checkpoint as ckpt_io
from trainer import distributed, fsdp
from trainer.config import TrainConfig, save_config
from trainer.data import Example
from trainer.recipes import saving
from trainer.recipes.run import Run, advance

# ---------------------------------------------------------------------------- setup helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, stage: int, epoch: int) -> list[int]:
    """Shuffled example order of one epoch; uses its own RNG so sampling can't shift it.
    Cached: the loop asks for it every step. Callers must not mutate the list."""
    order = list(range(n))
    random.Random(f"{seed}/{stage}/{epoch}").shuffle(order)
    return order


def write_run_files(cfg: TrainConfig, stats_summary: dict[str, Any]) -> None:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    (out / "data_stats.json").write_text(json.dumps(stats_summary, indent=2))


# ---------------------------------------------------------------------------- optimizer step


def clip_and_step(model: nn.Module, opt: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the global grad norm, step, zero grads; return the norm before clipping. Call
    it once the update's ``fsdp.forwards`` block is left (no unit of ``model`` gathered).

    Under FSDP the gradients are sharded DTensors, already summed over ranks by the
    reduce-scatter: their norm is the global one, and each rank clips and steps its shard.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    norm = fsdp.clip_grad_norm(params, max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


# ---------------------------------------------------------------------------- the loop

StepFn = Callable[[Run, list[Example]], dict[str, Any]]
# What signal.signal returns: a handler, SIG_DFL / SIG_IGN (ints), or None.
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class StopOnSigterm:
    """SIGTERM sets a flag: the current step finishes, a checkpoint is saved, exit 0."""

    def __init__(self, run: Run):
        self.run = run
        self.previous: SignalHandler = None

    def __enter__(self) -> StopOnSigterm:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.run.stop_requested = True

        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. embedded in a worker thread)
            self.previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _skip_empty_stages(run: Run) -> None:
    while run.pos.stage < len(run.plan) and run.plan[run.pos.stage][1] == 0:
        run.pos.stage += 1


def train_loop(
    run: Run,
    steps: dict[str, StepFn],
    on_stage_start: Callable[[Run, str], None] | None = None,
) -> str:
    """Run steps until the plan ends, max_steps, or SIGTERM; return why it ended."""
    cfg = run.cfg
    _skip_empty_stages(run)
    while run.pos.stage < len(run.plan):
        if cfg.max_steps is not None and run.step >= cfg.max_steps:
            return "max_steps"
        stage = run.plan[run.pos.stage][0]
        if run.pos.epoch == 0 and run.pos.batch == 0 and on_stage_start is not None:
            on_stage_start(run, stage)
        order = epoch_order(len(run.examples), cfg.seed, run.pos.stage, run.pos.epoch)
        start = run.pos.batch * cfg.batch_size
        end = min(start + cfg.batch_size, run.epoch_examples())
        batch = [run.examples[i] for i in order[start:end]]
        t0 = time.perf_counter()
        record = steps[stage](run, distributed.share(batch))
        run.step += 1
        advance(run)
        _skip_empty_stages(run)
        record["perf/step_s"] = time.perf_counter() - t0
        tokens = distributed.all_sum(torch.tensor(float(record.pop("_tokens", 0)))).item()
        record["perf/tokens_per_s"] = tokens / max(record["perf/step_s"], 1e-9)
        full = {"step": run.step, "stage": stage, "time": time.time(), **record}
        run.sink.metrics(full)
        if run.progress:
            run.progress.update(full)
        if run.step % cfg.save_every == 0:
            saving.save(run)
        # A SIGTERM reaches every rank, not always between the same two steps: stop together.
        if distributed.all_max(float(run.stop_requested)):
            run.stop_requested = True
            return "stopped"
    return "finished"


def finish(run: Run, reason: str) -> None:
    """Final checkpoint (unless this step is saved already) and, on SIGTERM, a last record."""
    if run.last_saved_step != run.step and run.step > 0:
        saving.save(run)
    if reason == "stopped":
        run.sink.metrics(
            {
                "step": run.step,
                "stage": run.stage,
                "time": time.time(),
                "event": "stopped",
                "reason": "SIGTERM: stopped after saving a checkpoint; resume continues it",
            }
        )
    if run.progress:
        run.progress.log(f"run {reason} at step {run.step}")


def train_to_end(
    run: Run,
    state: dict[str, Any] | None,
    steps: dict[str, StepFn],
    on_stage_start: Callable[[Run, str], None] | None = None,
    load_models: Callable[[Run], None] | None = None,
) -> str:
    """A recipe after its setup: train, save, and close the metrics sink and the progress
    bar however the run ends. Return how it ended: finished, max_steps or stopped (SIGTERM).

    ``load_models`` runs first, under the SIGTERM handler; then the RNG state of the
    checkpoint ``state`` is restored (if resuming), after every model load so that none
    can shift it.
    """
    try:
        with StopOnSigterm(run):
            if load_models is not None:
                load_models(run)
            if state is not None:
                ckpt_io.set_rng_state(state["rng"])
            reason = train_loop(run, steps, on_stage_start)
            finish(run, reason)
    finally:
        run.sink.close()
        if run.progress:
            run.progress.close()
    return reason
