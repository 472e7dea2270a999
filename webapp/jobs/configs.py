"""A job's trainer configs, built and validated the same way for the launch form, the API
and the demo: ``trainer.config`` is the one source of truth for keys, defaults and
limits.

What a launch builds is a ``JobSpec``: the job's shape (nodes × GPUs per node, written
into each config as ``nodes`` and ``gpus_per_node``) and its student, resolved once
(``webapp.jobs.references``) and stored with the job. Pages show what was stored; the
worker checks it again before it loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from trainer import config as trainer_config
from trainer import plan as trainer_plan
from trainer.errors import BadInput
from webapp.jobs import references
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.models import Team

# Keys the launch sets itself (or the worker does), not the user: the student and the
# GPUs per node come from their own fields, the files and resume from the worker.
MANAGED_KEYS = {
    "method",
    "student",
    "train_file",
    "output_dir",
    "resume",
    "discriminator",
    "gpus_per_node",
}
MANAGED_BY = {
    "student": "the job's student field",
    "gpus_per_node": "the job's gpus field (GPUs per node)",
}
# Placeholders the worker replaces with the job's exported prompts and work dir.
PLACEHOLDERS = {"train_file": "prompts.jsonl", "output_dir": "run"}


@dataclass(frozen=True)
class JobSpec:
    """What a launch creates a job (or a GAD + SeqKD pair) from."""

    student: str  # the reference as given: a hub id, checkpoint:ID or model:NAME
    student_path: str  # what it resolved to at launch: what the trainer loads
    student_bytes: int  # a hub student's size (its model files); 0 otherwise
    nodes: int
    gpus_per_node: int  # 0: the CPU
    configs: dict[str, dict]  # method -> validated trainer config; two for a pair
    # The config sets keep_last or keep_weights: the job's own retention, not the team's.
    own_retention: bool = False

    @property
    def processes(self) -> int:
        """Trainer processes in all: one per GPU, or one on the CPU."""
        return self.nodes * max(self.gpus_per_node, 1)


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
) -> tuple[JobSpec | None, list[tuple[str, str]]]:
    """The job's spec, or every problem found (key, message): all of them at once, so a
    bad student does not hide a bad ``group_size``.

    ``student`` must be a model reference the team may use (``webapp.jobs.references``).
    ``overrides`` is a nested mapping of config keys; the managed keys are set here.
    ``gpus`` is the GPUs per node; the config's ``nodes`` says how many nodes. With more
    than one process in all the job trains data parallel, which the config must allow
    (``trainer.config.parallel_problems``) over every node's processes.
    """
    errors = [
        (key, f"{key}: is set by {MANAGED_BY.get(key, 'GAD Studio')}, not in the job's config")
        for key in sorted(MANAGED_KEYS & set(overrides))
    ]
    overrides = {k: v for k, v in overrides.items() if k not in MANAGED_KEYS}
    student = student.strip()
    student_path, student_bytes, student_model, problem = _student(team, student)
    if problem:
        errors.append(("student", problem))
    methods = ["gad", "seqkd"] if method == "pair" else [method]
    configs: dict[str, dict] = {}
    for one in methods:
        raw = {
            **overrides,
            **PLACEHOLDERS,
            "method": one,
            "student": student,
            "gpus_per_node": gpus,
        }
        cfg, problems = trainer_config.validate_dict(raw)
        if cfg is not None:
            problems += _shape_problems(cfg)
            if student_path is not None:
                problems += _memory_problems(cfg, student_path, student_model)
        errors += [p for p in problems if p not in errors]
        if cfg is not None:
            configs[one] = trainer_config.to_dict(cfg)
    if errors or student_path is None:
        return None, errors
    first = next(iter(configs.values()))
    own_retention = bool({"keep_last", "keep_weights"} & set(overrides))
    spec = JobSpec(
        student, student_path, student_bytes, int(first["nodes"]), gpus, configs, own_retention
    )
    return spec, []


def _student(team: Team, ref: str) -> tuple[str | None, int, dict[str, Any] | None, str]:
    """The student resolved (None when refused), a hub student's size and config.json,
    and why it is refused ("" when it is not)."""
    try:
        path = references.resolve(ref, team)
        found = references.hub_model(ref, team)
    except (references.InvalidReference, references.HubRefused) as refused:
        return None, 0, None, str(refused)
    if found is None:
        return path, 0, None, ""
    full = references.hub_storage_problem(team, found)
    if full:
        return None, 0, None, f"student: {full}"
    return path, found.size_bytes, found.config, ""


def _shape_problems(cfg: trainer_config.TrainConfig) -> list[tuple[str, str]]:
    """What the job's shape asks of the config: one node on the CPU, and a batch that
    splits over every process of every node."""
    if cfg.gpus_per_node == 0 and cfg.nodes > 1:
        return [
            (
                "nodes",
                f"nodes: a job on the CPU runs on one node (got {cfg.nodes}); give it GPUs "
                "to span nodes, or set nodes: 1",
            )
        ]
    return trainer_config.parallel_problems(cfg, cfg.nodes * max(cfg.gpus_per_node, 1))


def memory_plan(
    config: dict[str, Any], student_path: str, student_model: dict[str, Any] | None = None
) -> trainer_plan.Plan | None:
    """The per-GPU memory plan (``trainer.plan``) of a GPU job's config, on its nodes ×
    GPUs per node of ``GAD_GPU_MEMORY_GB``, for the student it resolved to (a hub
    student's shape from its config.json, ``student_model``); None for a CPU job. Raises
    UnknownModel, with the reason, for a student whose shape cannot be read here."""
    cfg = trainer_config.from_dict(config)
    if cfg.gpus_per_node <= 0:
        return None
    if student_model is not None:
        try:
            shape = trainer_plan.Shape.from_config(student_model)
        except (KeyError, TypeError, ValueError) as e:
            raise trainer_plan.UnknownModel(
                f"its config.json is not a causal LM config the planner reads ({e!r} missing "
                "or malformed)"
            ) from e
    else:
        shape = trainer_plan.model_shape(student_path)
    return trainer_plan.plan(
        cfg, cfg.nodes, cfg.gpus_per_node, settings.GAD_GPU_MEMORY_GB, shape=shape
    )


def job_plan(job) -> trainer_plan.Plan | None:
    """A job's memory plan, from what its launch stored (its config and resolved
    student); None for a job stored before they were, or one whose config no longer
    validates."""
    if not job.student_path:
        return None
    try:
        return memory_plan(job.config, job.student_path)
    except (BadInput, trainer_plan.UnknownModel):
        return None


def _memory_problems(
    cfg: trainer_config.TrainConfig, student_path: str, student_model: dict[str, Any] | None
) -> list[tuple[str, str]]:
    try:
        result = memory_plan(trainer_config.to_dict(cfg), student_path, student_model)
    except trainer_plan.UnknownModel as unknown:
        # A GPU job whose memory cannot be planned would find out on the GPU, by running
        # out of it: refuse it here, with the reason.
        why = str(unknown)
        if student_model is None and trainer_plan.is_repo_id(student_path):
            why = (
                f"the Hub repository {student_path!r} has no config.json (the site looked "
                "it up), and it is not one of the models the planner knows by heart"
            )
        return [
            ("student", f"student: a GPU job needs the memory planner to read its shape: {why}")
        ]
    if result is None or result.fits:
        return []
    return [
        (
            "gpus",
            f"gpus: {cfg.method} does not fit in GPU memory: {result.peak_gb:.1f} GB per GPU "
            f"of {result.gpu_memory_gb:g} GB on {result.nodes} node(s) x "
            f"{cfg.gpus_per_node} GPU(s); {result.advice} (python -m trainer plan shows "
            "each part)",
        )
    ]
