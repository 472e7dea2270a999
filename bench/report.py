"""Shared by the benchmarks: print a table and rewrite one section of docs/benchmarks.md.

Each benchmark owns the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
the rest of the file is left as it is.
"""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, title: str, body: str, doc: Path = DOC) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n_Measured {stamp} on {machine()}; "
        f"regenerate with `.venv/bin/python bench/{name}.py`._\n\n{body.strip()}\n"
        f"<!-- /bench:{name} -->"
    )
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    doc.write_text(text)


def step_config(
    model: str,
    prompts: str,
    out: str,
    batch: int,
    group: int,
    max_new: int,
    max_prompt: int,
    **more: object,
) -> dict[str, object]:
    """A trainer config (plain data) of endless GAD/SeqKD steps without checkpoints or
    samples, for timing steps; ``more`` adds or replaces keys."""
    return {
        "method": "gad", "student": model, "train_file": prompts, "output_dir": out,
        "batch_size": batch, "group_size": group, "max_prompt_tokens": max_prompt,
        "max_response_tokens": max_new, "save_every": 10**6, "sample_every": 10**6,
        "warmup": {"epochs": 0}, "gad": {"epochs": 100}, "seqkd": {"epochs": 100},
        "resume": "never", **more,
    }  # fmt: skip
