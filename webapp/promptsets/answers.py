"""Teacher answers collected by jobs for a team's prompts (stored once, shared by jobs)."""

from __future__ import annotations

from collections.abc import Iterable

from trainer.teacher import Answer
from webapp.promptsets.models import PromptSet, TeacherAnswer
from webapp.teachers.models import TeacherEndpoint


def team_fingerprints(team) -> dict[str, str]:
    """Fingerprint → endpoint name, for the team's teachers (only their answers are shown)."""
    return {e.fingerprint: e.name for e in TeacherEndpoint.objects.filter(team=team)}


def collected(team, hashes: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Prompt hash → (answer, teacher name), for answers that ended normally."""
    fingerprints = team_fingerprints(team)
    hashes = list(hashes)
    if not fingerprints or not hashes:
        return {}
    rows = TeacherAnswer.objects.filter(
        fingerprint__in=fingerprints, prompt_hash__in=hashes, flag="ok"
    ).values_list("prompt_hash", "fingerprint", "response")
    return {key: (response, fingerprints[fp]) for key, fp, response in rows}


def count_collected(prompt_set: PromptSet) -> int:
    """Prompts without an uploaded answer that have a collected one."""
    fingerprints = team_fingerprints(prompt_set.team)
    if not fingerprints:
        return 0
    missing = prompt_set.prompts.filter(teacher_response__isnull=True).values("prompt_hash")
    return (
        TeacherAnswer.objects.filter(
            fingerprint__in=fingerprints, flag="ok", prompt_hash__in=missing
        )
        .values("prompt_hash")
        .distinct()
        .count()
    )


ANSWER_FIELDS = list(Answer.__dataclass_fields__)


def load_answers(fingerprint: str, hashes: list[str]) -> dict[str, Answer]:
    """Prompt hash → the stored answer of the teacher with this fingerprint (the answer
    store of ``trainer.teacher``, read in chunks)."""
    found: dict[str, Answer] = {}
    for start in range(0, len(hashes), 5000):
        rows = TeacherAnswer.objects.filter(
            fingerprint=fingerprint, prompt_hash__in=hashes[start : start + 5000]
        ).values_list(*ANSWER_FIELDS)
        for row in rows:
            found[row[0]] = Answer(*row)
    return found
