"""samples.jsonl records: what the UI shows of a step (a few prompts, not the batch)."""

from __future__ import annotations

from torch import Tensor

from trainer import distributed
from trainer.data import Example
from trainer.recipes.run import Run
from trainer.rollout import Rollout

PROMPTS_PER_RECORD_STEP = 2


def due(run: Run) -> bool:
    """Whether the step being computed (run.step + 1) writes samples. True on every rank
    (a sample drawn only for the record is a collective under FSDP); rank 0 writes them,
    from its own share of the batch."""
    return (run.step + 1) % run.cfg.sample_every == 0


def log_samples(
    run: Run,
    stage: str,
    batch: list[Example],
    rollout: Rollout,
    teacher_scores: Tensor | None = None,
    student_scores: Tensor | None = None,
    rewards: Tensor | None = None,
    advantages: Tensor | None = None,
) -> None:
    """One record per shown prompt. Scores/rewards/advantages: [B], [B, N] tensors."""
    if not distributed.world().main:
        return
    tok = run.tokenizer
    n = len(rollout.responses) // len(batch)
    for b, ex in enumerate(batch[:PROMPTS_PER_RECORD_STEP]):
        rows = range(b * n, (b + 1) * n)
        record = {
            "step": run.step + 1,
            "stage": stage,
            "id": ex.id,
            "prompt": tok.decode(ex.prompt_ids, skip_special_tokens=False),
            "teacher": tok.decode(ex.teacher_ids or [], skip_special_tokens=True),
            "samples": [tok.decode(rollout.responses[i], skip_special_tokens=True) for i in rows],
            "sample_lengths": [len(rollout.responses[i]) for i in rows],
            "terminated": [rollout.terminated[i] for i in rows],
        }
        if teacher_scores is not None:
            record["teacher_score"] = float(teacher_scores[b])
        for key, values in (
            ("scores", student_scores),
            ("rewards", rewards),
            ("advantages", advantages),
        ):
            if values is not None:
                record[key] = [float(v) for v in values[b]]
        run.sink.samples(record)
