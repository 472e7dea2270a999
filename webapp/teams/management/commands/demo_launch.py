"""The second half of `make demo`: register the local teacher and the prompt set, and
launch a GAD job and its SeqKD pair sized to finish in minutes on a 2-core machine."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand

from webapp.catalog.models import RegisteredModel
from webapp.jobs import actions as job_actions
from webapp.jobs.configs import build_configs
from webapp.promptsets.actions import set_test_split
from webapp.promptsets.ingest import ingest
from webapp.teachers import actions as teacher_actions
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.models import Team

DEMO_STUDENT = "demo-student"
DEMO_CONFIG = {
    "batch_size": 8,
    "group_size": 4,
    "max_prompt_tokens": 64,
    "max_response_tokens": 24,
    "save_every": 10,
    "sample_every": 2,
    "warmup": {"epochs": 1, "d_only_steps": 3, "lr": 1.0e-3},
    "gad": {"epochs": 1, "lr": 1.0e-4},
    "seqkd": {"epochs": 2, "lr": 1.0e-3},
    "disc": {"lr": 1.0e-4},
    "optim": {"grad_clip": 1.0},
}


class Command(BaseCommand):
    help = "Register the demo teacher and prompt set; launch a GAD + SeqKD pair."

    def add_arguments(self, parser):
        parser.add_argument("--team", default="demo")
        parser.add_argument("--teacher-url", required=True)
        parser.add_argument("--teacher-model", required=True)
        parser.add_argument("--student", required=True)
        parser.add_argument("--prompts", required=True, help="JSONL with prompts (answers dropped)")
        parser.add_argument("--train", type=int, default=200, help="training prompts")
        parser.add_argument("--test", type=int, default=40, help="held-out prompts")

    def handle(self, team, teacher_url, teacher_model, student, prompts, train, test, **options):
        team = Team.objects.get(slug=team)
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
                "description": "the demo's tiny student",
            },
        )
        ref = f"model:{DEMO_STUDENT}"
        configs, errors = build_configs(team, "pair", ref, DEMO_CONFIG)
        if errors:
            raise SystemExit(f"demo config is invalid: {errors}")
        request = job_actions.LaunchRequest("demo", prompt_set, teacher, ref, 0, configs)
        jobs = job_actions.launch(team, None, request)
        self.stdout.write(f"launched {', '.join(f'{j.name} (#{j.pk})' for j in jobs)}")

    def _teacher(self, team, url: str, model: str) -> TeacherEndpoint:
        existing = TeacherEndpoint.objects.filter(team=team, name="Local tiny teacher").first()
        params = {"temperature": 0.3, "max_tokens": 32}
        if existing:
            return teacher_actions.update_endpoint(
                existing, name=existing.name, base_url=url, model=model, params=params
            )
        return teacher_actions.create_endpoint(
            team, None, name="Local tiny teacher", base_url=url, model=model, params=params
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
