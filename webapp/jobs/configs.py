"""A job's trainer configs, built and validated the same way for the launch form, the API
and the demo: ``trainer.config`` is the one source of truth for keys, defaults and
limits."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from trainer import config as trainer_config
from trainer import plan as trainer_plan
from trainer.errors import BadInput
from webapp.jobs import references
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.models import Team

# Keys the launch form sets itself (or the worker does), not the user.
MANAGED_KEYS = {"method", "student", "train_file", "output_dir", "resume", "discriminator"}
# Placeholders the worker replaces with the job's exported prompts and work dir.
PLACEHOLDERS = {"train_file": "prompts.jsonl", "output_dir": "run"}


def teacher_problem(prompt_set: PromptSet | None, teacher: TeacherEndpoint | None) -> str | None:
    """Why a teacher is needed, when some training prompts have no answer yet."""
    if prompt_set is None or teacher is not None:
        return None
    missing = prompt_set.prompts.filter(split="train", teacher_response__isnull=True).count()
    if not missing:
        return None
    return (
        f"{missing:,} of {prompt_set.num_train:,} training prompts have no teacher answer; "
        "choose a teacher endpoint to collect them."
    )


def build_configs(
    team: Team, method: str, student: str, overrides: dict[str, Any], gpus: int = 0
) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """The validated trainer config of each job to create (two for a pair), or the errors.

    ``student`` must be a model reference the team may use (``webapp.jobs.references``).
    ``overrides`` is a nested mapping of config keys; the managed keys are set here.
    With ``gpus`` > 1 the job trains data parallel, one process per GPU, which the
    config must allow (``trainer.config.parallel_problems``).
    """
    managed = sorted(MANAGED_KEYS & set(overrides))
    if managed:
        return {}, [(k, f"{k}: is set by GAD Studio, not in the job's config") for k in managed]
    try:
        student = references.check(student, team)
    except references.InvalidReference as refused:
        return {}, [("student", str(refused))]
    methods = ["gad", "seqkd"] if method == "pair" else [method]
    configs: dict[str, dict] = {}
    errors: list[tuple[str, str]] = []
    for one in methods:
        raw = {**overrides, **PLACEHOLDERS, "method": one, "student": student}
        cfg, problems = trainer_config.validate_dict(raw)
        if cfg is not None:
            problems += trainer_config.parallel_problems(cfg, gpus)
            problems += _memory_problems(team, cfg, gpus)
        errors += [p for p in problems if p not in errors]
        if cfg is not None:
            configs[one] = trainer_config.to_dict(cfg)
    return configs, errors


def memory_plan(team: Team, config: dict[str, Any], gpus: int) -> trainer_plan.Plan | None:
    """The per-GPU memory plan of a GPU job (``trainer.plan``) on ``gpus`` GPUs per node
    of ``GAD_GPU_MEMORY_GB``; None for a CPU job or a student whose shape is unknown here."""
    if gpus <= 0:
        return None
    try:
        cfg = trainer_config.from_dict(config)
        student = references.resolve(cfg.student, team)
        shape = trainer_plan.model_shape(student)
    except (BadInput, references.InvalidReference, trainer_plan.UnknownModel):
        return None
    return trainer_plan.plan(cfg, cfg.nodes, gpus, settings.GAD_GPU_MEMORY_GB, shape=shape)


def _memory_problems(
    team: Team, cfg: trainer_config.TrainConfig, gpus: int
) -> list[tuple[str, str]]:
    result = memory_plan(team, trainer_config.to_dict(cfg), gpus)
    if result is None or result.fits:
        return []
    return [
        (
            "gpus",
            f"gpus: {cfg.method} does not fit in GPU memory: {result.peak_gb:.1f} GB per GPU "
            f"of {result.gpu_memory_gb:g} GB on {result.nodes} node(s) x {gpus} GPU(s); "
            f"{result.advice} (python -m trainer plan shows each part)",
        )
    ]
