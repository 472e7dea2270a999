"""Model references: what a job's student and an evaluation's models may name.

A reference is exactly one of:

- a Hugging Face hub id, ``org/name`` (the worker loads it through the hub cache);
- one of the team's own checkpoints, ``checkpoint:ID``;
- a model an administrator registered under the site's model roots, ``model:NAME``.

Never a path: run directories are predictable, so a path would let a member start from
(and download the training result of) another team's weights. Anything else is refused
with one message, the same whether or not such a file exists, so the answer reveals
nothing about the workers' disks. The web checks a reference when it is submitted; the
worker checks it again (``resolve``) right before it loads the model, because the
stored config could have been changed in the database since.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from webapp.catalog.models import registered_for, under_roots
from webapp.jobs import hub
from webapp.jobs.hub import HubModel
from webapp.jobs.models import Checkpoint
from webapp.teams.actions import GB, storage_full
from webapp.teams.models import Quota, Team

# Hub ids: an organisation and a name of letters, digits, '-', '_' and '.', neither
# starting with a dot (so never '.' or '..'), at most 96 characters each.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
CHECKPOINT = re.compile(r"checkpoint:([0-9]{1,18})")
REGISTERED = re.compile(r"model:([-a-zA-Z0-9_]{1,100})")


class InvalidReference(ValueError):
    """A reference that may not be used; one message for every reason."""

    def __init__(self, field: str, value: str):
        self.field = field
        shown = value if len(value) <= 120 else value[:117] + "..."
        self.message = (
            f"{shown!r} is not a model you can use. Give a Hugging Face id (org/name), one "
            "of the team's checkpoints (checkpoint:ID) or a model an administrator "
            "registered (model:NAME)."
        )
        super().__init__(f"{field}: {self.message}")


@dataclass(frozen=True)
class Choice:
    """A reference offered in a list, with what the person sees."""

    value: str
    label: str


def _checkpoint(team: Team, pk: int) -> Checkpoint | None:
    # Checkpoint rows are written by the worker only, as it registers what the job's own
    # run saved: the team check is what matters.
    return Checkpoint.objects.filter(pk=pk, job__team=team).first()


def resolve(ref: str, team: Team, field: str = "student") -> str:
    """What the trainer loads for ``ref``: the hub id, or the checked directory.

    Raises ``InvalidReference`` for anything the team may not use."""
    ref = (ref or "").strip()
    if HUB_ID.fullmatch(ref):
        return ref
    if m := CHECKPOINT.fullmatch(ref):
        checkpoint = _checkpoint(team, int(m[1]))
        if checkpoint is not None:
            return checkpoint.path
    elif m := REGISTERED.fullmatch(ref):
        model = registered_for(team).filter(name=m[1]).first()
        if model is not None and under_roots(model.path):
            return model.path
    raise InvalidReference(field, ref)


def check(ref: str, team: Team, field: str = "student") -> str:
    """The reference, stripped, if the team may use it (raises ``InvalidReference``)."""
    resolve(ref, team, field)
    return ref.strip()


def choices(team: Team) -> list[Choice]:
    """The references the team can pick from a list: registered models, then its own
    checkpoints, newest first."""
    found = [
        Choice(
            f"model:{m.name}",
            f"{m.name} (registered{': ' + m.description if m.description else ''})",
        )
        for m in registered_for(team)
    ]
    checkpoints = (
        Checkpoint.objects.filter(job__team=team).select_related("job").order_by("-created_at")
    )
    found += [
        Choice(f"checkpoint:{c.pk}", f"{c.job.name} · step {c.step}") for c in checkpoints[:200]
    ]
    return found


class HubRefused(ValueError):
    """A hub model the team may not start from now: the message says why, with the
    figures."""


def hub_model(ref: str, team: Team, field: str = "student") -> HubModel | None:
    """The hub model ``ref`` names, looked up, within the site's switch and the team's
    cap; None when ``ref`` is not a hub id. Raises HubRefused."""
    if not HUB_ID.fullmatch(ref.strip()):
        return None
    if not settings.GAD_HUB_MODELS:
        raise HubRefused(
            f"{field}: this site does not start from Hugging Face Hub models; use a model an "
            "administrator registered (model:NAME) or one of the team's checkpoints "
            "(checkpoint:ID)."
        )
    try:
        found = hub.look_up(ref.strip())
    except hub.HubError as failed:
        raise HubRefused(f"{field}: {failed}") from None
    quota = Quota.objects.filter(team=team).first() or Quota()  # a team made without one
    cap = quota.hub_model_gb
    if found.size_bytes > cap * GB:
        raise HubRefused(
            f"{field}: {ref} is {found.size_bytes / GB:.1f} GB on the Hub and the team may start "
            f"from hub models of at most {cap} GB; ask an administrator to raise it, or to "
            "register the model (model:NAME)."
        )
    return found


def hub_storage_problem(team: Team, found: HubModel) -> str | None:
    """Why the team's storage has no room for the hub model (None when it has, or when
    its jobs start from that model already: each one is in its storage once)."""
    quota = Quota.objects.filter(team=team).first()
    if quota is None or team.jobs.filter(student_path=found.repo_id, student_bytes__gt=0).exists():
        return None
    return storage_full(team, quota, adding=found.size_bytes)
