"""Models an administrator registered for teams to start from (students, systems to
evaluate): a directory on the workers under one of the site's model roots."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class RegisteredModel(models.Model):
    name = models.SlugField(
        max_length=100,
        unique=True,
        help_text="Teams refer to it as model:NAME (the launch form lists it).",
    )
    path = models.CharField(
        max_length=1000,
        help_text="An HF-format model directory on the workers, under one of GAD_MODEL_ROOTS.",
    )
    description = models.CharField(max_length=300, blank=True)
    teams = models.ManyToManyField(
        "teams.Team",
        blank=True,
        related_name="+",
        help_text="The teams that may use it; none chosen: every team.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def model_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.GAD_MODEL_ROOTS]


def under_roots(path: str) -> bool:
    """The directory (links followed) lies inside one of GAD_MODEL_ROOTS."""
    real = Path(path).resolve()
    return any(real == root or root in real.parents for root in model_roots())


def registered_for(team) -> models.QuerySet[RegisteredModel]:
    """The models a team may use: those registered for it, or for every team."""
    return RegisteredModel.objects.filter(Q(teams=team) | Q(teams__isnull=True)).distinct()
