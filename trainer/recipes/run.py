"""A run's state: what a step needs (``Run``), the next batch (``Position``), and both set
back from a checkpoint (``restore``). Below the loop and the saving that use it, so that
neither needs the other to name it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import Example
from trainer.discriminator import Discriminator
from trainer.metrics import MetricsSink, Progress
from trainer.rollout import RolloutBackend


@dataclass
class Position:
    stage: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Run:
    """Everything a step needs; built by a recipe's setup, mutated by the loop."""

    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any
    examples: list[Example]
    student: nn.Module
    g_opt: torch.optim.Optimizer
    sink: MetricsSink
    rollout: RolloutBackend
    plan: list[tuple[str, int]]  # (stage name, epochs)
    disc: Discriminator | None = None
    d_opt: torch.optim.Optimizer | None = None
    reference: nn.Module | None = None
    reference_path: str | None = None  # the base model, when there was no warmup
    reference_step: int | None = None  # else the checkpoint that holds the warmed-up G
    step: int = 0
    pos: Position = field(default_factory=Position)
    stop_requested: bool = False
    progress: Progress | None = None
    last_saved_step: int = -1

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def stage(self) -> str:
        return self.plan[min(self.pos.stage, len(self.plan) - 1)][0]

    def epoch_examples(self) -> int:
        """Examples used per epoch. With data parallelism a batch must split evenly over
        the ranks, so a short last batch is cut to a multiple of the world size (at most
        world size - 1 examples, different ones each epoch, since the order is shuffled)."""
        n, world = len(self.examples), distributed.world().size
        return n - (n % self.cfg.batch_size) % world

    def steps_per_epoch(self) -> int:
        return math.ceil(self.epoch_examples() / self.cfg.batch_size)

    def total_steps(self) -> int:
        total = sum(epochs for _, epochs in self.plan) * self.steps_per_epoch()
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total


def advance(run: Run) -> None:
    """Move the position to the next batch (epoch, stage)."""
    run.pos.batch += 1
    if run.pos.batch >= run.steps_per_epoch():
        run.pos.batch, run.pos.epoch = 0, run.pos.epoch + 1
    if run.pos.stage < len(run.plan) and run.pos.epoch >= run.plan[run.pos.stage][1]:
        run.pos.epoch, run.pos.stage = 0, run.pos.stage + 1


def restore(run: Run, state: dict[str, Any]) -> None:
    """Position, step and the KL reference from a checkpoint's ``trainer_state.pt`` (the
    weights and optimizers come from its DCP state; RNG is restored last, by the loop)."""
    run.step = state["step"]
    run.pos = Position(**state["position"])
    run.reference_path = state.get("reference_path")
    run.reference_step = state.get("reference_step")
    run.last_saved_step = run.step
    if run.pos.batch >= run.steps_per_epoch():
        # Saved at an epoch's short last batch, which this number of processes cuts
        # (trainer.distributed): that epoch is over; go on with the next.
        run.pos.batch = run.steps_per_epoch() - 1
        advance(run)
