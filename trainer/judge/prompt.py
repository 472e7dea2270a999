"""The judge's prompt and the parser of its verdicts (GAD.md "Evaluation").

For each test prompt the judge model first writes its *own* reference answer; then,
shown the question, the reference and a system's answer as "Assistant 1" and
"Assistant 2", it rates both 1–10. The item score is ``100 · s_model / (s_model +
s_ref)``: 50 means "as good as the judge's own answer".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Messages = list[dict[str, str]]

# ---------------------------------------------------------------------------- the prompt

JUDGE_SYSTEM = (
    "You are a careful and impartial judge of the answers that AI assistants give to "
    "users' questions."
)

JUDGE_TEMPLATE = """\
[Question]
{question}

[The Start of Assistant 1's Answer]
{answer_1}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}
[The End of Assistant 2's Answer]

Rate how well each assistant answered the question above. Consider helpfulness, \
relevance, accuracy, depth and level of detail, and penalize mistakes. Give each \
assistant an overall score on a scale of 1 to 10, where a higher score means a better \
answer. Judge the content alone: neither the order in which the answers appear, nor \
their length, nor the assistants' names may influence your rating.

First output a single line containing only the two scores, for Assistant 1 and \
Assistant 2 in that order, separated by a space. Then, starting on the next line, \
explain your evaluation."""

# Appended to the judge prompt for the one retry of an unreadable verdict.
NUDGE = (
    "\n\nImportant: your reply must begin with a line containing nothing but two numbers "
    "from 1 to 10 separated by a space: the score of Assistant 1, then the score of "
    "Assistant 2."
)


def render_question(messages: Sequence[dict[str, str]]) -> str:
    """The prompt as the judge sees it: the user's text, or a transcript for chats."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def verdict_messages(question: str, answer_1: str, answer_2: str) -> Messages:
    """The judge prompt: the system line, then the question and the two answers."""
    text = JUDGE_TEMPLATE.format(question=question, answer_1=answer_1, answer_2=answer_2)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


def nudged(messages: Messages) -> Messages:
    """The judge prompt for the one retry: NUDGE appended, hence another cache key."""
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + NUDGE}]


# ---------------------------------------------------------------------------- the parser


class UnparseableVerdict(ValueError):
    """The verdict does not start with two scores from 1 to 10; the message says why."""


_NUM = r"(\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*10(?:\.0+)?)?"
_SEP = r"(?:\s*(?:[,;|&]|and|vs\.?)\s*|\s+)"
_PREFIX = re.compile(r"(?:scores?|ratings?)\s*[:=\-]?\s*", re.I)
_PLAIN = re.compile(rf"{_NUM}{_SEP}{_NUM}[\s.]*", re.I)
_LABEL = re.compile(
    rf"(?:(?:the\s+)?score\s+(?:of|for)\s+)?assistant\s*([12])(?:'s)?(?:\s+score)?\s*[:=\-]?\s*"
    rf"{_NUM}",
    re.I,
)
_MARKDOWN = re.compile(r"[*_`#>]")


def parse_verdict(text: str) -> tuple[float, float]:
    """(score of Assistant 1, score of Assistant 2) from a verdict's first line(s).

    Accepts "8 7", "8/10 7/10", "8, 7", "7.5 8", "Scores: 8 and 7", markdown emphasis
    and leading spaces, and the labelled forms "Assistant 1: 8" / "Assistant 2: 7" on
    the first two lines or on one line (either order). An unlabelled first line must
    hold the two scores and nothing else, so an explanation that happens to start
    with numbers is not read as scores. Raises UnparseableVerdict, also for a score
    outside 1–10 or a missing second score.
    """
    lines = [line.strip() for line in _MARKDOWN.sub("", text).splitlines() if line.strip()]
    if not lines:
        raise UnparseableVerdict("empty verdict")
    head = _PREFIX.sub("", lines[0], count=1) if _PREFIX.match(lines[0]) else lines[0]
    if plain := _PLAIN.fullmatch(head):
        return _in_range(plain.group(1), plain.group(2))
    if _LABEL.match(lines[0]):  # "Score of Assistant 1: 8" would lose its label to _PREFIX
        head = lines[0]
    if _LABEL.match(head):
        labelled: dict[str, str] = {}
        for m in _LABEL.finditer(head):
            labelled.setdefault(m.group(1), m.group(2))
        if len(labelled) < 2 and len(lines) > 1 and (second := _LABEL.match(lines[1])):
            labelled.setdefault(second.group(1), second.group(2))
        if set(labelled) == {"1", "2"}:
            return _in_range(labelled["1"], labelled["2"])
        raise UnparseableVerdict("a score for only one assistant")
    if len(re.findall(_NUM, head)) == 1:
        raise UnparseableVerdict("only one score on the first line")
    raise UnparseableVerdict("the first line is not two scores")


def _in_range(first: str, second: str) -> tuple[float, float]:
    scores = float(first), float(second)
    for s in scores:
        if not 1 <= s <= 10:
            raise UnparseableVerdict(f"score {s:g} is outside 1–10")
    return scores


def item_score(s_model: float, s_ref: float) -> float:
    """100 · s_model / (s_model + s_ref): 50 is "as good as the judge's own answer"."""
    return 100.0 * s_model / (s_model + s_ref)
