"""The demo measures on prompts its students never saw: demo/prompts.jsonl holds no prompt
twice (normalised), the demo distils and evaluates on its first 240 prompts and pretrains
its student on its last 1280 (scripts/demo.sh), and its held-out split shares nothing with
either."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainer.dedup import normalise

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "demo" / "prompts.jsonl"
DISTILLED, PRETRAINING = 240, 1280  # demo_launch --train 200 --test 40; tail -n 1280


def prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in CORPUS.read_text().splitlines()]


def test_the_committed_corpus_is_what_its_generator_writes(tmp_path):
    out = tmp_path / "prompts.jsonl"
    subprocess.run(
        [sys.executable, "demo/make_prompts.py", "--out", str(out), "--n", "3000", "--seed", "0"],
        cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip
    assert out.read_bytes() == CORPUS.read_bytes()


def test_no_prompt_occurs_twice_case_spacing_and_punctuation_aside():
    keys = [normalise(p) for p in prompts()]
    assert len(keys) == 3000 and len(set(keys)) == 3000
    demo = "\n".join(Path(ROOT / "scripts" / "demo.sh").read_text().splitlines())
    assert f"tail -n {PRETRAINING} demo/prompts.jsonl" in demo


def test_the_demos_held_out_prompts_are_in_neither_its_training_nor_the_students(db):
    from django.contrib.auth import get_user_model

    from webapp.demo.management.commands.demo_launch import Command
    from webapp.promptsets import contamination
    from webapp.promptsets.actions import set_test_split
    from webapp.promptsets.models import Split
    from webapp.teams.actions import create_team

    owner = get_user_model().objects.create_user("demo", "demo@example.com", "x" * 20)
    team = create_team("Demo", "demo", owner=owner)
    prompt_set = Command()._prompt_set(team, CORPUS, DISTILLED)
    set_test_split(prompt_set, 40, seed=0)  # as demo_launch does
    assert contamination.of_split(prompt_set) == {"exact": 0, "near": 0, "checked": 40}
    held_out = {
        normalise(t.removeprefix("user: "))
        for t in prompt_set.prompts.filter(split=Split.TEST).values_list("text", flat=True)
    }
    trained = {
        normalise(t.removeprefix("user: "))
        for t in prompt_set.prompts.filter(split=Split.TRAIN).values_list("text", flat=True)
    }
    pretraining = {normalise(p) for p in prompts()[-PRETRAINING:]}
    assert len(held_out) == 40 and not held_out & trained and not held_out & pretraining
