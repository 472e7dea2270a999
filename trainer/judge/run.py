"""The judge run: its cost forecast, the three rounds of judge calls, the item results.

The run is three rounds of `trainer.teacher.collect`, so every judge call has the
teacher's retries, typed errors, rate limits, token budget and durable cache:

1. reference answers: the test prompt as is, keyed by the judge's fingerprint; reused
   by every system and every later run;
2. verdicts: the judge prompt (`trainer.judge.prompt`), keyed by the hash of the full
   prompt, so re-scoring the same answers costs nothing; each answer is judged in both
   presentation orders, averaged (position bias), and the items where the two orders
   disagree by more than a threshold are counted;
3. one retry of each verdict that could not be parsed, with a nudge appended (a
   different prompt, hence a different cache key). A verdict still unreadable is a
   failure, never a zero.

Rounds 2 and 3 are first run on a probe, the first ``JudgeConfig.probe_verdicts``
verdicts: when most of those are unreadable even after the nudge, the run stops there
(summary ``stopped == "unreadable"``, with an example reply) instead of paying for
every other verdict and its retry.

The store keeps raw verdict texts; parsing happens when the results are built, so a
better parser re-reads old verdicts for free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from trainer.data import iter_records
from trainer.errors import BadInput
from trainer.judge.prompt import (
    JUDGE_SYSTEM,
    JUDGE_TEMPLATE,
    Messages,
    UnparseableVerdict,
    item_score,
    nudged,
    parse_verdict,
    render_question,
    verdict_messages,
)
from trainer.judge.report import (
    ItemResult,
    JudgeConfig,
    JudgeReport,
    JudgeSummary,
    Status,
    system_report,
)
from trainer.metrics_text import whitespace_tokens
from trainer.ratelimit import Limits
from trainer.score import load_systems, match_ids
from trainer.teacher import (
    Answer,
    Budget,
    RetryPolicy,
    Sampling,
    Store,
    Summary,
    TeacherSpec,
    collect,
    prompt_hash,
)

_DEFAULT_CONFIG = JudgeConfig()  # frozen: one instance can be every call's default


# ---------------------------------------------------------------------------- the judge and its inputs


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


@dataclass(frozen=True)
class JudgeItem:
    id: str
    messages: Messages


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
    config: JudgeConfig = _DEFAULT_CONFIG,
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
    config: JudgeConfig = _DEFAULT_CONFIG,
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


# ---------------------------------------------------------------------------- the rounds


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
    config: JudgeConfig = _DEFAULT_CONFIG,
    limits: Limits | None = None,
    retry: RetryPolicy | None = None,
    on_progress: Progress | None = None,
    budget: Budget | None = None,
) -> JudgeReport:
    """Judge every system's answers (system → item id → answer text) on ``items``.

    ``endpoint`` is the judge's base URL, model and key; its sampling is replaced by
    the config's. ``budget`` bounds the whole run (all three rounds share it).
    Raises TeacherError (scope "run") at once when the judge cannot be used at all
    (bad key, unknown model, unreachable): no request is sent after it.
    """
    retry = retry or RetryPolicy()
    if len({it.id for it in items}) != len(items):
        raise ValueError("judge(): item ids must be unique")
    started = time.monotonic()
    ref_spec, verdict_spec = judge_specs(endpoint, config)
    summary = JudgeSummary()
    stored: set[str] = set()  # prompt hashes whose answers this run has read already

    async def ask_all(phase: str, prompts: list[Messages], spec: TeacherSpec) -> dict[str, Answer]:
        hashes = [prompt_hash(m) for m in prompts]
        if prompts:

            def progress(s: Summary) -> None:
                if on_progress:
                    done = s.cached + s.answered
                    spent, failed = summary.tokens + s.tokens, summary.failed + s.failed
                    on_progress(JudgeProgress(phase, done, s.total, spent, failed))

            collected = await collect(prompts, spec, store, limits, retry, progress, budget=budget)
            # The probe's verdicts are in the store now: counted once already.
            collected.cached -= len(stored.intersection(hashes))
            summary.add(collected)
        found = store.get_many(spec.fingerprint, hashes)
        stored.update(found)
        return found

    async def verdict_round(phase: str, plan: list[_Verdict]) -> _Round:
        """The verdicts of ``plan``, then each unreadable one once more with the nudge."""
        verdicts = await ask_all(phase, [v.messages for v in plan], verdict_spec)
        unreadable = [v for v in plan if _unreadable(verdicts.get(prompt_hash(v.messages)))]
        retries = {v.key: replace(v, messages=nudged(v.messages)) for v in unreadable}
        summary.nudges = len({prompt_hash(v.messages) for v in retries.values()})
        retried = await ask_all("retries", [v.messages for v in retries.values()], verdict_spec)
        return _Round(verdicts, retries, retried)

    ref_prompts = list({prompt_hash(it.messages): it.messages for it in items}.values())
    summary.references = len(ref_prompts)
    refs = await ask_all("references", ref_prompts, ref_spec)

    plan = _verdict_plan(items, answers, refs)
    summary.verdicts = len({prompt_hash(v.messages) for v in plan})
    # A judge that cannot write verdicts (a tiny model) is found out on a few of them.
    probe = plan[: config.probe_verdicts]
    asked = await verdict_round("probe", probe) if len(plan) > len(probe) > 0 else None
    if asked is None or not _unreadable_probe(probe, asked, summary):
        asked = await verdict_round("verdicts", plan)
    verdicts, retries, retried = asked.verdicts, asked.retries, asked.retried
    summary.wall_s = time.monotonic() - started

    results = _results(items, answers, refs, plan, verdicts, retries, retried, summary, config)
    about = {
        "model": endpoint.model,
        "base_url": endpoint.base_url,
        "reference_fingerprint": ref_spec.fingerprint,
        "verdict_fingerprint": verdict_spec.fingerprint,
    }
    deviation = protocol_deviation(endpoint, config)
    if deviation:
        about["deviation"] = deviation
    return JudgeReport(
        judge=about,
        config=config,
        systems=[
            system_report(name, len(items), [r for r in results if r.system == name], config)
            for name in answers
        ],
        items=results,
        summary=summary,
    )


def protocol_deviation(endpoint: TeacherSpec, config: JudgeConfig) -> str:
    """How this run departs from the paper's judging protocol, "" when it does not: a
    reasoning model accepts no temperature but its default (1), so its verdicts are
    sampled, not greedy."""
    if config.temperature is None or endpoint.dialect.send_temperature:
        return ""
    return (
        f"the judge model accepts only its default temperature (1): it judged at 1, not at "
        f"the protocol's {config.temperature:g}, so a rerun may give other verdicts"
    )


@dataclass(frozen=True)
class _Round:
    """A round of verdicts: the answers, the nudged retries of the unreadable ones
    (by verdict key), and their answers."""

    verdicts: Mapping[str, Answer]
    retries: Mapping[tuple[str, str, int], _Verdict]
    retried: Mapping[str, Answer]


EXAMPLE_CHARS = 300  # of an unreadable reply, kept in the summary to show


def _unreadable_probe(probe: Sequence[_Verdict], asked: _Round, summary: JudgeSummary) -> bool:
    """True, and the summary says so, when most of the probe's verdicts are unreadable
    on both tries: the judge cannot judge, and the run stops."""
    unreadable = [
        v
        for v in probe
        if v.key in asked.retries
        and _unreadable(asked.retried.get(prompt_hash(asked.retries[v.key].messages)))
    ]
    if 2 * len(unreadable) <= len(probe):
        return False
    reply = asked.verdicts[prompt_hash(unreadable[0].messages)].response
    summary.stopped, summary.unreadable = "unreadable", len(unreadable)
    summary.unreadable_example = reply[:EXAMPLE_CHARS] + ("…" if len(reply) > EXAMPLE_CHARS else "")
    return True


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
    if summary.stopped == "unreadable":
        return "not judged: the run stopped, the judge's first verdicts could not be read"
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
            assert a is not None and b is not None  # both orders scored
            result.score = (a + b) / 2
            result.disagrees = abs(a - b) > config.disagreement
    return results


# ---------------------------------------------------------------------------- inputs from files


def load_test_set(path: str) -> list[JudgeItem]:
    """The test prompts; each needs a unique `id` (answers are matched by it)."""
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
