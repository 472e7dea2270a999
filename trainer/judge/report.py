"""The judge's report: item results, each system's mean score with its bootstrap
confidence interval, the run's summary, and the same per group of items.

Scores and intervals are computed per system (and per group), never pooled; a verdict
still unreadable after its retry is a failure, never a zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from trainer.config import MAX_RESPONSE_TOKENS
from trainer.metrics_text import bootstrap_ci
from trainer.pricing import Usage
from trainer.score import format_table
from trainer.teacher import Summary

# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class JudgeConfig:
    reference_max_tokens: int = MAX_RESPONSE_TOKENS
    verdict_max_tokens: int = 512  # two scores and an explanation
    temperature: float | None = 0.0  # deterministic judging: reruns agree, caches hold
    disagreement: float = 10.0  # item-score points between the two orders
    # Verdicts asked first, with their retries, before the rest: when most of them
    # cannot be read even after the nudge, the judge cannot judge and the run stops
    # (a tiny model would otherwise be paid for every verdict twice). 0: no probe.
    probe_verdicts: int = 8
    resamples: int = 1000  # bootstrap
    confidence: float = 0.95
    seed: int = 0  # bootstrap seed


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
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    wall_s: float = 0.0
    stopped: str = "done"  # done | budget | unreadable (the probe, see JudgeConfig)
    unreadable: int = 0  # stopped "unreadable": probe verdicts unreadable after a retry
    unreadable_example: str = ""  # stopped "unreadable": one such reply, cut short

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def usage(self) -> Usage:
        return Usage(
            self.prompt_tokens, self.completion_tokens, self.reasoning_tokens, self.cached_tokens
        )

    def add(self, s: Summary) -> None:
        self.cached += s.cached
        self.requested += s.requested
        self.http_requests += s.http_requests
        self.retries += s.retries
        self.failed += s.failed
        self.prompt_tokens += s.prompt_tokens
        self.completion_tokens += s.completion_tokens
        self.reasoning_tokens += s.reasoning_tokens
        self.cached_tokens += s.cached_tokens
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
            + (f" ({self.unreadable} unreadable after a retry)" if self.unreadable else "")
        )


@dataclass
class JudgeReport:
    judge: dict[str, str]  # model, base_url, fingerprints
    config: JudgeConfig
    systems: list[SystemReport]
    items: list[ItemResult]
    summary: JudgeSummary
    test_set: str = ""

    def to_dict(self) -> dict[str, Any]:
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
        deviation = self.judge.get("deviation")
        return format_table(rows) + (f"\nnote: {deviation}" if deviation else "")


# ---------------------------------------------------------------------------- aggregation


def system_report(
    name: str, n_prompts: int, results: list[ItemResult], config: JudgeConfig
) -> SystemReport:
    """One system's aggregate over its item results (those of one group, or all)."""
    # a result is "scored" once both orders gave it a score
    scores = cast("list[float]", [r.score for r in results if r.status == "scored"])
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
            system_report(name, n, by_key.get((group, name), []), report.config) for name in systems
        ]
        for group, n in n_prompts.items()
    }
