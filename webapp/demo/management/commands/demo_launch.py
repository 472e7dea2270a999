"""The second half of `make demo`: register the local teacher and the prompt set, and
launch a GAD job and its SeqKD pair sized to finish in minutes on a 2-core machine;
then (``--evaluate``) wait for them and set up what a user compares them with: an
evaluation on the held-out prompts and an annotation campaign."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from webapp.annotation import actions as annotation_actions
from webapp.catalog.models import RegisteredModel
from webapp.evaluation import actions as eval_actions
from webapp.evaluation import results
from webapp.evaluation.models import EvalStatus, Evaluation, PromptChoice
from webapp.jobs import actions as job_actions
from webapp.jobs.configs import build_configs
from webapp.jobs.models import FINAL_STATUSES, Job, Method, Status
from webapp.promptsets.actions import set_test_split
from webapp.promptsets.ingest import ingest
from webapp.teachers import actions as teacher_actions
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.models import Team

DEMO_STUDENT = "demo-student"
# The student starts pretrained (demo/student.yaml): weak but coherent. Tuned on the
# CLI (200 training prompts, greedy answers to 200 further prompts, unigram F1 against
# the teacher's: 0.56 before): warmup 2 epochs at 2e-3 then GAD 2 epochs at 2e-4 gives
# 0.72-0.73 over three seeds (the warmup alone 0.67; the DEMO_CONFIG before this one,
# 0.57); a 1-epoch warmup then GAD at 3e-4 for 3 epochs drifts (0.36); SeqKD 3 epochs
# at 2e-3 gives 0.73-0.75. 100 steps of GAD and 75 of SeqKD: about two minutes on two
# cores, the teacher's answers included.
DEMO_CONFIG = {
    "batch_size": 8,
    "group_size": 4,
    "max_prompt_tokens": 64,
    "max_response_tokens": 24,  # the teacher's answers are at most ~20 tokens
    "save_every": 10,
    "sample_every": 2,
    "warmup": {"epochs": 2, "d_only_steps": 3, "lr": 2.0e-3},
    "gad": {"epochs": 2, "lr": 2.0e-4},
    "seqkd": {"epochs": 3, "lr": 2.0e-3},
    "disc": {"lr": 2.0e-4},
    "optim": {"grad_clip": 1.0},
}
TEACHER_PARAMS = {"temperature": 0.3, "max_tokens": 32}
CAMPAIGN_TITLE = "Which answer is better?"  # annotators see it: it names no system
POLL_S = 2.0


class Command(BaseCommand):
    help = (
        "Register the demo teacher and prompt set; launch a GAD + SeqKD pair. With "
        "--evaluate: wait for the pair, then create the evaluation and the campaign."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", default="demo")
        parser.add_argument("--teacher-url", help="required unless --evaluate")
        parser.add_argument("--teacher-model", help="required unless --evaluate")
        parser.add_argument("--student", help="required unless --evaluate")
        parser.add_argument("--prompts", help="JSONL with prompts (answers dropped)")
        parser.add_argument("--train", type=int, default=200, help="training prompts")
        parser.add_argument("--test", type=int, default=40, help="held-out prompts")
        parser.add_argument(
            "--evaluate",
            action="store_true",
            help="instead of launching: wait for the team's last GAD job and its SeqKD "
            "pair, then compare teacher, student before distillation, GAD and SeqKD on "
            "the held-out prompts, and give --user an annotation campaign",
        )
        parser.add_argument("--user", default="demo", help="owner and annotator (--evaluate)")
        parser.add_argument("--timeout", type=float, default=1800, help="seconds (--evaluate)")
        parser.add_argument("--site", default="", help="the site's URL, to print links with")

    def handle(self, team, evaluate, **options):
        team = Team.objects.get(slug=team)
        if evaluate:
            self.evaluate(team, options["user"], options["timeout"], options["site"])
            return
        required = ("teacher_url", "teacher_model", "student", "prompts")
        missing = ["--" + name.replace("_", "-") for name in required if not options[name]]
        if missing:
            raise CommandError(f"{', '.join(missing)} required (or --evaluate)")
        self.launch(team, **options)

    # ------------------------------------------------------------------------- launch

    def launch(self, team, teacher_url, teacher_model, student, prompts, train, test, **_):
        stale = job_actions.abandon_active(team, "Cancelled: a new `make demo` run started.")
        if stale:
            self.stdout.write(f"cancelled {stale} job(s) left over from an earlier demo run")
        quota = team.quota
        quota.max_concurrent_jobs = max(quota.max_concurrent_jobs, 4)
        quota.save()
        teacher = self._teacher(team, teacher_url, teacher_model)
        prompt_set = self._prompt_set(team, Path(prompts), train + test)
        set_test_split(prompt_set, test, seed=0)
        # Registered as an administrator would: teams name models, never paths.
        RegisteredModel.objects.update_or_create(
            name=DEMO_STUDENT,
            defaults={
                "path": str(Path(student).resolve()),
                "description": "the demo's tiny student, pretrained briefly (demo/student.yaml)",
            },
        )
        ref = f"model:{DEMO_STUDENT}"
        spec, errors = build_configs(team, "pair", ref, DEMO_CONFIG)
        if spec is None:
            raise SystemExit(f"demo config is invalid: {errors}")
        request = job_actions.LaunchRequest("demo", prompt_set, teacher, spec)
        jobs = job_actions.launch(team, None, request)
        self.stdout.write(f"launched {', '.join(f'{j.name} (#{j.pk})' for j in jobs)}")

    def _teacher(self, team, url: str, model: str) -> TeacherEndpoint:
        existing = TeacherEndpoint.objects.filter(team=team, name="Local tiny teacher").first()
        if existing:
            return teacher_actions.update_endpoint(
                existing, name=existing.name, base_url=url, model=model, params=TEACHER_PARAMS
            )
        return teacher_actions.create_endpoint(
            team, None, name="Local tiny teacher", base_url=url, model=model, params=TEACHER_PARAMS
        )

    def _prompt_set(self, team, source: Path, count: int):
        # The prompts without their answers: the demo collects them from the teacher.
        lines = []
        with open(source, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                record.pop("teacher_response", None)
                lines.append(json.dumps(record))
                if len(lines) == count:
                    break
        upload = SimpleUploadedFile("demo-prompts.jsonl", ("\n".join(lines) + "\n").encode())
        return ingest(team, None, f"Demo instructions ({count})", upload)

    # ------------------------------------------------------------------------- evaluate

    def evaluate(self, team: Team, username: str, timeout: float, site: str) -> None:
        user = get_user_model().objects.get(username=username)
        gad = Job.objects.filter(team=team, method=Method.GAD).order_by("-created_at").first()
        seqkd = gad.pair if gad else None
        if gad is None or seqkd is None:
            raise CommandError(f"team {team.slug} has no GAD job with a SeqKD pair to evaluate")
        jobs = [gad, seqkd]
        deadline = time.monotonic() + timeout
        self.stdout.write(f"waiting for {' and '.join(j.name for j in jobs)} to finish")
        poll(lambda: all(status(job) in FINAL_STATUSES for job in jobs), deadline)
        for job in jobs:
            if job.status != Status.SUCCEEDED:
                raise CommandError(f"{job.name} (#{job.pk}) {job.status}: {job.error[-2000:]}")
        evaluation = self._evaluation(team, user, gad, seqkd)
        self.stdout.write(f"generating the answers of evaluation #{evaluation.pk}")
        poll(lambda: status(evaluation) != EvalStatus.GENERATING, deadline)
        if evaluation.status != EvalStatus.READY:
            failed = evaluation.systems.exclude(error="").values_list("name", "error")
            raise CommandError(f"evaluation #{evaluation.pk}: {dict(failed)}")
        systems = list(evaluation.systems.select_related("job"))
        campaign = annotation_actions.create_campaign(
            evaluation,
            user,
            title=CAMPAIGN_TITLE,
            pairs=annotation_actions.default_pairs(systems),
            annotators=[user],
            overlap=1,
            seed=0,
        )
        self.stdout.write(scores_table(evaluation))
        args = {"slug": team.slug, "pk": evaluation.pk}
        self.stdout.write(f"evaluation: {site}{reverse('evaluation', kwargs=args)}")
        args["pk"] = campaign.pk
        self.stdout.write(f"annotate:   {site}{reverse('annotate-campaign', kwargs=args)}")

    def _evaluation(self, team: Team, user, gad: Job, seqkd: Job) -> Evaluation:
        """Teacher, the student before distillation, GAD and SeqKD, greedy (the paper's
        evaluation) on the held-out prompts, as a member would create it. The page shows
        the automatic scores without a judge; the tiny teacher cannot judge (measured:
        none of its verdicts readable, 4.5 minutes of both cores spent finding out)."""
        teacher, prompt_set = gad.teacher, gad.prompt_set
        if teacher is None or prompt_set is None:
            raise CommandError(f"{gad.name} (#{gad.pk}): its teacher or prompt set was deleted")
        final = [eval_actions.final_checkpoint(job) for job in (gad, seqkd)]
        systems = [eval_actions.teacher_system(teacher), eval_actions.base_system(gad)]
        systems += [eval_actions.checkpoint_system(c) for c in final if c is not None]
        return eval_actions.create_evaluation(
            team,
            user,
            name=f"Demo: teacher, student, GAD and SeqKD (jobs #{gad.pk}, #{seqkd.pk})",
            prompt_set=prompt_set,
            prompt_choice=PromptChoice.TEST,
            systems=systems,
            max_new_tokens=eval_actions.response_tokens(gad.config.get(eval_actions.TOKENS_KEY)),
            temperature=None,
        )


def status(row: Job | Evaluation) -> str:
    row.refresh_from_db(fields=["status", "error"] if isinstance(row, Job) else ["status"])
    return row.status


def poll(done: Callable[[], bool], deadline: float) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise CommandError("gave up waiting (--timeout); the jobs' pages say where they are")
        time.sleep(POLL_S)


def scores_table(evaluation: Evaluation) -> str:
    """The evaluation's automatic scores (``results.diagnostics``: overlap with the teacher's
    answers, mean length in words) and how many answers are not empty, one line a system."""
    report = results.diagnostics(evaluation)
    answers = results.answers_by_label(evaluation)
    lines = [
        f"automatic scores on {evaluation.num_prompts} held-out prompts, against "
        f"{report['reference']}:",
        f"  {'system':<52} {'non-empty':>9} {'F1-1':>6} {'F1-2':>6} {'ROUGE-L':>7} {'length':>6}",
    ]
    for row in report["systems"]:
        texts = answers[row["system"]].values()
        non_empty = f"{sum(bool(t.strip()) for t in texts)}/{len(texts)}"
        f1 = [_number(row["ngram_f1"].get(n), 3) for n in ("1", "2")]
        lines.append(
            f"  {row['system'][:52]:<52} {non_empty:>9} {f1[0]:>6} {f1[1]:>6} "
            f"{_number(row['rouge_l'], 3):>7} {_number(row['mean_length'], 1):>6}"
        )
    return "\n".join(lines)


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
