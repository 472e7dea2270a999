"""Models an administrator registered for teams to start from (students, systems to
evaluate): a directory on the workers under one of the site's model roots."""

from __future__ import annotations

from django.db import models
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
