"""The samples viewer's view model: model text split into prose and code blocks.

Nothing here produces HTML. The template renders every piece with autoescaping: prose
in a pre-wrapped block, a markdown code fence as ``<pre><code>``. Model output is
untrusted text (an untrained student emits anything, ``<script>`` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+.#-]*)[^\n]*$", re.M)
FOLD_CHARS = 600
FOLD_LINES = 12
PREVIEW_CHARS = 160


@dataclass(frozen=True)
class Segment:
    kind: str  # text | code
    text: str
    lang: str = ""


@dataclass
class Answer:
    label: str
    segments: list[Segment]
    chars: int
    folded: bool
    preview: str
    score: float | None = None
    reward: float | None = None
    advantage: float | None = None
    length: int | None = None
    terminated: bool | None = None
    teacher: bool = False


@dataclass
class PromptView:
    id: str
    prompt: Answer
    teacher: Answer | None
    students: list[Answer] = field(default_factory=list)


def split_fences(text: str) -> list[Segment]:
    """Prose and fenced code blocks, in order. An unclosed fence runs to the end."""
    segments: list[Segment] = []
    pos = 0
    while True:
        opening = FENCE.search(text, pos)
        if opening is None:
            break
        marker, lang = opening.group(1), opening.group(2)
        closing = re.compile(rf"^[ \t]*{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", re.M)
        body_start = opening.end() + 1
        end = closing.search(text, body_start)
        body = text[body_start : end.start() if end else len(text)]
        _add_text(segments, text[pos : opening.start()])
        segments.append(Segment("code", body.rstrip("\n"), lang))
        if end is None:
            return segments
        pos = end.end() + 1
    _add_text(segments, text[pos:])
    return segments


def _add_text(segments: list[Segment], text: str) -> None:
    if text.strip():
        segments.append(Segment("text", text.strip("\n")))


def answer(label: str, text: object, **numbers) -> Answer:
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    folded = len(text) > FOLD_CHARS or text.count("\n") >= FOLD_LINES
    preview = " ".join(text[:PREVIEW_CHARS].split())
    if len(text) > PREVIEW_CHARS:
        preview += " …"
    return Answer(label, split_fences(text), len(text), folded, preview, **numbers)


def _at(values: object, i: int, kind: type):
    if not isinstance(values, list) or i >= len(values):
        return None
    value = values[i]
    if kind is float:
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    return value if isinstance(value, kind) else None


def prompt_view(data: dict) -> PromptView:
    """One samples.jsonl record (Sample.data) as the viewer shows it; tolerant of gaps."""
    samples = data.get("samples")
    samples = samples if isinstance(samples, list) else []
    teacher_score = data.get("teacher_score")
    teacher = None
    if data.get("teacher") is not None:
        teacher = answer(
            "Teacher",
            data.get("teacher"),
            score=float(teacher_score) if isinstance(teacher_score, int | float) else None,
            teacher=True,
        )
    students = [
        answer(
            f"Student {i + 1}",
            text,
            score=_at(data.get("scores"), i, float),
            reward=_at(data.get("rewards"), i, float),
            advantage=_at(data.get("advantages"), i, float),
            length=_at(data.get("sample_lengths"), i, int),
            terminated=_at(data.get("terminated"), i, bool),
        )
        for i, text in enumerate(samples)
    ]
    return PromptView(
        str(data.get("id", "")), answer("Prompt", data.get("prompt")), teacher, students
    )
