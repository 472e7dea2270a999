"""A job's work directory on the shared data volume: its exported prompts, the trainer's
config and log, and the run directory the trainer writes (DESIGN.md, "Run directory")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webapp.jobs import archive
from webapp.jobs.models import Job


@dataclass
class Workspace:
    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "train.log"


def workspace(job: Job) -> Workspace:
    root = archive.job_dir(job)
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)
