"""The first hour, in a browser, on a CPU-only site started the way `make demo` starts
it (scripts/demo.sh's web, worker and beat commands): sign in, register the teacher and
test the connection, upload prompts and hold some out, launch with the form's defaults
(it runs: the form offers 0 GPUs on a site without any), launch a small job and watch
it finish, compare it, evaluate it against the teacher with the automatic scores, and
find the download.

``GAD_SCREENSHOTS=docs/img`` photographs the steps for docs/getting-started.md:
    GAD_SCREENSHOTS=docs/img make test PYTEST_ARGS=tests/e2e/test_getting_started.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.processes import ROOT
from tests.webapp.factories import register_model
from tests.worker.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "first-hour-password"
# The small job's settings, typed into the form's "Advanced" section.
SMALL = {
    "batch_size": "2", "group_size": "2", "max_prompt_tokens": "48",
    "max_response_tokens": "8", "save_every": "2", "sample_every": "1",
    "warmup__epochs": "1", "warmup__d_only_steps": "1", "gad__epochs": "1",
}  # fmt: skip


def shot(page, name: str) -> None:
    folder = os.environ.get("GAD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))  # the first screen


def job_status(job_id: int) -> str:
    from webapp.jobs.models import Job

    return Job.objects.get(pk=job_id).status


def launch(page, base: str, name: str, fields: dict[str, str]) -> int:
    page.goto(f"{base}/teams/lab/jobs/new/")
    page.fill("#id_name", name)
    page.select_option("#id_prompt_set", label="first-hour")
    page.fill("#id_student", "model:tiny-student")
    if fields:
        page.click("summary:has-text('Advanced')")
        for key, value in fields.items():
            page.fill(f"#id_cfg__{key}", value)
    page.click("button:has-text('Launch')")
    page.wait_for_url("**/jobs/*/")
    return int(page.url.rstrip("/").rsplit("/", 1)[-1])


def test_the_first_hour_on_a_cpu_only_site(
    site_of, page, teacher_server, tiny_student_dir, settings, tmp_path
):
    from django.contrib.auth import get_user_model

    from webapp.teams.actions import create_team

    register_model(settings, tiny_student_dir)  # before the workers start: its root
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    create_team("Lab", "lab", owner=user)
    site = site_of("demo")
    site.run("migrate")
    for role in ("web", "worker", "beat"):
        site.start(role)
    from tests.test_deployment import web_up

    wait_for(lambda: web_up(site), 90, "the web process", site.logs)
    base = site.url("")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.set_default_timeout(20_000)

    page.goto(f"{base}/accounts/login/?next=/teams/lab/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/teams/lab/")

    # The teacher: any OpenAI-compatible endpoint (here transformers serve).
    url, model = teacher_server
    page.goto(f"{base}/teams/lab/teachers/new/")
    page.fill("#id_name", "local teacher")
    page.fill("#id_base_url", url)
    page.fill("#id_model", model)
    page.click("button.primary")
    page.get_by_test_id("test-connection").click()
    expect(page.get_by_test_id("test-detail")).to_contain_text("answered in", timeout=90_000)
    shot(page, "1-teacher")

    # Prompts with the teacher's answers (the demo's), 8 of them held out.
    upload = tmp_path / "first-hour.jsonl"
    lines = (ROOT / "demo" / "prompts.jsonl").read_text().splitlines()[:24]
    upload.write_text("\n".join(lines) + "\n")
    page.goto(f"{base}/teams/lab/prompt-sets/")
    page.fill("#id_name", "first-hour")
    page.set_input_files("#id_file", str(upload))
    page.click("[data-testid=upload-form] button")
    page.wait_for_url("**/prompt-sets/*/", timeout=60_000)
    page.fill("#id_num_test", "8")
    page.click("button:has-text('Apply')")
    shot(page, "2-prompts")

    # The form's defaults run here: 0 GPUs is what a CPU-only site offers.
    page.goto(f"{base}/teams/lab/jobs/new/")
    expect(page.locator("#id_gpus")).to_have_value("0")
    shot(page, "3-launch")
    defaults = launch(page, base, "defaults", {})
    wait_for(
        lambda: job_status(defaults) not in ("queued",), 120, "the defaults job to start",
        site.logs,
    )  # fmt: skip
    assert job_status(defaults) != "failed", site.logs()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel job')")
    wait_for(lambda: job_status(defaults) == "cancelled", 120, "the cancel", site.logs)

    # A small job, watched to the end.
    small = launch(page, base, "small", SMALL)
    wait_for(lambda: job_status(small) in ("succeeded", "failed"), 300, "the job", site.logs)
    assert job_status(small) == "succeeded", site.logs()
    page.goto(f"{base}/teams/lab/jobs/{small}/")
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded")
    expect(page.locator("[data-chart]:not(.empty)").first).to_be_visible()
    shot(page, "4-watch")
    expect(page.locator("a:has-text('Download (HF format')").first).to_be_visible()

    page.goto(f"{base}/teams/lab/compare/")
    page.check(f"input[name=job][value='{small}']")
    page.check(f"input[name=job][value='{defaults}']")
    page.click("button:has-text('Compare')")
    expect(page.locator("[data-chart]:not(.empty)").first).to_be_visible()
    shot(page, "5-compare")

    # Evaluate on the held-out prompts: the student before and after, and the teacher.
    page.goto(f"{base}/teams/lab/evaluations/new/")
    page.fill("#id_name", "first look")
    page.select_option("#id_prompt_set", label="first-hour")
    page.check(f"input[name=jobs][value='{small}']")
    page.check("#id_include_base")
    page.select_option("#id_teacher", label="local teacher")
    page.click("button:has-text('Generate the answers')")
    expect(page.get_by_test_id("evaluation-status")).to_have_text("Ready", timeout=240_000)
    overlap = page.get_by_test_id("overlap-table")
    expect(overlap).to_contain_text("ROUGE-L")
    expect(overlap.locator("tbody tr")).to_have_count(2)  # the two students
    shot(page, "6-evaluate")

    # The tiny teacher cannot judge: the run fails and says why (an untrained judge
    # writes no answers of its own; one that writes but gives no readable verdicts is
    # stopped after its first 8: tests/webapp/test_evaluation_judge.py).
    page.click("button:has-text('Show the cost')")
    page.click("button:has-text('Judge with local teacher')")
    expect(page.get_by_test_id("judge-status")).to_have_text("Failed", timeout=240_000)
    expect(page.get_by_test_id("judge-error")).to_contain_text(
        re.compile(r"the judge's replies could not be read|The judge scored none of the")
    )
