"""How many held-out prompts also occur in training: the set's own split (exact: the same
normalised text; near: in one group of near duplicates, found by MinHash at upload, see
``trainer.dedup``), and an evaluation's prompts against the training prompts of the jobs
it evaluates (exact, by normalised text)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from webapp.promptsets.models import Prompt, PromptSet, Split


def of_split(prompt_set: PromptSet) -> dict[str, int]:
    """``{"exact", "near", "checked"}`` for the set's held-out prompts against its
    training prompts."""
    test = prompt_set.prompts.filter(split=Split.TEST)
    train = prompt_set.prompts.filter(split=Split.TRAIN)
    exact = test.exclude(norm_hash="").filter(norm_hash__in=train.values("norm_hash"))
    near = test.exclude(pk__in=exact.values("pk")).filter(dup_group__in=train.values("dup_group"))
    return {"exact": exact.count(), "near": near.count(), "checked": test.count()}


def without_duplicates(prompt_set: PromptSet) -> QuerySet[Prompt]:
    """The set's prompts that have no exact or near duplicate in it: the ones a held-out
    split may take without leaking into training."""
    alone = (
        prompt_set.prompts.values("dup_group")
        .annotate(members=Count("id"))
        .filter(members=1)
        .values("dup_group")
    )
    return prompt_set.prompts.filter(dup_group__in=alone)
