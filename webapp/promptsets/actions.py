"""Changes to prompt sets: upload (see ingest.py), held-out split, delete; and the
teacher answers that jobs collect for them."""

from __future__ import annotations

import random
from dataclasses import asdict

from django.db import transaction

from trainer.teacher import Answer
from webapp.lib.errors import ActionError
from webapp.lib.text import scrub
from webapp.promptsets import contamination
from webapp.promptsets.models import Prompt, PromptSet, Split, TeacherAnswer


def _refuse_if_in_use(prompt_set: PromptSet, doing: str) -> None:
    running = prompt_set.jobs.active().values_list("name", flat=True)
    names = list(running[:3])
    if names:
        raise ActionError(
            f"Cannot {doing} {prompt_set.name!r}: it is used by running job(s) "
            f"{', '.join(names)}. Wait for them to finish or cancel them."
        )


def set_test_split(
    prompt_set: PromptSet, num_test: int, seed: int = 0, dedupe: bool = True
) -> PromptSet:
    """Hold out ``num_test`` prompts, chosen at random (seeded), as the test set. With
    ``dedupe`` (the default) only prompts that have no exact or near duplicate in the set
    are chosen, so that no held-out prompt also occurs in training; refused, with how many
    could be, when there are too few of them."""
    with transaction.atomic():
        locked = PromptSet.objects.select_for_update().get(pk=prompt_set.pk)
        _refuse_if_in_use(locked, "change the split of")
        if not 0 <= num_test < locked.num_prompts:
            raise ActionError(
                f"Test prompts must be between 0 and {locked.num_prompts - 1} "
                f"(the set has {locked.num_prompts}); got {num_test}."
            )
        pool = contamination.without_duplicates(locked) if dedupe else locked.prompts.all()
        ids = list(pool.order_by("index").values_list("id", flat=True))
        if num_test > len(ids):
            raise ActionError(
                f"Only {len(ids):,} of the {locked.num_prompts:,} prompts have no exact or "
                f"near duplicate in the set, so at most {len(ids):,} can be held out without "
                f"also occurring in training (asked for {num_test:,}). Hold out fewer, or "
                "turn off removing duplicates (the held-out prompts may then be trained on)."
            )
        chosen = random.Random(seed).sample(ids, num_test)
        locked.prompts.update(split=Split.TRAIN)
        for start in range(0, len(chosen), 5000):
            Prompt.objects.filter(id__in=chosen[start : start + 5000]).update(split=Split.TEST)
        locked.num_test = num_test
        locked.save(update_fields=["num_test"])
    return locked


def delete_prompt_set(prompt_set: PromptSet) -> None:
    with transaction.atomic():
        locked = PromptSet.objects.select_for_update().get(pk=prompt_set.pk)
        _refuse_if_in_use(locked, "delete")
        locked.delete()


def save_teacher_answer(answer: Answer) -> None:
    """Store (or replace) a teacher's answer under its key, (prompt hash, teacher
    fingerprint): the answer store's write side (``trainer.teacher``'s ``put``)."""
    values = scrub(asdict(answer))
    TeacherAnswer.objects.update_or_create(
        prompt_hash=values.pop("prompt_hash"),
        fingerprint=values.pop("fingerprint"),
        defaults=values,
    )
