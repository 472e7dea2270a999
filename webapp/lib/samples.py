"""The samples viewer's view model: model text split into prose and code blocks, and
the prompt (the trainer writes it as the chat template rendered it, special tokens and
all) split into its turns.

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

# Chat templates whose turns the viewer shows as turns: group 1 the role, group 2 the
# text. A turn ends at its end token, the next turn, or the end of the text.
CHAT_FORMATS = (
    # ChatML (Qwen, SmolLM, the tiny test models)
    re.compile(r"<\|im_start\|>(\w+)\n?(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|\Z)", re.S),
    # Llama 3
    re.compile(
        r"<\|start_header_id\|>(\w+)<\|end_header_id\|>(.*?)"
        r"(?:<\|eot_id\|>|(?=<\|start_header_id\|>)|\Z)",
        re.S,
    ),
    # Gemma
    re.compile(r"<start_of_turn>(\w+)\n?(.*?)(?:<end_of_turn>|(?=<start_of_turn>)|\Z)", re.S),
    # Phi-3
    re.compile(
        r"<\|(system|user|assistant)\|>(.*?)"
        r"(?:<\|end\|>|(?=<\|(?:system|user|assistant)\|>)|\Z)",
        re.S,
    ),
)
# What a template writes around its turns (begin-of-text and end tokens): nothing to show.
# Any other text outside the turns means a format the viewer does not know.
BETWEEN_TURNS = re.compile(r"<\|[\w.-]+\|>|</?s>|<bos>|<eos>|\s+")
# An empty reasoning block some templates (Qwen3) open the answer with.
EMPTY_THINK = re.compile(r"<think>\s*</think>")


@dataclass(frozen=True)
class Segment:
    kind: str  # text | code
    text: str
    lang: str = ""


@dataclass(frozen=True)
class Turn:
    role: str
    segments: list[Segment]


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
    turns: list[Turn] = field(default_factory=list)  # a chat prompt's turns, if parsed


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


def chat_turns(text: str) -> list[tuple[str, str]] | None:
    """(role, text) of each turn of a prompt rendered by a known chat template, without
    its special tokens; None for any other text. Empty turns (the generation prompt's
    opened assistant turn) are left out."""
    for pattern in CHAT_FORMATS:
        turns: list[tuple[str, str]] = []
        outside, pos = [], 0
        for match in pattern.finditer(text):
            outside.append(text[pos : match.start()])
            turns.append((match.group(1), EMPTY_THINK.sub("", match.group(2)).strip("\n")))
            pos = match.end()
        if not turns:
            continue
        outside.append(text[pos:])
        if any(BETWEEN_TURNS.sub("", part) for part in outside):
            return None
        return [(role, body) for role, body in turns if body.strip()] or None
    return None


def answer(label: str, text: object, chat: bool = False, **numbers) -> Answer:
    """One text of the viewer; with ``chat``, a prompt shown as its turns when its chat
    template is one the viewer knows (else as the plain text)."""
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    turns = chat_turns(text) if chat else None
    shown = "\n".join(body for _, body in turns) if turns else text
    folded = len(shown) > FOLD_CHARS or shown.count("\n") >= FOLD_LINES
    preview = " ".join(shown[:PREVIEW_CHARS].split())
    if len(shown) > PREVIEW_CHARS:
        preview += " …"
    result = Answer(label, split_fences(shown), len(shown), folded, preview, **numbers)
    result.turns = [Turn(role, split_fences(body)) for role, body in turns or []]
    return result


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
        str(data.get("id", "")), answer("Prompt", data.get("prompt"), chat=True), teacher, students
    )
