"""LLM-as-judge evaluation (GAD.md "Evaluation"), through the teacher's one wrapper.

For each test prompt the judge model first writes its *own* reference answer; then,
shown the question, the reference and a system's answer as "Assistant 1" and
"Assistant 2", it rates both 1–10. The item score is ``100 · s_model / (s_model +
s_ref)``: 50 means "as good as the judge's own answer". The product judges both
presentation orders and averages them (position bias), and counts the items where the
two orders disagree by more than a threshold.

The run is three rounds of `trainer.teacher.collect`, so every judge call has the
teacher's retries, typed errors, rate limits, token budget and durable cache:

1. reference answers: the test prompt as is, keyed by the judge's fingerprint; reused
   by every system and every later run;
2. verdicts: the judge prompt below, keyed by the hash of the full prompt, so
   re-scoring the same answers costs nothing;
3. one retry of each verdict that could not be parsed, with a nudge appended (a
   different prompt, hence a different cache key). A verdict still unreadable is a
   failure, never a zero.

The store keeps raw verdict texts; parsing happens when the report is built, so a
better parser re-reads old verdicts for free.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from trainer.errors import BadInput
from trainer.metrics_text import bootstrap_ci, whitespace_tokens
from trainer.teacher import (
    Answer,
    Limits,
    RetryPolicy,
    Sampling,
    Summary,
    TeacherError,
    TeacherSpec,
    collect,
    prompt_hash,
)

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


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class JudgeConfig:
    reference_max_tokens: int = 1536  # the paper's answer length cap
    verdict_max_tokens: int = 512  # two scores and an explanation
    temperature: float | None = 0.0  # deterministic judging: reruns agree, caches hold
    disagreement: float = 10.0  # item-score points between the two orders
    resamples: int = 1000  # bootstrap
    confidence: float = 0.95
    seed: int = 0  # bootstrap seed


def judge_specs(endpoint: TeacherSpec, config: JudgeConfig) -> tuple[TeacherSpec, TeacherSpec]:
    """The judge endpoint with its reference-answer and verdict sampling parameters."""
    reference = replace(
        endpoint,
        sampling=Sampling(temperature=config.temperature, max_tokens=config.reference_max_tokens),
    )
    verdict = replace(
        endpoint,
        sampling=Sampling(temperature=config.temperature, max_tokens=config.verdict_max_tokens),
    )
    return reference, verdict


class Store(Protocol):
    """`trainer.teacher.AnswerStore`, or the web app's database-backed equivalent."""

    def get_many(self, fingerprint: str, hashes: Iterable[str]) -> dict[str, Answer]: ...

    def put(self, answer: Answer) -> None: ...


@dataclass(frozen=True)
class JudgeItem:
    id: str
    messages: Messages


# ---------------------------------------------------------------------------- results

Status = Literal["scored", "failed", "unjudged"]


@dataclass
class ItemResult:
    """One system's answer to one prompt, judged in both orders."""

    item_id: str
    system: str
    status: Status
    score: float | None = None  # mean of the two orders
    # Item score with the model as Assistant 1, then as Assistant 2.
    order_scores: tuple[float | None, float | None] = (None, None)
    disagrees: bool = False
    reason: str = ""  # why failed or unjudged
    answer_tokens: int = 0


@dataclass
class SystemReport:
    system: str
    n_prompts: int  # prompts in the test set
    n_answers: int  # prompts this system answered (matched by id)
    n_scored: int
    n_failures: int  # no usable verdict: unreadable twice, refused, or no reference
    n_unjudged: int  # not asked (budget) or no answer after retries: a rerun asks
    n_disagreements: int  # |order 1 − order 2| > threshold, among scored items
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    mean_length: float | None  # whitespace tokens of the system's answers


@dataclass
class JudgeSummary:
    """What the judge run asked and spent, over its three rounds."""

    references: int = 0  # reference answers needed
    verdicts: int = 0  # distinct verdict prompts needed (2 per answer)
    nudges: int = 0  # retries of unreadable verdicts needed
    cached: int = 0  # of those, found in the store
    requested: int = 0  # sent to the judge in this run
    http_requests: int = 0
    retries: int = 0  # transient failures retried
    failed: int = 0  # no answer after retries (asked again next run)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    stopped: str = "done"  # done | budget

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, s: Summary) -> None:
        self.cached += s.cached
        self.requested += s.requested
        self.http_requests += s.http_requests
        self.retries += s.retries
        self.failed += s.failed
        self.prompt_tokens += s.prompt_tokens
        self.completion_tokens += s.completion_tokens
        if s.stopped == "budget":
            self.stopped = "budget"

    def line(self) -> str:
        return (
            f"{self.references} references, {self.verdicts} verdicts, {self.nudges} retried "
            f"verdicts; {self.cached} cached, {self.requested} asked; "
            f"{self.tokens:,} tokens ({self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion); {self.http_requests} requests, "
            f"{self.retries} retries, {self.failed} failed; {self.wall_s:.1f} s; "
            f"stopped: {self.stopped}"
        )


@dataclass
class JudgeReport:
    judge: dict[str, str]  # model, base_url, fingerprints
    config: JudgeConfig
    systems: list[SystemReport]
    items: list[ItemResult]
    summary: JudgeSummary
    test_set: str = ""

    def to_dict(self) -> dict:
        return {
            "test_set": self.test_set,
            "judge": self.judge,
            "config": asdict(self.config),
            "systems": [asdict(s) for s in self.systems],
            "summary": {**asdict(self.summary), "tokens": self.summary.tokens},
            "items": [asdict(i) for i in self.items],
        }

    def table(self) -> str:
        """Rows = systems; score [95% CI], items scored, mean length, failures, disagreements."""
        from trainer.score import format_table

        unjudged = any(s.n_unjudged for s in self.systems)
        head = ["system", "judge score [95% CI]", "scored", "mean length", "failures"]
        rows = [[*head, "disagreements", *(["unjudged"] if unjudged else [])]]
        for s in self.systems:
            rows.append(
                [
                    s.system,
                    "—" if s.mean is None else f"{s.mean:.1f} [{s.ci_low:.1f}, {s.ci_high:.1f}]",
                    f"{s.n_scored}/{s.n_answers}",
                    "—" if s.mean_length is None else f"{s.mean_length:.1f}",
                    str(s.n_failures),
                    str(s.n_disagreements),
                    *([str(s.n_unjudged)] if unjudged else []),
                ]
            )
        return format_table(rows)


# ---------------------------------------------------------------------------- cost forecast


@dataclass(frozen=True)
class Forecast:
    reference_calls: int  # n prompts, minus cached references
    verdict_calls: int  # 2 · n · m, minus cached verdicts
    cached: int
    est_prompt_tokens: int
    est_completion_tokens: int

    @property
    def calls(self) -> int:
        return self.reference_calls + self.verdict_calls

    @property
    def est_tokens(self) -> int:
        return self.est_prompt_tokens + self.est_completion_tokens

    def line(self) -> str:
        return (
            f"{self.calls} judge calls ({self.reference_calls} reference answers + "
            f"{self.verdict_calls} verdicts; {self.cached} cached), about "
            f"{self.est_tokens:,} tokens, plus one retry per unreadable verdict"
        )


_TEMPLATE_TOKENS = (len(JUDGE_SYSTEM) + len(JUDGE_TEMPLATE)) // 4 + 16


def forecast(
    n_prompts: int,
    n_systems: int,
    config: JudgeConfig = JudgeConfig(),
    *,
    mean_prompt_chars: float = 500,
    mean_answer_chars: float = 2000,
    verdict_tokens: int = 200,
    cached_references: int = 0,
    cached_verdicts: int = 0,
    n_answers: int | None = None,
) -> Forecast:
    """Judge calls and tokens for n prompts and m systems, before any call is made.

    Calls: ``n`` reference answers + ``2·n·m`` verdicts (``2 · n_answers`` when not every
    system answered every prompt), minus the cached ones; retries of unreadable
    verdicts are not foreseen. Tokens at ~4 characters a token (the teacher's rule): a
    reference answer is assumed as long as the systems' answers (capped at
    ``reference_max_tokens``); a verdict prompt holds the template, the question and
    two answers; a verdict's explanation is ``verdict_tokens`` long.
    """
    pairs = n_prompts * n_systems if n_answers is None else n_answers
    prompt_t = int(mean_prompt_chars / 4) + 8
    answer_t = int(mean_answer_chars / 4)
    reference_t = min(answer_t, config.reference_max_tokens)
    verdict_prompt_t = _TEMPLATE_TOKENS + prompt_t + answer_t + reference_t
    cached_references = min(n_prompts, cached_references)
    cached_verdicts = min(2 * pairs, cached_verdicts)
    references = n_prompts - cached_references
    verdicts = 2 * pairs - cached_verdicts
    return Forecast(
        reference_calls=references,
        verdict_calls=verdicts,
        cached=cached_references + cached_verdicts,
        est_prompt_tokens=references * prompt_t + verdicts * verdict_prompt_t,
        est_completion_tokens=references * reference_t
        + verdicts * min(verdict_tokens, config.verdict_max_tokens),
    )


def forecast_run(
    items: Sequence[JudgeItem],
    answers: Mapping[str, Mapping[str, str]],
    endpoint: TeacherSpec,
    store: Store,
    config: JudgeConfig = JudgeConfig(),
) -> Forecast:
    """`forecast` for these prompts and answers: cached calls looked up in the store,
    real text sizes. Verdicts can be cached only where the reference answer is."""
    ref_spec, verdict_spec = judge_specs(endpoint, config)
    refs = store.get_many(ref_spec.fingerprint, [prompt_hash(it.messages) for it in items])
    plan = _verdict_plan(items, answers, refs)
    cached = store.get_many(verdict_spec.fingerprint, [prompt_hash(v.messages) for v in plan])
    texts = [by_id[it.id] for it in items for by_id in answers.values() if it.id in by_id]
    chars = [sum(len(m["content"]) for m in it.messages) for it in items]
    return forecast(
        len(items),
        len(answers),
        config,
        mean_prompt_chars=sum(chars) / len(chars) if chars else 0,
        mean_answer_chars=sum(map(len, texts)) / len(texts) if texts else 0,
        cached_references=len(refs),
        cached_verdicts=sum(prompt_hash(v.messages) in cached for v in plan),
        n_answers=len(texts),
    )


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Verdict:
    item_id: str
    system: str
    order: int  # 1: the system's answer is Assistant 1
    messages: Messages

    @property
    def key(self) -> tuple[str, str, int]:
        return self.item_id, self.system, self.order


def _verdict_plan(
    items: Sequence[JudgeItem],
    answers: Mapping[str, Mapping[str, str]],
    refs: Mapping[str, Answer],
) -> list[_Verdict]:
    plan = []
    for item in items:
        ref = refs.get(prompt_hash(item.messages))
        if ref is None or not _usable_reference(ref):
            continue
        question = render_question(item.messages)
        for system, by_id in answers.items():
            if item.id not in by_id:
                continue
            answer = by_id[item.id]
            # Both orders: the judge favours one position (usually the first).
            plan.append(
                _Verdict(item.id, system, 1, verdict_messages(question, answer, ref.response))
            )
            plan.append(
                _Verdict(item.id, system, 2, verdict_messages(question, ref.response, answer))
            )
    return plan


def _usable_reference(ref: Answer) -> bool:
    # A reference cut at max_tokens is still the judge's own answer; an empty, refused
    # or failed one is none.
    return ref.flag in ("ok", "length") and bool(ref.response.strip())


@dataclass(frozen=True)
class JudgeProgress:
    """Passed to ``on_progress`` after every judge call (and once per round at its start)."""

    phase: str  # references | verdicts | retries
    done: int  # calls of this round answered or found cached
    total: int  # calls this round needs
    tokens: int  # spent by the whole run so far (to charge a quota as it goes)
    failed: int  # calls of the run that failed after retries so far


Progress = Callable[[JudgeProgress], None]


async def judge(
    items: Sequence[JudgeItem],
    answers: Mapping[str, Mapping[str, str]],
    endpoint: TeacherSpec,
    store: Store,
    config: JudgeConfig = JudgeConfig(),
    limits: Limits | None = None,
    retry: RetryPolicy | None = None,
    on_progress: Progress | None = None,
) -> JudgeReport:
    """Judge every system's answers (system → item id → answer text) on ``items``.

    ``endpoint`` is the judge's base URL, model and key; its sampling is replaced by
    the config's. ``limits.max_total_tokens`` bounds the whole run (all three rounds).
    Raises TeacherError (scope "run") at once when the judge cannot be used at all
    (bad key, unknown model, unreachable): no request is sent after it.
    """
    limits, retry = limits or Limits(), retry or RetryPolicy()
    if len({it.id for it in items}) != len(items):
        raise ValueError("judge(): item ids must be unique")
    started = time.monotonic()
    ref_spec, verdict_spec = judge_specs(endpoint, config)
    summary = JudgeSummary()

    async def ask_all(phase: str, prompts: list[Messages], spec: TeacherSpec) -> dict[str, Answer]:
        hashes = [prompt_hash(m) for m in prompts]
        if prompts:
            budget = limits.max_total_tokens
            phase_limits = replace(
                limits,
                max_total_tokens=None if budget is None else max(0, budget - summary.tokens),
            )

            def progress(s: Summary) -> None:
                if on_progress:
                    done = s.cached + s.answered
                    spent, failed = summary.tokens + s.tokens, summary.failed + s.failed
                    on_progress(JudgeProgress(phase, done, s.total, spent, failed))

            summary.add(await collect(prompts, spec, store, phase_limits, retry, progress))
        return store.get_many(spec.fingerprint, hashes)

    ref_prompts = list({prompt_hash(it.messages): it.messages for it in items}.values())
    summary.references = len(ref_prompts)
    refs = await ask_all("references", ref_prompts, ref_spec)

    plan = _verdict_plan(items, answers, refs)
    summary.verdicts = len({prompt_hash(v.messages) for v in plan})
    verdicts = await ask_all("verdicts", [v.messages for v in plan], verdict_spec)

    unreadable = [v for v in plan if _unreadable(verdicts.get(prompt_hash(v.messages)))]
    retries = {v.key: replace(v, messages=nudged(v.messages)) for v in unreadable}
    summary.nudges = len({prompt_hash(v.messages) for v in retries.values()})
    retried = await ask_all("retries", [v.messages for v in retries.values()], verdict_spec)
    summary.wall_s = time.monotonic() - started

    results = _results(items, answers, refs, plan, verdicts, retries, retried, summary, config)
    return JudgeReport(
        judge={
            "model": endpoint.model,
            "base_url": endpoint.base_url,
            "reference_fingerprint": ref_spec.fingerprint,
            "verdict_fingerprint": verdict_spec.fingerprint,
        },
        config=config,
        systems=[
            _system_report(name, len(items), [r for r in results if r.system == name], config)
            for name in answers
        ],
        items=results,
        summary=summary,
    )


def _unreadable(answer: Answer | None) -> bool:
    """The judge answered, and not with two scores: worth one retry with the nudge.

    A request the judge refused (flag "error") is not: the same request would be
    refused again.
    """
    if answer is None or answer.flag == "error":
        return False
    try:
        parse_verdict(answer.response)
    except UnparseableVerdict:
        return True
    return False


def _order_outcome(
    verdict: _Verdict,
    first: Answer | None,
    retry: _Verdict | None,
    retried: Mapping[str, Answer],
    summary: JudgeSummary,
) -> tuple[float | None, Status, str]:
    """(item score of this order or None, status, reason)."""
    if first is None:
        return None, "unjudged", _not_asked(summary)
    if first.flag == "error":
        return None, "failed", f"the judge refused the verdict request: {first.error}"
    try:
        s1, s2 = parse_verdict(first.response)
    except UnparseableVerdict as err:
        second = retried.get(prompt_hash(retry.messages)) if retry else None
        if second is None:
            return None, "unjudged", _not_asked(summary)
        if second.flag == "error":
            return None, "failed", f"the judge refused the retried verdict: {second.error}"
        try:
            s1, s2 = parse_verdict(second.response)
        except UnparseableVerdict as again:
            return None, "failed", f"unreadable verdict ({err}; after a retry: {again})"
    s_model, s_ref = (s1, s2) if verdict.order == 1 else (s2, s1)
    return item_score(s_model, s_ref), "scored", ""


def _not_asked(summary: JudgeSummary) -> str:
    if summary.stopped == "budget":
        return "not judged: the token budget ran out"
    return "not judged: the judge gave no answer after retries (run again to ask)"


def _results(
    items: Sequence[JudgeItem],
    answers: Mapping[str, Mapping[str, str]],
    refs: Mapping[str, Answer],
    plan: list[_Verdict],
    verdicts: Mapping[str, Answer],
    retries: Mapping[tuple[str, str, int], _Verdict],
    retried: Mapping[str, Answer],
    summary: JudgeSummary,
    config: JudgeConfig,
) -> list[ItemResult]:
    by_key = {v.key: v for v in plan}
    results = []
    for item in items:
        ref = refs.get(prompt_hash(item.messages))
        for system, by_id in answers.items():
            if item.id not in by_id:
                continue
            result = ItemResult(
                item.id, system, "scored", answer_tokens=len(whitespace_tokens(by_id[item.id]))
            )
            results.append(result)
            if ref is None:
                result.status, result.reason = "unjudged", _not_asked(summary)
                continue
            if not _usable_reference(ref):
                result.status = "failed"
                why = ref.error or (ref.flag if ref.response.strip() else "empty")
                result.reason = f"the judge gave no reference answer ({why})"
                continue
            outcomes = []
            for order in (1, 2):
                v = by_key[(item.id, system, order)]
                first = verdicts.get(prompt_hash(v.messages))
                outcomes.append(_order_outcome(v, first, retries.get(v.key), retried, summary))
            result.order_scores = (outcomes[0][0], outcomes[1][0])
            failed = [o for o in outcomes if o[1] == "failed"]
            unjudged = [o for o in outcomes if o[1] == "unjudged"]
            if failed or unjudged:
                result.status = "failed" if failed else "unjudged"
                result.reason = (failed or unjudged)[0][2]
                continue
            a, b = outcomes[0][0], outcomes[1][0]
            result.score = (a + b) / 2
            result.disagrees = abs(a - b) > config.disagreement
    return results


def _system_report(
    name: str, n_prompts: int, results: list[ItemResult], config: JudgeConfig
) -> SystemReport:
    scores = [r.score for r in results if r.status == "scored"]
    ci = bootstrap_ci(scores, config.resamples, config.confidence, config.seed)
    lengths = [r.answer_tokens for r in results]
    return SystemReport(
        system=name,
        n_prompts=n_prompts,
        n_answers=len(results),
        n_scored=len(scores),
        n_failures=sum(r.status == "failed" for r in results),
        n_unjudged=sum(r.status == "unjudged" for r in results),
        n_disagreements=sum(r.disagrees for r in results),
        mean=sum(scores) / len(scores) if scores else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        mean_length=sum(lengths) / len(lengths) if lengths else None,
    )


def reports_by_group(
    report: JudgeReport, group_of: Mapping[str, str], n_prompts: Mapping[str, int]
) -> dict[str, list[SystemReport]]:
    """Each system's report over the items of each group (e.g. test set): the columns
    of the paper's Table 2 from one run over the union of the test sets.

    ``group_of`` maps item id → group, ``n_prompts`` group → its number of prompts;
    groups come out in ``n_prompts``'s order, systems in the report's. The scores and
    their bootstrap intervals are computed per group, never pooled across groups.
    """
    systems = [s.system for s in report.systems]
    by_key: dict[tuple[str, str], list[ItemResult]] = {}
    for r in report.items:
        group = group_of.get(r.item_id)
        if group is not None:
            by_key.setdefault((group, r.system), []).append(r)
    return {
        group: [
            _system_report(name, n, by_key.get((group, name), []), report.config)
            for name in systems
        ]
        for group, n in n_prompts.items()
    }


# ---------------------------------------------------------------------------- the CLI


@dataclass
class JudgeArgs:
    prompts: str
    answers: list[str]
    base_url: str
    model: str
    api_key_env: str | None = None
    concurrency: int = 16
    max_total_tokens: int | None = None
    cache: str | None = None
    out: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_tokens: int = 1536
    verdict_max_tokens: int = 512
    temperature: float = 0.0
    disagreement: float = 10.0
    resamples: int = 1000
    seed: int = 0


def load_test_set(path: str) -> list[JudgeItem]:
    """The test prompts; each needs a unique `id` (answers are matched by it)."""
    from trainer.data import iter_records

    if not Path(path).is_file():
        raise BadInput(f"prompt file {path} does not exist or is not a file")
    items: list[JudgeItem] = []
    lines: dict[str, int] = {}
    for rec in iter_records(path):  # raises BadInput naming the line
        if rec.id is None:
            raise BadInput(
                f"prompt file {path}: line {rec.line}: no 'id'; the judge matches answers to "
                "prompts by id, so every test prompt needs one"
            )
        if rec.id in lines:
            raise BadInput(
                f"prompt file {path}: line {rec.line}: id {rec.id!r} already on line "
                f"{lines[rec.id]}"
            )
        lines[rec.id] = rec.line
        items.append(JudgeItem(rec.id, rec.messages))
    return items


def load_answers(
    items: Sequence[JudgeItem], values: Sequence[str], prompts_path: str
) -> dict[str, dict[str, str]]:
    """system → item id → answer, for the ``--answers`` files, checked against the prompts."""
    from trainer.score import load_systems, match_ids

    by_id = {it.id: it for it in items}
    answers: dict[str, dict[str, str]] = {}
    for name, (path, rows) in load_systems(values).items():
        for rid, row in rows.items():
            if rid in by_id and row.messages is not None and row.messages != by_id[rid].messages:
                raise BadInput(
                    f"answers file {path}: line {row.line}: id {rid!r} answers another prompt "
                    f"than the one with that id in {prompts_path}; were the answers generated "
                    "from another prompt file?"
                )
        answers[name] = match_ids(
            by_id, rows, f"answers file {path}", f"prompt file {prompts_path}"
        )
    return answers


def _check(args: JudgeArgs) -> None:
    if args.concurrency < 1:
        raise BadInput(f"--concurrency {args.concurrency}: must be at least 1")
    for flag, value in (("--max-tokens", args.max_tokens),
                        ("--verdict-max-tokens", args.verdict_max_tokens),
                        ("--resamples", args.resamples)):  # fmt: skip
        if value < 1:
            raise BadInput(f"{flag} {value}: must be at least 1")
    if args.max_total_tokens is not None and args.max_total_tokens < 1:
        raise BadInput(f"--max-total-tokens {args.max_total_tokens}: must be at least 1")
    if args.temperature < 0:
        raise BadInput(f"--temperature {args.temperature}: must be at least 0")
    if args.disagreement < 0:
        raise BadInput(f"--disagreement {args.disagreement}: must be at least 0")
    if not args.base_url.startswith(("http://", "https://")):
        raise BadInput(f"--base-url {args.base_url!r}: must start with http:// or https://")


def run_judge(args: JudgeArgs) -> int:
    from trainer.collect import DEFAULT_CACHE, api_key
    from trainer.teacher import AnswerStore

    _check(args)
    items = load_test_set(args.prompts)
    answers = load_answers(items, args.answers, args.prompts)
    key, key_name = api_key(args.api_key_env)
    endpoint = TeacherSpec(
        base_url=args.base_url,
        model=args.model,
        api_key=key,
        api_key_name=key_name,
        timeout=args.timeout,
        role="judge",
    )
    config = JudgeConfig(
        reference_max_tokens=args.max_tokens,
        verdict_max_tokens=args.verdict_max_tokens,
        temperature=args.temperature,
        disagreement=args.disagreement,
        resamples=args.resamples,
        seed=args.seed,
    )
    limits = Limits(args.concurrency, args.rpm, args.tpm, args.max_total_tokens)
    store = AnswerStore(args.cache or DEFAULT_CACHE)
    try:
        print(f"judge: {forecast_run(items, answers, endpoint, store, config).line()}")
        bar = _Progress()
        try:
            report = asyncio.run(
                judge(items, answers, endpoint, store, config, limits, on_progress=bar.update)
            )
        finally:
            bar.close()
    except TeacherError as err:
        raise BadInput(f"the judge stopped the run: {err}") from None
    finally:
        store.close()
    report.test_set = Path(args.prompts).stem
    print(f"judge: {args.model} on {report.test_set} ({len(items)} prompts)")
    print(report.table())
    print(f"judge: {report.summary.line()}")
    if args.out:
        from trainer.score import write_json

        write_json(Path(args.out), report.to_dict())
        print(f"judge: report written to {args.out}")
    if report.summary.stopped == "budget":
        unjudged = sum(s.n_unjudged for s in report.systems)
        print(
            f"judge: stopped at the token budget ({args.max_total_tokens:,}); {unjudged} "
            "answers are not judged yet: run again with a larger budget to judge only those"
        )
    if report.summary.failed:
        print(
            f"judge: {report.summary.failed} judge calls failed after retries; run the same "
            "command again to ask only for those",
            file=sys.stderr,
        )
        return 1
    return 0


class _Progress:
    """tqdm bar on a terminal, one round at a time: references, verdicts, retries."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="call", disable=None, dynamic_ncols=True)
        self.phase = ""

    def update(self, p: JudgeProgress) -> None:
        if p.phase != self.phase:
            self.phase = p.phase
            self.bar.set_description(p.phase)
            self.bar.reset(total=p.total)
        self.bar.n = p.done
        self.bar.set_postfix(tokens=f"{p.tokens:,}", failed=p.failed)

    def close(self) -> None:
        self.bar.close()
