"""What teacher calls cost, before and after (issue 24, item 4): prices per endpoint and
site defaults, what each job, evaluation and judge run spent, the team's usage page and
its CSV, a monthly limit in money, and the plan of a launch (nothing saved)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from tests.teacher.reasoning_server import REASONING_TOKENS, ReasoningModel
from tests.webapp.factories import make_prompt_set
from tests.webapp.test_teachers import make_endpoint
from trainer.pricing import Prices, Usage, dollars
from trainer.teacher import collect
from webapp.jobs.models import Job
from webapp.promptsets.models import Prompt
from webapp.teachers.models import ModelPrice
from webapp.teams.actions import create_api_token, month_usage
from webapp.teams.models import SpendPurpose, TeacherSpend
from worker.paid import Charge, paid_call


def test_prices_bill_cached_input_and_reasoning_as_documented():
    prices = Prices(Decimal("1.25"), Decimal("10"), Decimal("0.125"))
    # 1M prompt tokens of which 400k cached, 200k completion (reasoning included).
    usage = Usage(prompt=1_000_000, completion=200_000, reasoning=150_000, cached=400_000)
    assert prices.cost(usage) == Decimal("0.6") * Decimal("1.25") + Decimal("0.4") * Decimal(
        "0.125"
    ) + Decimal("2")
    assert prices.cost(usage, batch=True) == prices.cost(usage) / 2
    assert Prices(Decimal(1), Decimal(2)).cost(Usage(1_000_000, 0, 0, 500_000)) == 1
    assert dollars(Decimal("1234.5")) == "$1,234.50" and dollars(Decimal("0.0031")) == "$0.0031"
    assert dollars(None) == "no price"


@pytest.fixture
def gpt5():
    server = ReasoningModel()
    yield server
    server.close()


def _endpoint(personas, server, **fields):
    return make_endpoint(
        personas.team,
        base_url=server.url,
        model=server.model,
        token_param="max_completion_tokens",
        temperature_mode="omit",
        **fields,
    )


def _collect(endpoint, team, n: int, job=None, user=None, tag: str = "q"):
    prompts = [[{"role": "user", "content": f"{tag} {i}?"}] for i in range(n)]
    return paid_call(
        endpoint,
        team,
        lambda spec, store, budget, on_progress: collect(
            prompts, spec, store, on_progress=on_progress, budget=budget
        ),
        job=job,
        charge=Charge(SpendPurpose.COLLECTION, f"teacher answers of {tag}", user=user, job=job),
    )


@pytest.mark.django_db(transaction=True)
def test_a_collection_records_its_tokens_by_kind_and_price(personas, gpt5, client):
    endpoint = _endpoint(personas, gpt5, price_input=Decimal("2"), price_output=Decimal("8"))
    paid = _collect(endpoint, personas.team, 4, job=personas.job, user=personas.member)
    assert paid.kind == "" and paid.result.usable == 4
    row = TeacherSpend.objects.get()
    assert row.reasoning_tokens == 4 * REASONING_TOKENS
    assert row.completion_tokens > row.reasoning_tokens and row.prompt_tokens == 4 * 12
    expected = (row.prompt_tokens * 2 + row.completion_tokens * 8) / Decimal(1_000_000)
    assert row.cost == expected and row.price_source == "endpoint"
    assert (row.job, row.user, row.endpoint_name) == (personas.job, personas.member, "local")
    # The job's page and the API say it.
    token = create_api_token(personas.member, "t")[1]
    shown = client.get(
        f"/api/v1/jobs/{personas.job.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()["teacher_spend"]
    assert shown["reasoning_tokens"] == 4 * REASONING_TOKENS
    assert Decimal(shown["cost_usd"]) == expected
    client.force_login(personas.member)
    page = client.get(reverse("job", args=["acme", personas.job.pk])).content.decode()
    assert f"{4 * REASONING_TOKENS:,} reasoning" in page


@pytest.mark.django_db(transaction=True)
def test_site_defaults_price_an_endpoint_without_its_own(personas, gpt5):
    ModelPrice.objects.create(model="gpt-5*", price_input=Decimal("1"), price_output=Decimal("3"))
    ModelPrice.objects.create(model="gpt-5-mini", price_input=Decimal("0.25"), price_output=2)
    endpoint = _endpoint(personas, gpt5)  # gpt-5-mini
    prices, source = endpoint.prices()
    assert prices.input == Decimal("0.25") and source == "site default for gpt-5-mini"
    endpoint.model = "gpt-5-nano"
    assert endpoint.prices()[1] == "site default for gpt-5*"
    endpoint.model = "o3"
    assert endpoint.prices() == (None, "")
    endpoint.model = gpt5.model
    endpoint.save()
    _collect(endpoint, personas.team, 2)
    assert TeacherSpend.objects.get().cost > 0


@pytest.mark.django_db(transaction=True)
def test_a_monthly_limit_in_money_stops_collection_at_the_price(personas, gpt5):
    """$0.01 at $10 per million output tokens buys 1,000 tokens: the run stops on the
    budget (paused, not failed), with what it spent charged at the real price."""
    quota = personas.team.quota
    quota.teacher_dollars_per_month = Decimal("0.01")
    quota.save()
    endpoint = _endpoint(personas, gpt5, price_input=Decimal("10"), price_output=Decimal("10"))
    paid = _collect(endpoint, personas.team, 40)
    assert paid.result.stopped == "budget"
    assert 0 < paid.result.usable < 40
    # Later runs spend what is left, until what is left buys no request: never more.
    for round_ in range(5):
        sent = sum(gpt5.statuses.values())
        again = _collect(endpoint, personas.team, 40, tag=f"again{round_}")
        if sum(gpt5.statuses.values()) == sent:
            break
    else:
        pytest.fail("the money never ran out")
    assert again.kind == "budget" or again.result.stopped == "budget"
    spent = sum(row.cost for row in TeacherSpend.objects.all())
    assert Decimal("0.005") < spent <= Decimal("0.01")
    assert month_usage(personas.team).teacher_dollars == spent.quantize(Decimal("0.01"))


@pytest.mark.django_db(transaction=True)
def test_the_usage_page_and_its_csv(personas, gpt5, client):
    priced = _endpoint(personas, gpt5, price_input=Decimal("1"), price_output=Decimal("4"))
    free = make_endpoint(
        personas.team,
        name="=cmd|' /C calc'!A0",
        base_url=gpt5.url,
        model="gpt-5-mini",
        token_param="max_completion_tokens",
        temperature_mode="omit",
    )
    _collect(priced, personas.team, 3, job=personas.job, user=personas.member)
    _collect(free, personas.team, 2, user=personas.owner, tag="free")
    client.force_login(personas.member)
    url = reverse("team-usage", args=["acme"])
    page = client.get(url).content.decode()
    assert "teacher answers of q" in page and "bob" in page and "alice" in page
    assert "(+1 calls without a price)" in page  # a total never quietly short
    rows = list(csv.DictReader(io.StringIO(client.get(url + "?format=csv").content.decode())))
    assert len(rows) == 2 and {r["user"] for r in rows} == {"bob", "alice"}
    assert rows[1]["endpoint"].startswith("'=")  # no formula for a spreadsheet to run
    assert rows[1]["cost_usd"] == "" and Decimal(rows[0]["cost_usd"]) > 0
    assert client.get(url + "?month=2026-13").status_code == 400
    # The same for scripts.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}
    report = client.get("/api/v1/teams/acme/usage", **auth).json()
    assert report["total"]["runs"] == 2 and report["total"]["unpriced_calls"] == 1
    assert {g["name"] for g in report["by_user"]} == {"bob", "alice"}
    assert report["dollars_per_month"] is None
    bad = client.get("/api/v1/teams/acme/usage?month=12-2026", **auth)
    assert bad.status_code == 422 and "YYYY-MM" in bad.json()["detail"]
    # Annotators see no spend, outsiders not even the team.
    client.force_login(personas.annotator)
    assert client.get(url).status_code == 403
    client.force_login(personas.outsider)
    assert client.get(url).status_code == 404


def test_plan_of_a_launch_prices_the_answers_still_to_buy_and_saves_nothing(personas, client):
    prompt_set = make_prompt_set(personas.team, n=10, with_teacher=False, name="raw")
    endpoint = make_endpoint(
        personas.team,
        price_input=Decimal("1"),
        price_output=Decimal("4"),
        params={"max_tokens": 100},
    )
    # Three answers are cached for this teacher already: not bought again.
    from webapp.promptsets.models import TeacherAnswer

    for prompt in Prompt.objects.filter(prompt_set=prompt_set)[:3]:
        TeacherAnswer.objects.create(
            fingerprint=endpoint.fingerprint,
            prompt_hash=prompt.prompt_hash,
            response="x" * 200,
            finish_reason="stop",
            flag="ok",
        )
    token = create_api_token(personas.member, "t")[1]
    body = {
        "team": "acme",
        "name": "plan",
        "method": "pair",
        "prompt_set": prompt_set.pk,
        "teacher": endpoint.pk,
        "student": "Qwen/Qwen2.5-0.5B-Instruct",
        "gpus": 1,
    }
    jobs_before = Job.objects.count()
    plan = client.post(
        "/api/v1/jobs/plan",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert plan.status_code == 200, plan.content
    found = plan.json()
    teacher = found["teacher"]
    assert (teacher["to_ask"], teacher["cached"]) == (7, 3)
    assert teacher["tokens"]["completion"] == 7 * 50  # its earlier answers: 200 chars
    assert Decimal(teacher["cost_usd"]) > 0 and Decimal(teacher["at_most_usd"]) >= Decimal(
        teacher["cost_usd"]
    )
    assert set(found["jobs"]) == {"gad", "seqkd"}
    assert found["jobs"]["gad"]["gpu_hours"] > found["jobs"]["seqkd"]["gpu_hours"] > 0
    assert "rough" in found["jobs"]["gad"]["basis"]
    assert Job.objects.count() == jobs_before  # nothing saved
    bad = client.post(
        "/api/v1/jobs/plan",
        {**body, "method": "ppo"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert bad.status_code == 422 and "method" in bad.json()["detail"]
