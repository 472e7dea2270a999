"""Small factories for team-owned objects (factories over fixture files)."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.dedup import norm_hash
from trainer.teacher import prompt_hash
from webapp.catalog.models import RegisteredModel
from webapp.jobs.models import Checkpoint, Job
from webapp.promptsets.models import Prompt, PromptSet

# A causal LM's config.json, as the memory planner reads it (a tiny Qwen2 shape).
TINY_CONFIG = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 4096, "tie_word_embeddings": True}  # fmt: skip


def make_prompt_set(team, n: int = 3, with_teacher: bool = True, name: str = "chat") -> PromptSet:
    prompt_set = PromptSet.objects.create(
        team=team,
        name=name,
        source_name=f"{name}.jsonl",
        num_prompts=n,
        num_with_teacher=n if with_teacher else 0,
    )
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set,
            index=i,
            line=i + 1,
            messages=[{"role": "user", "content": f"q{i}"}],
            text=f"user: q{i}",
            prompt_hash=prompt_hash([{"role": "user", "content": f"q{i}"}]),
            norm_hash=norm_hash(f"user: q{i}"),
            dup_group=i,
            teacher_response=f"a{i}" if with_teacher else None,
        )
        for i in range(n)
    )
    return prompt_set


def register_model(settings, path: Path, name: str = "tiny-student") -> str:
    """Register ``path`` as an administrator would (its directory becomes a model root);
    the reference a team uses for it."""
    root = str(Path(path).resolve().parent)
    if root not in settings.GAD_MODEL_ROOTS:
        settings.GAD_MODEL_ROOTS = [*settings.GAD_MODEL_ROOTS, root]
    RegisteredModel.objects.update_or_create(name=name, defaults={"path": str(path)})
    return f"model:{name}"


def make_job(team, prompt_set=None, status: str = "queued", **fields) -> Job:
    return Job.objects.create(
        team=team,
        name=fields.pop("name", "job"),
        method=fields.pop("method", "gad"),
        prompt_set=prompt_set,
        student="org/tiny-student",
        student_path="org/tiny-student",  # what launch resolves a hub id to
        status=status,
        config={"method": "gad", "save_every": 50},
        **fields,
    )


def make_checkpoint(job: Job, directory: Path, step: int = 50) -> Checkpoint:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG))
    (directory / "model.safetensors").write_bytes(b"\x01" * 1000)
    return Checkpoint.objects.create(
        job=job, step=step, stage="gad", path=str(directory), size_bytes=1016
    )
