"""A job's trainer configs, built and validated the same way for the launch form, the API
and the demo: ``trainer.config`` is the one source of truth for keys, defaults and
limits."""

from __future__ import annotations

from typing import Any

from trainer import config as trainer_config
from webapp.catalog import references
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

    ``student`` must be a model reference the team may use (``webapp.catalog.references``).
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
        errors += [p for p in problems if p not in errors]
        if cfg is not None:
            configs[one] = trainer_config.to_dict(cfg)
    return configs, errors
