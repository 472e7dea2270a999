"""Every config file the project ships loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(ROOT.glob("demo/*.yaml")) + sorted(ROOT.glob("configs/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_loads(path, tmp_path):
    cfg = load_config(path, [f"student={tmp_path}", f"output_dir={tmp_path / 'run'}"])
    assert cfg.method in ("gad", "seqkd")


def test_demo_job_config_is_valid(db):
    from webapp.demo.management.commands.demo_launch import DEMO_CONFIG
    from webapp.jobs.configs import build_configs
    from webapp.teams.models import Team

    team = Team.objects.create(name="Demo", slug="demo")
    spec, errors = build_configs(team, "pair", "org/student", DEMO_CONFIG)
    assert errors == [] and set(spec.configs) == {"gad", "seqkd"}


def test_there_are_shipped_configs():
    assert SHIPPED
