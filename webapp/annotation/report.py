"""A campaign's results and exports: live votes from the database → webapp.annotation.stats.

Only members and owners reach this module's output (views check the role): it is the
one place where votes meet system names.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import numpy as np
from django.db.models import Count, Max, Q

from webapp.annotation.models import Assignment, Campaign, Choice, Pair, Vote
from webapp.lib import exports, stats

OUTCOMES = ("a", "tie", "b")  # agreement categories: on the systems, not the sides


def version(campaign: Campaign) -> str:
    """Changes whenever a vote is cast or undone: the results page polls for it."""
    agg = Vote.objects.filter(assignment__campaign=campaign).aggregate(
        n=Count("id"), last=Max("id"), undone=Count("id", filter=Q(undone_at__isnull=False))
    )
    return f"{agg['n']}.{agg['last'] or 0}.{agg['undone']}"


@dataclass
class VoteRow:
    """One live vote, resolved to the systems it is about."""

    vote_id: int
    item_id: int
    item_key: str
    pair_id: int
    prompt_index: int
    prompt_external_id: str
    prompt_text: str
    system_a: str
    system_b: str
    a_on_left: bool
    annotator: str
    choice: str
    comment: str
    created_at: datetime

    @property
    def score(self) -> float:
        """1 when system A was judged better, 0.5 for a tie, 0 when B was."""
        if self.choice == Choice.TIE:
            return stats.TIE
        a_chosen = (self.choice == Choice.LEFT) == self.a_on_left
        return stats.WIN if a_chosen else stats.LOSE

    @property
    def outcome(self) -> str:
        return {stats.WIN: "a", stats.TIE: "tie", stats.LOSE: "b"}[self.score]

    @property
    def left(self) -> str:
        return self.system_a if self.a_on_left else self.system_b

    @property
    def right(self) -> str:
        return self.system_b if self.a_on_left else self.system_a

    @property
    def winner(self) -> str:
        return {"a": self.system_a, "b": self.system_b, "tie": "tie"}[self.outcome]


def vote_rows(campaign: Campaign) -> list[VoteRow]:
    rows = (
        Vote.objects.filter(assignment__campaign=campaign, undone_at__isnull=True)
        .order_by("created_at", "id")
        .values_list(
            "id",
            "assignment__item_id",
            "assignment__item__key",
            "assignment__item__pair_id",
            "assignment__item__prompt__index",
            "assignment__item__prompt__external_id",
            "assignment__item__prompt__text",
            "assignment__item__pair__system_a__name",
            "assignment__item__pair__system_b__name",
            "assignment__item__a_on_left",
            "annotator__username",
            "choice",
            "comment",
            "created_at",
        )
    )
    return [VoteRow(*row) for row in rows]


@dataclass
class PairResult:
    pair: Pair
    n: int
    counts: dict[str, int]
    percent: dict[str, float]
    interval: dict[str, tuple[float, float]]
    items: int


@dataclass
class Strength:
    name: str
    theta: float
    lo: float
    hi: float
    votes: int
    # Positions on the page's forest plot, in % of its width.
    x: float = 0.0
    x_lo: float = 0.0
    x_hi: float = 0.0
    x_zero: float = 0.0


@dataclass
class Annotator:
    username: str
    assigned: int
    votes: int
    left: int
    tie: int
    right: int
    last_vote: object = None


@dataclass
class Results:
    campaign: Campaign
    version: str
    total_votes: int
    total_assignments: int
    pairs: list[PairResult]
    strengths: list[Strength]
    raw_agreement: float
    fleiss: float
    multi_rated_items: int
    cohen: list[dict] = field(default_factory=list)
    annotators: list[Annotator] = field(default_factory=list)
    sides: dict[str, int] = field(default_factory=dict)

    @property
    def percent_done(self) -> int:
        total = self.total_assignments
        return round(100 * self.total_votes / total) if total else 0


def results(campaign: Campaign, n_boot: int = stats.DEFAULT_BOOT) -> Results:
    rows = vote_rows(campaign)
    pairs = list(campaign.pairs.select_related("system_a", "system_b"))
    return Results(
        campaign=campaign,
        version=version(campaign),
        total_votes=len(rows),
        total_assignments=Assignment.objects.filter(campaign=campaign).count(),
        pairs=[_pair_result(p, rows, n_boot, campaign.seed) for p in pairs],
        strengths=_strengths(pairs, rows, n_boot, campaign.seed),
        **_agreement(rows),
        annotators=_annotators(campaign, rows),
        sides=dict(Counter(r.choice for r in rows)),
    )


def _pair_result(pair: Pair, rows: list[VoteRow], n_boot: int, seed: int) -> PairResult:
    mine = [r for r in rows if r.pair_id == pair.pk]
    scores = np.array([r.score for r in mine])
    win, tie, lose = stats.rates(scores)
    interval = stats.bootstrap_rates(scores, np.array([r.item_id for r in mine]), n_boot, seed)
    counts = Counter(r.outcome for r in mine)
    return PairResult(
        pair=pair,
        n=len(mine),
        counts={"win": counts["a"], "tie": counts["tie"], "lose": counts["b"]},
        percent={"win": 100 * win, "tie": 100 * tie, "lose": 100 * lose},
        interval={k: (100 * lo, 100 * hi) for k, (lo, hi) in interval.items()},
        items=pair.items.count(),
    )


def _strengths(pairs: list[Pair], rows: list[VoteRow], n_boot: int, seed: int) -> list[Strength]:
    systems: dict[int, str] = {}
    for p in pairs:
        systems.setdefault(p.system_a_id, p.system_a.name)
        systems.setdefault(p.system_b_id, p.system_b.name)
    if len(systems) < 2:
        return []
    index = {pk: i for i, pk in enumerate(systems)}
    by_pair = {p.pk: (index[p.system_a_id], index[p.system_b_id]) for p in pairs}
    first = np.array([by_pair[r.pair_id][0] for r in rows], dtype=int)
    second = np.array([by_pair[r.pair_id][1] for r in rows], dtype=int)
    scores = np.array([r.score for r in rows])
    theta, lo, hi = stats.bootstrap_bradley_terry(
        first, second, scores, len(systems), np.array([r.item_id for r in rows]), n_boot, seed
    )
    votes = Counter(first.tolist()) + Counter(second.tolist())
    out = [
        Strength(name, float(theta[i]), float(lo[i]), float(hi[i]), votes[i])
        for i, name in enumerate(systems.values())
    ]
    left = min(min(s.lo for s in out), -0.5)
    right = max(max(s.hi for s in out), 0.5)
    span = right - left
    for s in out:
        s.x, s.x_lo, s.x_hi, s.x_zero = (
            100 * (v - left) / span for v in (s.theta, s.lo, s.hi, 0.0)
        )
    return sorted(out, key=lambda s: -s.theta)


def _agreement(rows: list[VoteRow]) -> dict:
    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for r in rows:
        by_item[r.item_id][r.annotator] = r.outcome
    counts = np.array(
        [[list(votes.values()).count(c) for c in OUTCOMES] for votes in by_item.values()]
    ).reshape(-1, len(OUTCOMES))
    people = sorted({r.annotator for r in rows})
    cohen = []
    for u, v in combinations(people, 2):
        common = [votes for votes in by_item.values() if u in votes and v in votes]
        if common:
            kappa = stats.cohen_kappa(
                [c[u] for c in common], [c[v] for c in common], categories=OUTCOMES
            )
            cohen.append({"a": u, "b": v, "n": len(common), "kappa": kappa})
    return {
        "raw_agreement": stats.raw_agreement(counts),
        "fleiss": stats.fleiss_kappa(counts),
        "multi_rated_items": int((counts.sum(axis=1) >= 2).sum()) if counts.size else 0,
        "cohen": cohen,
    }


def _annotators(campaign: Campaign, rows: list[VoteRow]) -> list[Annotator]:
    assigned = dict(
        Assignment.objects.filter(campaign=campaign)
        .values_list("annotator__username")
        .annotate(n=Count("id"))
        .values_list("annotator__username", "n")
    )
    out = []
    for name, n in sorted(assigned.items()):
        mine = [r for r in rows if r.annotator == name]
        sides = Counter(r.choice for r in mine)
        out.append(
            Annotator(
                name,
                n,
                len(mine),
                sides[Choice.LEFT],
                sides[Choice.TIE],
                sides[Choice.RIGHT],
                max((r.created_at for r in mine), default=None),
            )
        )
    return out


# ----------------------------------------------------------------------------- exports

EXPORT_FIELDS = [
    "item",
    "prompt_index",
    "prompt_id",
    "prompt",
    "system_a",
    "system_b",
    "left",
    "right",
    "annotator",
    "choice",
    "winner",
    "comment",
    "time",
]


def export_record(row: VoteRow) -> dict:
    return {
        "item": row.item_key,
        "prompt_index": row.prompt_index,
        "prompt_id": row.prompt_external_id,
        "prompt": row.prompt_text,
        "system_a": row.system_a,
        "system_b": row.system_b,
        "left": row.left,
        "right": row.right,
        "annotator": row.annotator,
        "choice": row.choice,
        "winner": row.winner,
        "comment": row.comment,
        "time": row.created_at.isoformat(),
    }


def csv_lines(campaign: Campaign) -> Iterator[str]:
    """The votes as CSV, safe to open in a spreadsheet (``webapp.exports``)."""
    return exports.csv_lines(EXPORT_FIELDS, (export_record(row) for row in vote_rows(campaign)))


def jsonl_lines(campaign: Campaign) -> Iterator[str]:
    for row in vote_rows(campaign):
        yield json.dumps(export_record(row), ensure_ascii=False) + "\n"
