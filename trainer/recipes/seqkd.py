"""SeqKD baseline: supervised fine-tuning of the student on the teacher's answers.

setup -> train -> save -> cleanup.
"""

from __future__ import annotations

import time
from typing import Any

from trainer.config import TrainConfig
from trainer.data import Example
from trainer.metrics import MetricsSink
from trainer.recipes import samples
from trainer.recipes.common import train_to_end
from trainer.recipes.run import Run
from trainer.recipes.setup import build_run
from trainer.recipes.updates import sample, sft_update, teacher_answers, teacher_length_metrics


def seqkd_step(run: Run, batch: list[Example]) -> dict[str, Any]:
    record = teacher_length_metrics(batch)
    if samples.due(run):  # show what the student says now; not part of the update
        t0 = time.perf_counter()
        rollout = sample(run, batch[:1])
        record["perf/rollout_s"] = time.perf_counter() - t0
        samples.log_samples(run, "seqkd", batch[:1], rollout)
    record |= sft_update(run, batch)
    answers = teacher_answers(batch)
    record["_tokens"] = sum(len(ex.prompt_ids) for ex in batch) + sum(map(len, answers))
    return record


def run_seqkd(cfg: TrainConfig, sink: MetricsSink | None = None) -> str:
    """Train; return how the run ended: finished, max_steps or stopped (SIGTERM)."""
    run, state = build_run(cfg, sink, with_disc=False)
    return train_to_end(run, state, {"seqkd": seqkd_step})
