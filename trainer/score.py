"""Diagnostics without a judge (GAD.md "Evaluation"): lengths, overlap with the teacher.

`python -m trainer score` reads answers files (as `generate` writes them: JSONL records
with `id` and `response`) and, optionally, the teacher's answers (a `collect` output, or
a prompt file with `teacher_response`), matched by `id`. Per system it reports answer
lengths (mean, median, p95), distinct-1/2, and against the teacher n-gram overlap F1
for n = 1…6 and ROUGE-L. The definitions are in `trainer.metrics_text`.

Lengths count whitespace-separated tokens, or a given tokenizer's tokens; overlap and
distinct-n use `metrics_text.words` (lowercased words and punctuation marks) whatever
the tokenizer, so they compare across students with different vocabularies.

The answers-file readers here are shared with `trainer.judge`; the command itself
(flags to calls, the printed report) is in `trainer.cli_eval`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import BadInput
from trainer.metrics_text import (
    LengthStats,
    corpus_ngram_f1,
    distinct_n,
    length_stats,
    mean_defined,
    rouge_l,
    rouge_tokens,
    whitespace_tokens,
    words,
)

MAX_N = 6

# ---------------------------------------------------------------------------- answers files


@dataclass
class AnswerRow:
    text: str
    line: int
    messages: list[Any] | None = None  # as read from the file, not validated


def system_arg(value: str) -> tuple[str, str]:
    """``name=path`` or ``path`` (the name is then the file's stem)."""
    name, sep, path = value.partition("=")
    if sep and name and os.sep not in name and "/" not in name:
        return name, path
    return Path(value).stem, value


def read_answers(path: str | Path, fields: Sequence[str] = ("response",)) -> dict[str, AnswerRow]:
    """id → answer from a JSONL file; the text is the first of ``fields`` present.

    Raises BadInput naming the file and line for a missing file, a malformed line, a
    record without `id` or text, or an id seen twice.
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".parquet"):
        raise BadInput(
            f"answers file {path}: answers files are JSONL, as `python -m trainer generate` "
            "and `collect` write them"
        )
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise BadInput(f"cannot read answers file {path}: {e.strerror or e}") from None
    rows: dict[str, AnswerRow] = {}
    with f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"answers file {path}: line {lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BadInput(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise BadInput(f"{where}: expected a JSON object")
            rid = obj.get("id")
            if rid in (None, ""):
                raise BadInput(
                    f"{where}: no 'id'; answers are matched to prompts by id, so give every "
                    "prompt an id and generate the answers again"
                )
            text = next((obj[k] for k in fields if obj.get(k) is not None), None)
            if not isinstance(text, str):
                names = " or ".join(repr(k) for k in fields)
                raise BadInput(f"{where}: no {names} string")
            rid = str(rid)
            if rid in rows:
                raise BadInput(f"{where}: id {rid!r} already on line {rows[rid].line}")
            messages = obj.get("messages") if isinstance(obj.get("messages"), list) else None
            rows[rid] = AnswerRow(text, lineno, messages)
    if not rows:
        raise BadInput(f"answers file {path}: empty file: no records")
    return rows


def match_ids(
    wanted: Mapping[str, object], rows: Mapping[str, AnswerRow], rows_from: str, wanted_from: str
) -> dict[str, str]:
    """id → text for the ids of ``wanted`` found in ``rows``; BadInput when none is.

    Warns on stderr when some are missing: a system judged on fewer prompts is
    compared on other items than the rest.
    """
    matched = {rid: rows[rid].text for rid in wanted if rid in rows}
    if not matched:
        sample = ", ".join(repr(k) for k in list(rows)[:3])
        raise BadInput(
            f"{rows_from}: none of its {len(rows)} ids (e.g. {sample}) matches the "
            f"{len(wanted)} ids of {wanted_from} (0 matched); were they made from the same "
            "prompt file?"
        )
    if len(matched) < len(wanted):
        missing = [rid for rid in wanted if rid not in rows]
        print(
            f"warning: {rows_from} has records for {len(matched)} of the {len(wanted)} ids "
            f"of {wanted_from}; it is compared on those only (missing: "
            f"{', '.join(map(repr, missing[:3]))}{', ...' if len(missing) > 3 else ''})",
            file=sys.stderr,
        )
    return matched


def load_systems(values: Sequence[str]) -> dict[str, tuple[str, dict[str, AnswerRow]]]:
    """name → (path, rows) for each ``--answers`` value; names must be distinct."""
    systems: dict[str, tuple[str, dict[str, AnswerRow]]] = {}
    for value in values:
        name, path = system_arg(value)
        if name in systems:
            raise BadInput(
                f"--answers {value}: two systems are named {name!r}; name them with "
                "--answers NAME=PATH"
            )
        systems[name] = (path, read_answers(path))
    return systems


# ---------------------------------------------------------------------------- scoring


@dataclass
class SystemScores:
    system: str
    lengths: LengthStats | None
    distinct: dict[int, float | None]  # n → distinct-n
    n_matched: int = 0  # answers with a teacher answer of the same id
    ngram_f1: dict[int, float | None] = field(default_factory=dict)  # n → mean F1
    rouge_l: float | None = None


def score_system(
    name: str,
    answers: Mapping[str, str],
    reference: Mapping[str, str] | None = None,
    count: Callable[[str], int] = lambda text: len(whitespace_tokens(text)),
    max_n: int = MAX_N,
) -> SystemScores:
    """Length stats and distinct-1/2 over all answers; overlap over the ids in both."""
    tokens = {rid: words(text) for rid, text in answers.items()}
    scores = SystemScores(
        system=name,
        lengths=length_stats([count(text) for text in answers.values()]),
        distinct={n: distinct_n(list(tokens.values()), n) for n in (1, 2)},
    )
    if reference is not None:
        ids = [rid for rid in answers if rid in reference]
        cands = [tokens[rid] for rid in ids]
        refs = [words(reference[rid]) for rid in ids]
        scores.n_matched = len(ids)
        scores.ngram_f1 = {n: corpus_ngram_f1(cands, refs, n) for n in range(1, max_n + 1)}
        # ROUGE-L on ROUGE's own tokens, so the number is the one rouge-score reports.
        rouge = [rouge_l(rouge_tokens(answers[rid]), rouge_tokens(reference[rid])) for rid in ids]
        scores.rouge_l = mean_defined(rouge)
    return scores


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def format_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def format_report(rows: Sequence[SystemScores], unit: str, reference: str | None) -> str:
    head = ["system", "answers", "mean", "median", "p95", "distinct-1", "distinct-2"]
    lengths = [head]
    for s in rows:
        st = s.lengths
        lengths.append(
            [
                s.system,
                str(st.n if st else 0),
                _num(st.mean if st else None, ".1f"),
                _num(st.median if st else None, ".1f"),
                _num(st.p95 if st else None, ".1f"),
                _num(s.distinct[1]),
                _num(s.distinct[2]),
            ]
        )
    out = f"answer lengths ({unit})\n{format_table(lengths)}"
    systems = [s for s in rows if s.ngram_f1]
    if reference is not None and systems:
        head = ["system", "matched", *(f"F1-{n}" for n in range(1, MAX_N + 1)), "ROUGE-L"]
        overlap = [head]
        for s in systems:
            f1s = [_num(s.ngram_f1.get(n)) for n in range(1, MAX_N + 1)]
            overlap.append([s.system, str(s.n_matched), *f1s, _num(s.rouge_l)])
        out += f"\n\noverlap with {reference} (n-gram F1, ROUGE-L)\n{format_table(overlap)}"
    return out
