"""Prompt sets back out as JSONL (the prompt-file contract, plus the split)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from webapp.promptsets.models import PromptSet


def jsonl_lines(prompt_set: PromptSet, split: str | None = None) -> Iterator[str]:
    """One JSON object a line, streamed from the database in chunks."""
    rows = prompt_set.prompts.order_by("index")
    if split:
        rows = rows.filter(split=split)
    fields = ("index", "external_id", "messages", "teacher_response", "split")
    for index, external_id, messages, teacher, row_split in rows.values_list(*fields).iterator(
        chunk_size=2000
    ):
        record: dict = {"id": external_id or str(index), "messages": messages}
        if teacher is not None:
            record["teacher_response"] = teacher
        record["split"] = row_split
        yield json.dumps(record, ensure_ascii=False) + "\n"
