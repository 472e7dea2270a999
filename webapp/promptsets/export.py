"""Prompt sets back out as JSONL (the prompt-file contract, plus the split).

Uploaded teacher answers come first; where none was uploaded, the answer a job
collected from one of the team's teachers is included, with that teacher's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from webapp.promptsets.answers import collected
from webapp.promptsets.models import PromptSet

CHUNK = 2000


def jsonl_lines(prompt_set: PromptSet, split: str | None = None) -> Iterator[str]:
    """One JSON object a line, streamed from the database in chunks."""
    rows = prompt_set.prompts.order_by("index")
    if split:
        rows = rows.filter(split=split)
    fields = ("index", "external_id", "messages", "teacher_response", "split", "prompt_hash")
    chunk: list[tuple] = []
    for row in rows.values_list(*fields).iterator(chunk_size=CHUNK):
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield from _lines(prompt_set, chunk)
            chunk = []
    yield from _lines(prompt_set, chunk)


def _lines(prompt_set: PromptSet, chunk: list[tuple]) -> Iterator[str]:
    answers = collected(prompt_set.team, [row[5] for row in chunk if row[3] is None])
    for index, external_id, messages, teacher, row_split, key in chunk:
        record: dict = {"id": external_id or str(index), "messages": messages}
        if teacher is not None:
            record["teacher_response"] = teacher
        elif key in answers:
            record["teacher_response"], record["teacher"] = answers[key]
        record["split"] = row_split
        yield json.dumps(record, ensure_ascii=False) + "\n"
