"""What confused a new user in the first hour (issue 17, item 4), as view and unit tests:
training steps apart from teacher answers, the live log, max new tokens from the job,
the campaign's annotators, the chat prompt's turns, the comparison link.
The browser side is in tests/e2e/test_first_hour.py."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.webapp.factories import make_checkpoint, make_job
from tests.webapp.test_evaluation import make_evaluation
from webapp.evaluation.forms import DEFAULT_NEW_TOKENS
from webapp.jobs import monitor
from webapp.jobs.models import Sample
from webapp.lib.samples import chat_turns, prompt_view
from webapp.teams.actions import create_team, set_membership

JSON = {"HTTP_ACCEPT": "application/json"}


def job_url(job, name: str = "job") -> str:
    return reverse(name, kwargs={"slug": job.team.slug, "pk": job.pk})


def cancelled_while_collecting(team):
    """The job of the report: cancelled once its 144 teacher answers were in."""
    return make_job(
        team, name="early", status="cancelled", stage="collecting", step=144, total_steps=144
    )


# ----------------------------------------------------------------------------- 1. step bar


def test_a_job_cancelled_while_collecting_shows_no_training_steps_but_its_teacher_answers(
    personas,
):
    state = monitor.job_state(cancelled_while_collecting(personas.team))
    assert (state["step"], state["total_steps"], state["progress"]) == (0, None, None)
    assert state["answers"] == {
        "done": 144,
        "total": 144,
        "progress": 100,
        "line": "teacher answers 144 / 144",
    }


def test_a_training_job_shows_its_steps_and_no_teacher_answers(personas):
    job = make_job(personas.team, status="training", stage="gad", step=30, total_steps=120)
    state = monitor.job_state(job)
    assert (state["step"], state["total_steps"], state["progress"]) == (30, 120, 25)
    assert state["answers"] is None


def test_a_trainer_that_has_not_reported_yet_is_at_training_step_zero(personas):
    # The heartbeat may still carry the collecting count while the trainer starts.
    job = make_job(personas.team, status="training", stage="starting", step=144, total_steps=144)
    state = monitor.job_state(job)
    assert (state["step"], state["total_steps"], state["answers"]) == (0, None, None)


def test_job_page_list_dashboard_and_status_json_label_the_teacher_answers(client, personas):
    job = cancelled_while_collecting(personas.team)
    client.force_login(personas.member)
    page = client.get(job_url(job)).content.decode()
    step = re.search(r'data-testid="training-step">([^<]*)<', page).group(1)
    assert step.strip() == "0"
    answers = re.search(r'data-testid="teacher-answers">([^<]*)<', page).group(1)
    assert answers == "teacher answers 144 / 144"
    listing = client.get(reverse("jobs", kwargs={"slug": "acme"})).content.decode()
    assert "teacher answers 144 / 144" in listing and 'data-testid="training-step"' not in listing
    dashboard = client.get(reverse("team", kwargs={"slug": "acme"})).content.decode()
    assert "teacher answers 144 / 144" in dashboard
    live = client.get(job_url(job, "job-metrics"), **JSON).json()["job"]
    assert live["step"] == 0 and live["total_steps"] is None and live["progress"] is None
    assert live["answers"]["line"] == "teacher answers 144 / 144"


def test_the_job_list_shows_training_steps_of_a_training_job(client, personas):
    make_job(personas.team, name="busy", status="training", stage="gad", step=30, total_steps=120)
    client.force_login(personas.member)
    listing = client.get(reverse("jobs", kwargs={"slug": "acme"})).content.decode()
    assert "30 / 120" in listing and 'style="width: 25%"' in listing
    assert 'data-testid="teacher-answers"' not in listing


# ----------------------------------------------------------------------------- 2. the log


def test_metrics_json_sends_the_log_only_when_the_page_asks_and_it_changed(client, personas):
    job = personas.job
    job.log_tail = "line 1\nline 2\n"
    job.save()
    client.force_login(personas.member)
    url = job_url(job, "job-metrics")
    assert "log" not in client.get(url, **JSON).json()  # the comparison page never asks
    first = client.get(url, {"log": ""}, **JSON).json()["log"]
    assert first["text"] == "line 1\nline 2\n" and first["digest"]
    same = client.get(url, {"log": first["digest"]}, **JSON).json()["log"]
    assert same == {"digest": first["digest"]}
    job.log_tail += "line 3\n"
    job.save()
    grown = client.get(url, {"log": first["digest"]}, **JSON).json()["log"]
    assert grown["text"].endswith("line 3\n") and grown["digest"] != first["digest"]
    page = client.get(job_url(job)).content.decode()
    assert f'data-digest="{grown["digest"]}"' in page and "data-live-log" in page


def test_a_job_without_output_has_a_hidden_log_box_to_fill(client, personas):
    client.force_login(personas.member)
    page = client.get(job_url(personas.job)).content.decode()
    assert re.search(r'<pre class="log" data-live-log data-digest=""[^>]* hidden>', page)
    assert "Waiting for a worker." in page


# ----------------------------------------------------------------------------- 3. tokens


def tokens_shown(page: str) -> int:
    field = re.search(r'<input[^>]*name="max_new_tokens"[^>]*>', page).group(0)
    return int(re.search(r'value="(\d+)"', field).group(1))


def job_with(team, tmp_path, tokens, name: str):
    config = {"method": "gad"} if tokens is None else {"max_response_tokens": tokens}
    job = make_job(team, name=name, status="succeeded")
    job.config = config
    job.save()
    make_checkpoint(job, tmp_path / name)
    return job


def test_max_new_tokens_defaults_to_the_jobs_max_response_tokens(client, personas, tmp_path):
    short = job_with(personas.team, tmp_path, 256, "short")
    long = job_with(personas.team, tmp_path, 3000, "long")
    bare = job_with(personas.team, tmp_path, None, "bare")
    foreign = job_with(personas.other_team, tmp_path, 9000, "foreign")
    client.force_login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": "acme"})
    one = client.get(url, {"job": short.pk}).content.decode()
    assert tokens_shown(one) == 256
    assert re.search(rf'<input[^>]*value="{short.pk}"[^>]*checked', one)
    assert tokens_shown(client.get(f"{url}?job={short.pk}&job={long.pk}").content.decode()) == 3000
    assert tokens_shown(client.get(url, {"job": bare.pk}).content.decode()) == DEFAULT_NEW_TOKENS
    assert tokens_shown(client.get(url).content.decode()) == DEFAULT_NEW_TOKENS
    # Another team's job is not a choice: it neither shows nor sets the default.
    other = client.get(url, {"job": foreign.pk}).content.decode()
    assert tokens_shown(other) == DEFAULT_NEW_TOKENS and "foreign" not in other
    # What the page's script follows when boxes are ticked.
    assert f'"{long.pk}": 3000' in one and f'"{bare.pk}": {DEFAULT_NEW_TOKENS}' in one


def test_the_job_page_links_to_an_evaluation_of_the_job(client, personas):
    client.force_login(personas.member)
    page = client.get(job_url(personas.job)).content.decode()
    assert f"/teams/acme/evaluations/new/?job={personas.job.pk}" in page


# ----------------------------------------------------------------------------- 4. campaign


def campaign_form(client, evaluation) -> tuple[str, str]:
    url = reverse("campaign-create", kwargs={"slug": evaluation.team.slug, "pk": evaluation.pk})
    return url, client.get(url).content.decode()


def checked_people(page: str) -> set[str]:
    boxes = re.findall(r'<input[^>]*name="annotators"[^>]*>', page)
    return {re.search(r'value="(\d+)"', b).group(1) for b in boxes if "checked" in b}


def overlap_input(page: str) -> str:
    return re.search(r'<input[^>]*name="overlap"[^>]*>', page).group(0)


def test_the_campaign_form_chooses_the_teams_annotators(client, personas):
    evaluation = make_evaluation(personas.team)
    client.force_login(personas.member)
    _, page = campaign_form(client, evaluation)
    assert checked_people(page) == {str(personas.annotator.pk)}
    field = overlap_input(page)
    assert 'value="1"' in field and 'max="1"' in field  # min(2, one person)


def test_without_annotators_the_campaign_form_chooses_its_creator(
    client, personas, django_user_model
):
    team = create_team("Solo", "solo", owner=personas.outsider)
    set_membership(team, django_user_model.objects.create_user("eve"), "member")
    evaluation = make_evaluation(team)
    client.force_login(personas.outsider)
    _, page = campaign_form(client, evaluation)
    assert checked_people(page) == {str(personas.outsider.pk)}


def test_two_or_more_annotators_default_to_two_per_item(client, personas, django_user_model):
    set_membership(personas.team, django_user_model.objects.create_user("fay"), "annotator")
    set_membership(personas.team, django_user_model.objects.create_user("gus"), "annotator")
    evaluation = make_evaluation(personas.team)
    client.force_login(personas.member)
    _, page = campaign_form(client, evaluation)
    assert len(checked_people(page)) == 3
    field = overlap_input(page)
    assert 'value="2"' in field and 'max="3"' in field


def test_more_annotators_per_item_than_people_chosen_is_refused_by_name(client, personas):
    evaluation = make_evaluation(personas.team)
    client.force_login(personas.member)
    url, page = campaign_form(client, evaluation)
    pair = re.search(r'name="pairs" value="([\d:]+)"', page).group(1)
    data = {"title": "Round one", "pairs": [pair], "overlap": 3}
    response = client.post(url, {**data, "annotators": [personas.annotator.pk, personas.member.pk]})
    assert response.status_code == 422
    body = response.content.decode()
    assert "Annotators per item is 3, but only 2 people are chosen under Annotators" in body
    assert evaluation.campaigns.count() == 0
    response = client.post(url, {**data, "annotators": [personas.annotator.pk], "overlap": 2})
    assert "only 1 person is chosen" in response.content.decode()
    response = client.post(url, {**data, "annotators": [personas.annotator.pk], "overlap": 1})
    assert response.status_code == 302 and evaluation.campaigns.count() == 1


# ----------------------------------------------------------------------------- 5. samples


@pytest.mark.parametrize(
    "text",
    [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nSay hi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<bos><start_of_turn>system\nBe brief.<end_of_turn>\n<start_of_turn>user\nSay hi"
        "<end_of_turn>\n<start_of_turn>model\n",
        "<|system|>\nBe brief.<|end|>\n<|user|>\nSay hi<|end|>\n<|assistant|>\n",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n",  # Qwen3, thinking off
    ],
    ids=["chatml", "llama3", "gemma", "phi3", "qwen3"],
)
def test_a_chat_prompt_becomes_its_turns_without_template_tokens(text):
    assert chat_turns(text) == [("system", "Be brief."), ("user", "Say hi")]


@pytest.mark.parametrize(
    "text",
    [
        "Say hi",
        "[INST] Say hi [/INST]",  # a template the viewer does not know
        "Preamble <|im_start|>user\nSay hi<|im_end|>",  # text outside the turns
        "<|im_start|>assistant\n",  # nothing but the generation prompt
        "",
    ],
)
def test_other_text_is_not_taken_for_turns(text):
    assert chat_turns(text) is None


def test_a_turn_keeps_its_lines_and_code():
    turns = chat_turns("<|im_start|>user\nFix:\n```py\nx = 1\n```\nplease<|im_end|>")
    assert turns == [("user", "Fix:\n```py\nx = 1\n```\nplease")]
    view = prompt_view({"prompt": "<|im_start|>user\nFix:\n```py\nx = 1\n```\nplease<|im_end|>"})
    (turn,) = view.prompt.turns
    assert [s.kind for s in turn.segments] == ["text", "code", "text"]
    assert "<|im" not in view.prompt.preview


def test_the_samples_viewer_shows_turns_and_explains_d_and_a(client, personas):
    job = personas.job
    Sample.objects.create(
        job=job,
        step=10,
        stage="gad",
        data={
            "prompt": "<|im_start|>user\n<b>Say</b> hi<|im_end|>\n<|im_start|>assistant\n",
            "teacher": "Hello.",
            "samples": ["Hi!"],
            "scores": [0.5],
            "advantages": [1.0],
        },
    )
    Sample.objects.create(
        job=job, step=20, stage="gad", data={"prompt": "[INST] <script>x</script> [/INST]"}
    )
    client.force_login(personas.member)
    page = client.get(job_url(job, "job-samples"), {"step": 10}).content.decode()
    assert "<|im_start|>" not in page and "<|im_end|>" not in page
    assert 'data-testid="turn" data-role="user"' in page and "&lt;b&gt;Say&lt;/b&gt; hi" in page
    assert 'data-role="assistant"' not in page  # the empty generation prompt
    hint = re.search(r'data-testid="score-hint">(.*?)</div>', page, re.S).group(1)
    assert "higher = more teacher-like" in hint and "group's standard deviation" in hint
    unknown = client.get(job_url(job, "job-samples"), {"step": 20}).content.decode()
    assert "[INST] &lt;script&gt;x&lt;/script&gt; [/INST]" in unknown
    assert 'data-testid="turn"' not in unknown


def test_without_std_norm_the_hint_does_not_claim_std_units(client, personas):
    job = personas.job
    job.config = {**job.config, "gad": {"std_norm": False}}
    job.save()
    Sample.objects.create(job=job, step=10, stage="gad", data={"prompt": "p", "samples": ["a"]})
    client.force_login(personas.member)
    page = client.get(job_url(job, "job-samples")).content.decode()
    assert "standard deviation" not in page and "relative to the mean of its group" in page


# ----------------------------------------------------------------------------- 6. compare


def test_the_comparison_link_has_a_literal_comma_and_both_spellings_open(client, personas):
    gad = personas.job
    seqkd = make_job(personas.team, name="baseline", method="seqkd", pair=gad)
    gad.pair = seqkd
    gad.save()
    client.force_login(personas.member)
    page = client.get(job_url(gad)).content.decode()
    assert f"/teams/acme/compare/?jobs={gad.pk},{seqkd.pk}" in page and "%2C" not in page
    for query in (f"{gad.pk},{seqkd.pk}", f"{gad.pk}%2C{seqkd.pk}", f"{gad.pk}, {seqkd.pk}"):
        response = client.get(f"/teams/acme/compare/?jobs={query}")
        assert response.status_code == 200
        assert [j.pk for j in response.context["jobs"]] == [gad.pk, seqkd.pk]
        assert response.context["share_url"].endswith(f"?jobs={gad.pk},{seqkd.pk}")


# ----------------------------------------------------------------------------- hostile input


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=40))
def test_the_new_query_parameters_never_give_a_server_error(client, personas, value):
    client.force_login(personas.member)
    tokens = client.get(reverse("evaluation-create", kwargs={"slug": "acme"}), {"job": value})
    assert tokens.status_code == 200
    log = client.get(job_url(personas.job, "job-metrics"), {"log": value}, **JSON)
    assert log.status_code == 200 and "digest" in log.json()["log"]
