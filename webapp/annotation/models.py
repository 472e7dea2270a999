"""Blind pairwise annotation: campaigns, pairs, items, assignments, votes.

A ``Campaign`` compares pairs of an evaluation's systems: each (prompt, pair) is an
``Item`` with a random, recorded left/right order, given to k people (``Assignment``);
each assignment gets at most one live ``Vote``. Annotators only ever see opaque keys: no
system, job or model name reaches them.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from webapp.evaluation.models import Evaluation, System


def new_key() -> str:
    """An opaque id for URLs and exports (~128 bits: not guessable, not enumerable)."""
    return secrets.token_urlsafe(16)


class Campaign(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="campaigns")
    title = models.CharField(
        max_length=200, help_text="Shown to annotators: it must not name the systems."
    )
    overlap = models.PositiveSmallIntegerField(default=2, help_text="Annotators per item.")
    seed = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="A closed campaign takes no more votes."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


class Pair(models.Model):
    """Two systems compared; results are stated from ``system_a``'s side (a wins / loses)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="pairs")
    system_a = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+")
    system_b = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "system_a", "system_b"], name="one_pair_per_campaign"
            ),
            models.CheckConstraint(
                condition=~Q(system_a=models.F("system_b")), name="pair_of_two_systems"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system_a} vs {self.system_b}"


class Item(models.Model):
    """A prompt answered by both systems of a pair, with the order shown on screen."""

    key = models.CharField(max_length=32, unique=True, default=new_key, editable=False)
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey("promptsets.Prompt", on_delete=models.CASCADE, related_name="+")
    a_on_left = models.BooleanField(help_text="Drawn at random when the campaign was created.")

    class Meta:
        ordering = ["pair", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "prompt"], name="one_item_per_pair_prompt")
        ]

    def __str__(self) -> str:
        return self.key


class Assignment(models.Model):
    """One item for one person. ``key`` is the only id of it their pages carry."""

    key = models.CharField(max_length=32, unique=True, default=new_key, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveIntegerField(help_text="Order in this person's queue (shuffled).")
    skipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "annotator", "position"]
        constraints = [
            # Nobody gets the same item twice.
            models.UniqueConstraint(fields=["item", "annotator"], name="one_assignment_per_person")
        ]
        indexes = [models.Index(fields=["campaign", "annotator", "position"])]

    def __str__(self) -> str:
        return self.key


class Choice(models.TextChoices):
    LEFT = "left", "Left better"
    TIE = "tie", "Tie"
    RIGHT = "right", "Right better"


class Vote(models.Model):
    """A person's judgement of an assignment. Undone votes are kept (``undone_at``)."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="votes")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    choice = models.CharField(max_length=5, choices=Choice.choices)
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One live vote per assignment: a double submission fails here, whatever the client.
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(undone_at__isnull=True),
                name="one_live_vote_per_assignment",
            )
        ]

    def __str__(self) -> str:
        return f"{self.choice} on {self.assignment_id}"
