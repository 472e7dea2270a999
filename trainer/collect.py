"""The files `python -m trainer collect` writes (the command is in `trainer.cli_eval`).

OUT (JSONL, the input records plus ``response``, ``finish_reason``, ``usage``) holds
the answers flagged ``ok`` only; answers that came back empty, cut by ``max_tokens``,
refused or failed for good go to ``OUT.flagged.jsonl`` with their flag, so none is used
for training by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.data import PromptRecord
from trainer.teacher import AnswerStore, TeacherSpec, prompt_hash


def write_answers(
    records: Sequence[PromptRecord], spec: TeacherSpec, store: AnswerStore, out: Path
) -> tuple[int, int]:
    """OUT and OUT.flagged.jsonl from the store's answers to ``records``; (written, flagged)."""
    answers = store.get_many(spec.fingerprint, (prompt_hash(r.messages) for r in records))
    flagged_path = out.with_name(out.name + ".flagged.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = flagged = 0
    tmp, tmp_flagged = (
        out.with_name(out.name + ".tmp"),
        flagged_path.with_name(flagged_path.name + ".tmp"),
    )
    with open(tmp, "w") as good, open(tmp_flagged, "w") as bad:
        for rec in records:
            answer = answers.get(prompt_hash(rec.messages))
            if answer is None:
                continue
            row: dict[str, Any] = {"messages": rec.messages}
            if rec.id is not None:
                row["id"] = rec.id
            row.update(
                response=answer.response, finish_reason=answer.finish_reason, usage=answer.usage
            )
            if answer.flag == "ok":
                good.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
            else:
                row.update(flag=answer.flag, error=answer.error)
                bad.write(json.dumps(row, ensure_ascii=False) + "\n")
                flagged += 1
    os.replace(tmp, out)  # readers never see a half-written file
    if flagged:
        os.replace(tmp_flagged, flagged_path)
    else:
        tmp_flagged.unlink()
    return written, flagged
