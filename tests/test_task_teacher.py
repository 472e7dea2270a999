"""bench/task_teacher.py, the teacher of bench/paper_claims.py: every phrasing it gives is
checked as right and another task's answer as wrong, it reads its own prompts back, and
its loopback server answers the product's teacher client in several phrasings."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from task_teacher import (  # noqa: E402
    TEMPLATES,
    TeacherServer,
    correct,
    make_task,
    parse,
    phrasings,
    solution,
)


def test_every_phrasing_is_right_and_another_tasks_answer_is_wrong():
    rng = random.Random(0)
    for ood in (False, True):
        for _ in range(500):
            kind = rng.choice(list(TEMPLATES))
            task, other = make_task(kind, rng, ood), make_task(kind, rng, ood)
            assert parse(task.prompt) == task
            assert len(set(phrasings(task))) == 4
            assert all(correct(task, p) for p in phrasings(task))
            if solution(other) != solution(task):
                assert not any(correct(task, p) for p in phrasings(other))
    sort = make_task("sort", random.Random(1), False)
    assert not correct(sort, "Sorted: " + ", ".join(map(str, sort.args)))  # unsorted
    assert not correct(sort, "")


def test_the_server_answers_the_products_client_in_phrasings_drawn_at_random():
    from trainer.teacher import TeacherSpec, ask, make_client

    task = make_task("capital", random.Random(3), False)
    messages = [{"role": "user", "content": task.prompt}]

    async def answers(spec: TeacherSpec) -> list[str]:
        client = make_client(spec)
        try:
            return [(await ask(client, spec, messages)).response for _ in range(24)]
        finally:
            await client.close()

    with TeacherServer(seed=0) as server:
        got = asyncio.run(answers(TeacherSpec(base_url=server.url, model="task-teacher")))
    assert all(correct(task, a) for a in got)
    assert len(set(got)) > 1 and set(got) <= set(phrasings(task))
