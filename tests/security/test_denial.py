"""Nothing a member submits can take the site down (docs/security.md, "Denial of
service"): an answer built to make a regular expression backtrack renders in linear
time, and a huge one is cut."""

from __future__ import annotations

import time

from django.urls import reverse

from tests.webapp.test_evaluation import make_campaign, make_evaluation
from webapp.annotation import queue
from webapp.annotation.markdown import MAX_CHARS, render
from webapp.evaluation.models import SystemAnswer


def test_a_pathological_answer_renders_fast_and_a_huge_one_is_cut(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=1)
    campaign = make_campaign(evaluation, [personas.annotator])
    assignment = queue.next_assignment(personas.annotator, campaign)
    # The old renderer's regexes backtracked quadratically on these (24 KB: 3.6 s).
    hostile = "*a" * 150_000 + "\n" + "`" * 50_000 + "**" * 50_000
    SystemAnswer.objects.filter(system=assignment.item.pair.system_a).update(response=hostile)
    client = login(personas.annotator)
    url = reverse("annotate-item", kwargs={"slug": personas.team.slug, "key": assignment.key})
    started = time.monotonic()
    response = client.get(url)
    # A page either answers or the request is bounded; this guards a hang (minutes), not
    # a timing target.
    assert time.monotonic() - started < 30
    assert response.status_code == 200
    assert "longer than" in response.content.decode()
    assert len(response.content) < 5 * MAX_CHARS


def test_raw_html_and_links_in_an_answer_stay_text():
    html = str(render("<img src=x onerror=alert(1)> [x](javascript:alert(1)) <http://e.x>"))
    assert "<img" not in html and "<a " not in html and "&lt;img" in html
