"""Browser-side hardening (docs/security.md, "Pages"): a Content-Security-Policy that
allows no inline script on any page, and the page that shows a new API token is never
stored by a cache."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.webapp.test_evaluation import make_campaign, make_evaluation

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


def _pages(personas, campaign):
    slug = personas.team.slug
    evaluation = campaign.evaluation
    return [
        reverse("team", kwargs={"slug": slug}),
        reverse("jobs", kwargs={"slug": slug}),
        reverse("job", kwargs={"slug": slug, "pk": personas.job.pk}),
        reverse("job-launch", kwargs={"slug": slug}),
        reverse("job-sweep", kwargs={"slug": slug, "pk": personas.job.pk}),
        reverse("prompt-set", kwargs={"slug": slug, "pk": personas.prompt_set.pk}),
        reverse("evaluation", kwargs={"slug": slug, "pk": evaluation.pk}),
        reverse("campaign", kwargs={"slug": slug, "pk": campaign.pk}),
        reverse("teachers", kwargs={"slug": slug}),
        reverse("profile"),
    ]


@pytest.fixture
def campaign(personas):
    return make_campaign(make_evaluation(personas.team, n_prompts=2), [personas.member])


def test_every_page_forbids_inline_script_and_has_none(login, personas, campaign):
    client = login(personas.owner)
    for url in _pages(personas, campaign):
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        script = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, url
        assert "frame-ancestors 'none'" in policy
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html))
        assert not INLINE_HANDLER.search(html.split("<body", 1)[1]), url


def test_the_token_page_is_never_cached(login, personas):
    client = login(personas.member)
    response = client.post(reverse("profile"), {"name": "laptop"})
    assert response.status_code in (200, 302)
    page = client.get(reverse("profile"))
    assert "no-store" in page["Cache-Control"]
