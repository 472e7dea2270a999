"""What a job will cost before it is launched: the teacher tokens still to buy (answers
already in the prompt set or cached for this teacher subtracted) and their price, and
the GPU-hours (a stated rough figure: trainer.plan.rough_gpu_hours)."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg
from django.db.models.functions import Length

from trainer import config as trainer_config
from trainer import plan as trainer_plan
from trainer.pricing import Usage, dollars
from trainer.teacher import prompt_tokens_estimate
from webapp.promptsets.models import Prompt, Split, TeacherAnswer
from webapp.teachers.models import TeacherEndpoint

CHARS_PER_TOKEN = 4  # the usual rule of thumb, as trainer.teacher.prompt_tokens_estimate


def teacher_cost(prompt_set, teacher: TeacherEndpoint | None) -> dict[str, Any]:
    """Tokens and dollars to collect the training answers the prompt set lacks."""
    rows = Prompt.objects.filter(prompt_set=prompt_set, split=Split.TRAIN)
    missing = list(
        rows.filter(teacher_response__isnull=True).values_list("prompt_hash", "messages")
    )
    found: dict[str, Any] = {"prompts": rows.count(), "to_ask": 0, "cached": 0}
    found |= {"tokens": None, "cost_usd": None}
    found |= {"at_most_usd": None, "prices_from": "", "summary": "every answer is in the set"}
    if not missing:
        return found
    if teacher is None:
        found["summary"] = "the set lacks answers and the job has no teacher"
        return found
    cached = set(
        TeacherAnswer.objects.filter(
            fingerprint=teacher.fingerprint,
            prompt_hash__in=[h for h, _ in missing],
        )
        .exclude(flag="error")
        .values_list("prompt_hash", flat=True)
    )
    to_ask = [m for h, m in missing if h not in cached]
    budget = teacher.sampling().max_tokens
    prompt_tokens = sum(prompt_tokens_estimate(m) for m in to_ask)
    # Answers this teacher gave before say how long they run; else the budget bounds it.
    seen = TeacherAnswer.objects.filter(fingerprint=teacher.fingerprint, flag="ok")
    chars = seen.aggregate(mean=Avg(Length("response")))["mean"]
    typical = chars / CHARS_PER_TOKEN if chars else None
    completion = int(len(to_ask) * min(budget or 1024, typical or budget or 1024))
    found |= {"to_ask": len(to_ask), "cached": len(missing) - len(to_ask)}
    found["tokens"] = {"prompt": prompt_tokens, "completion": completion}
    prices, source = teacher.prices()
    found["prices_from"] = source
    if prices is not None:
        found["cost_usd"] = str(prices.cost(Usage(prompt_tokens, completion)))
        worst = Usage(prompt_tokens, len(to_ask) * (budget or 1024))
        found["at_most_usd"] = str(prices.cost(worst))
    basis = "from this teacher's earlier answers" if typical else "at the answer budget"
    price = (
        f"about {dollars(prices.cost(Usage(prompt_tokens, completion)))} ({source})"
        if prices is not None
        else "no price set for the endpoint or its model"
    )
    found["summary"] = (
        f"{len(to_ask):,} answers to buy ({found['cached']:,} cached): about "
        f"{prompt_tokens + completion:,} tokens ({basis}); {price}"
    )
    return found


def gpu_cost(config: dict[str, Any], student_path: str, prompt_set) -> dict[str, Any]:
    """A rough GPU-hours figure for one job's config, or why there is none."""
    cfg = trainer_config.from_dict(config)
    if cfg.gpus_per_node <= 0:
        return {"gpu_hours": 0, "basis": "runs on the CPU: no GPU-hours"}
    try:
        shape = trainer_plan.model_shape(student_path)
    except trainer_plan.UnknownModel as unknown:
        return {"gpu_hours": None, "basis": f"no estimate: {unknown}"}
    rows = Prompt.objects.filter(prompt_set=prompt_set, split=Split.TRAIN)
    count = rows.count()
    sample = list(rows.values_list("messages", "teacher_response")[:500])
    prompt_tokens = (
        sum(prompt_tokens_estimate(m) for m, _ in sample) / len(sample) if sample else 0.0
    )
    answers = [len(t) / CHARS_PER_TOKEN for _, t in sample if t]
    answer_tokens = min(
        cfg.max_response_tokens, sum(answers) / len(answers) if answers else cfg.max_response_tokens
    )
    estimate = trainer_plan.rough_gpu_hours(
        cfg, shape, count, min(prompt_tokens, cfg.max_prompt_tokens), answer_tokens
    )
    return estimate


def launch_estimate(spec, prompt_set, teacher: TeacherEndpoint | None) -> dict[str, Any]:
    """What a launch would cost, nothing saved (``POST /api/v1/jobs/plan`` and the launch
    form's "What will it cost?"): the teacher answers still to buy, and per job of the
    launch (two for a pair) its rough GPU-hours and memory plan."""
    from webapp.jobs.configs import memory_plan

    jobs = {}
    for method, config in spec.configs.items():
        try:
            memory = memory_plan(config, spec.student_path)
        except trainer_plan.UnknownModel:  # the launch refuses such a GPU job
            memory = None
        jobs[method] = gpu_cost(config, spec.student_path, prompt_set) | {
            "memory": memory.as_dict() if memory is not None else None
        }
    return {
        "teacher": teacher_cost(prompt_set, teacher),
        "jobs": jobs,
        "gpus": spec.processes if spec.gpus_per_node else 0,
    }
