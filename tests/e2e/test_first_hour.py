"""What confused a new user in the first hour (issue 17, item 4), in a real browser: the
step bar against the teacher answers, the log that follows its end, max new tokens from
the jobs ticked, the campaign's annotators per item, the chat prompt as turns, the
comparison link, and the job list's filters."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_annotation import PASSWORD, login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture
def acme(settings):
    """Team acme: bob owns it, carol annotates; pages poll every half second."""
    from django.contrib.auth import get_user_model

    from webapp.teams.actions import create_team, set_membership

    settings.GAD_MONITOR_POLL_S = 0.5
    users = get_user_model().objects
    bob = users.create_user("bob", password=PASSWORD)
    team = create_team("Acme", "acme", owner=bob)
    set_membership(team, users.create_user("carol", password=PASSWORD), "annotator")
    return team


def make_job(team, **fields):
    from webapp.jobs.models import Job

    return Job.objects.create(
        team=team, name=fields.pop("name", "run"), method="gad", student="s", **fields
    )


def open_page(page, live_server, path: str) -> None:
    login(page, live_server.url, "bob", path)
    page.wait_for_url(f"**{path.split('?')[0]}*")


def test_the_step_bar_counts_training_steps_and_teacher_answers_apart(live_server, page, acme):
    from webapp.jobs.models import Job

    job = make_job(acme, status="collecting", stage="collecting", step=50, total_steps=144)
    open_page(page, live_server, f"/teams/acme/jobs/{job.pk}/")
    step, answers = page.get_by_test_id("training-step"), page.get_by_test_id("teacher-answers")
    expect(step).to_have_text("0")
    expect(answers).to_have_text("teacher answers 50 / 144")
    expect(page.locator("[data-live=progress]")).to_be_hidden()
    # The collecting ends, the trainer reports its steps: the page follows, no reload.
    Job.objects.filter(pk=job.pk).update(status="training", stage="warmup", step=5, total_steps=100)
    expect(step).to_have_text("5 / 100")
    expect(answers).to_be_hidden()
    expect(page.locator("[data-live=progress] span")).to_have_attribute("style", "width: 5%;")

    # The job of the report: cancelled once its teacher answers were in.
    Job.objects.filter(pk=job.pk).update(
        status="cancelled", stage="collecting", step=144, total_steps=144
    )
    page.reload()
    expect(step).to_have_text("0")
    expect(answers).to_have_text("teacher answers 144 / 144")
    page.goto(f"{live_server.url}/teams/acme/jobs/")
    expect(page.get_by_test_id("teacher-answers")).to_have_text("teacher answers 144 / 144")
    expect(page.get_by_test_id("training-step")).to_have_count(0)


AT_BOTTOM = "(el) => el.scrollHeight - el.scrollTop - el.clientHeight < 8"


def test_the_log_opens_at_its_end_and_follows_unless_scrolled_up(live_server, page, acme):
    from webapp.jobs.models import Job

    lines = [f"step {i}: loss 0.5" for i in range(200)]
    job = make_job(acme, status="training", stage="gad", step=1, log_tail="\n".join(lines))
    page.set_viewport_size(DESKTOP)
    open_page(page, live_server, f"/teams/acme/jobs/{job.pk}/")
    log = page.get_by_test_id("log")
    assert log.evaluate("(el) => el.scrollHeight > 2 * el.clientHeight")  # it does scroll
    page.wait_for_function(f"() => ({AT_BOTTOM})(document.querySelector('pre[data-live-log]'))")

    def write(n: int) -> None:
        lines.extend(f"step {i}: loss 0.4" for i in range(len(lines), len(lines) + n))
        Job.objects.filter(pk=job.pk).update(log_tail="\n".join(lines[-200:]))
        expect(log).to_contain_text(lines[-1])

    write(5)
    assert log.evaluate(AT_BOTTOM)  # followed the new lines

    log.evaluate("(el) => { el.scrollTop = 40; }")  # the reader scrolls up
    page.wait_for_timeout(200)  # the scroll event
    write(5)
    assert log.evaluate("(el) => el.scrollTop") == 40  # their place is kept

    log.evaluate("(el) => { el.scrollTop = el.scrollHeight; }")  # back to the bottom
    page.wait_for_timeout(200)
    write(5)
    assert log.evaluate(AT_BOTTOM)


def test_max_new_tokens_follows_the_jobs_ticked(live_server, page, acme, tmp_path):
    from webapp.jobs.models import Checkpoint

    jobs = {}
    for name, tokens in (("short", 256), ("long", 3000)):
        jobs[name] = make_job(acme, name=name, status="succeeded")
        jobs[name].config = {"max_response_tokens": tokens}
        jobs[name].save()
        Checkpoint.objects.create(job=jobs[name], step=10, path=str(tmp_path / name))
    # From the job's page.
    open_page(page, live_server, f"/teams/acme/jobs/{jobs['short'].pk}/")
    page.get_by_test_id("evaluate-job").click()
    tokens = page.locator("#id_max_new_tokens")
    expect(tokens).to_have_value("256")
    short = page.locator(f"input[name=jobs][value='{jobs['short'].pk}']")
    long = page.locator(f"input[name=jobs][value='{jobs['long'].pk}']")
    expect(short).to_be_checked()
    long.check()
    expect(tokens).to_have_value("3000")  # the largest of the jobs ticked
    long.uncheck()
    expect(tokens).to_have_value("256")
    short.uncheck()
    expect(tokens).to_have_value("1536")  # no job: the trainer's default
    tokens.fill("700")  # the user's own value stays
    long.check()
    expect(tokens).to_have_value("700")


def test_annotators_per_item_is_capped_at_the_people_chosen(live_server, page, acme):
    from django.contrib.auth import get_user_model

    from tests.webapp.test_evaluation import make_evaluation

    evaluation = make_evaluation(acme)
    carol = get_user_model().objects.get(username="carol")
    bob = get_user_model().objects.get(username="bob")
    open_page(page, live_server, f"/teams/acme/evaluations/{evaluation.pk}/campaigns/new/")
    overlap = page.locator("#id_overlap")
    expect(page.locator(f"input[name=annotators][value='{carol.pk}']")).to_be_checked()
    expect(page.locator(f"input[name=annotators][value='{bob.pk}']")).not_to_be_checked()
    expect(overlap).to_have_value("1")
    expect(overlap).to_have_attribute("max", "1")
    page.locator(f"input[name=annotators][value='{bob.pk}']").check()
    expect(overlap).to_have_value("2")  # min(2, people chosen)
    expect(overlap).to_have_attribute("max", "2")
    overlap.fill("5")  # past the cap, and the form does not validate in the browser
    page.get_by_role("button", name="Open the campaign").click()
    error = page.locator(".has-error .field-error")
    expect(error).to_contain_text("Annotators per item is 5, but only 2 people are chosen")
    assert evaluation.campaigns.count() == 0


def test_the_samples_viewer_shows_the_chat_as_turns_with_a_hint(live_server, page, acme):
    from webapp.jobs.models import Sample

    job = make_job(acme, status="training", stage="gad", step=10)
    Sample.objects.create(
        job=job,
        step=10,
        stage="gad",
        data={
            "prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
            "<img src=x onerror=alert(1)>Say hi<|im_end|>\n<|im_start|>assistant\n",
            "teacher": "Hello.",
            "samples": ["Hi!"],
            "scores": [0.25],
            "advantages": [0.5],
        },
    )
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_page(page, live_server, f"/teams/acme/jobs/{job.pk}/samples/")
    prompt = page.get_by_test_id("answer").first
    turns = prompt.get_by_test_id("turn")
    expect(turns).to_have_count(2)
    expect(turns.nth(0).locator(".role")).to_have_text("system")
    expect(turns.nth(1)).to_contain_text("<img src=x onerror=alert(1)>Say hi")
    assert "<|im_" not in prompt.inner_text()
    hint = page.get_by_test_id("score-hint")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("higher = more teacher-like")
    expect(hint).to_contain_text("GRPO advantage")
    assert page.locator(".sv-answer img").count() == 0 and dialogs == []


def test_the_comparison_link_keeps_its_comma(live_server, page, acme):
    gad = make_job(acme, name="gad-run", status="succeeded")
    seqkd = make_job(acme, name="seqkd-run", status="succeeded", pair=gad)
    gad.pair = seqkd
    gad.save()
    open_page(page, live_server, f"/teams/acme/jobs/{gad.pk}/")
    page.get_by_role("link", name="compare the two").click()
    page.wait_for_url(f"**/compare/?jobs={gad.pk},{seqkd.pk}")
    expect(page.locator(".compared li")).to_have_count(2)
    share = page.get_by_label("Shareable link").input_value()
    assert share.endswith(f"?jobs={gad.pk},{seqkd.pk}")


def test_the_job_list_filters_sit_compactly_in_one_row(live_server, page, acme):
    make_job(acme, status="training", stage="gad")
    page.set_viewport_size(DESKTOP)
    open_page(page, live_server, "/teams/acme/jobs/")
    filters = page.locator("form.filters")
    boxes = [
        filters.locator(selector).bounding_box()
        for selector in ("#f-status", "#f-method", "button")
    ]
    assert all(box["width"] < 260 for box in boxes), boxes
    middles = [box["y"] + box["height"] / 2 for box in boxes]
    assert max(middles) - min(middles) < 4, boxes  # one row
    form = filters.bounding_box()
    button_end = boxes[-1]["x"] + boxes[-1]["width"] - form["x"]
    assert button_end < 0.75 * form["width"], (boxes, form)  # not spread across the page
    page.select_option("#f-status", "training")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/jobs/?status=training*")
    expect(page.locator("tbody tr")).to_have_count(1)
