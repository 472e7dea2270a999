"""Statistics of pairwise human votes: pure functions on numpy arrays, no Django.

Conventions: a vote on a pair (A, B) is a *score for A*: 1 (A better), 0.5 (tie),
0 (B better). Intervals come from a **cluster bootstrap over items**: an item judged by
k people is drawn (or not) as a whole, so overlapping votes are not counted as
independent evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WIN, TIE, LOSE = 1.0, 0.5, 0.0
DEFAULT_BOOT = 1000
LEVEL = 0.95


def rates(scores: np.ndarray) -> tuple[float, float, float]:
    """(win, tie, lose) fractions of the scores[n] (each 1, 0.5 or 0); zeros if n = 0."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return 0.0, 0.0, 0.0
    return (
        float(np.mean(scores == WIN)),
        float(np.mean(scores == TIE)),
        float(np.mean(scores == LOSE)),
    )


def _cluster_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap weights [n_boot, n]: how often each vote's cluster was drawn."""
    labels, index = np.unique(clusters, return_inverse=True)
    k = labels.size
    draws = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)  # [B, k]
    return draws[:, index].astype(float)


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def bootstrap_rates(
    scores: np.ndarray,
    clusters: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the win / tie / lose rates.

    scores[n]: 1, 0.5 or 0; clusters[n]: the item of each vote (None: every vote its own).
    Returns {"win": (lo, hi), "tie": (lo, hi), "lose": (lo, hi)}; (0, 0) when n = 0.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return {"win": (0.0, 0.0), "tie": (0.0, 0.0), "lose": (0.0, 0.0)}
    clusters = np.arange(scores.size) if clusters is None else np.asarray(clusters)
    weights = _cluster_weights(clusters, n_boot, np.random.default_rng(seed))  # [B, n]
    totals = weights.sum(axis=1)
    out = {}
    for name, value in (("win", WIN), ("tie", TIE), ("lose", LOSE)):
        share = weights @ (scores == value).astype(float) / totals
        lo, hi = _percentiles(share[:, None], level)
        out[name] = (float(lo[0]), float(hi[0]))
    return out


# ---------------------------------------------------------------------------- Bradley–Terry


def win_matrix(
    first: np.ndarray, second: np.ndarray, scores: np.ndarray, n_systems: int
) -> np.ndarray:
    """W[S, S] with W[i, j] = wins of i over j, a tie counting half a win for each side.

    first[n], second[n]: system indices of each comparison; scores[n]: score of ``first``.
    """
    wins = np.zeros((n_systems, n_systems))
    scores = np.asarray(scores, dtype=float)
    np.add.at(wins, (np.asarray(first), np.asarray(second)), scores)
    np.add.at(wins, (np.asarray(second), np.asarray(first)), 1.0 - scores)
    return wins


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def bradley_terry(
    wins: np.ndarray, prior: float = 0.01, max_iter: int = 100, tol: float = 1e-9
) -> np.ndarray:
    """Log-strengths θ[..., S] (centred to mean 0) from win matrices W[..., S, S].

    P(i beats j) = σ(θ_i − θ_j); maximum a posteriori by Newton's method. The prior
    adds, for every system, ``prior`` virtual wins and losses against a fixed
    reference of strength θ = 0: it keeps θ finite for a system that never lost (or
    never won) and makes the fit identifiable when the comparison graph is not
    connected, while moving well-measured strengths by a negligible amount. The
    objective is concave; steps are capped at 2 in θ so that the first iterations of
    a lopsided record cannot overshoot. Leading batch dimensions are fitted
    independently (the bootstrap fits all its resamples at once).
    """
    wins = np.asarray(wins, dtype=float)
    games = wins + np.swapaxes(wins, -1, -2)  # N[i, j]: comparisons between i and j
    won = wins.sum(axis=-1)
    n = wins.shape[-1]
    eye = np.eye(n)
    theta = np.zeros(wins.shape[:-1])
    for _ in range(max_iter):
        p = _sigmoid(theta[..., :, None] - theta[..., None, :])
        s = _sigmoid(theta)
        grad = won - (games * p).sum(axis=-1) + prior * (1.0 - 2.0 * s)
        curve = games * p * (1.0 - p)
        # The Hessian is negative definite (the prior's term makes it strictly so).
        hess = curve - eye * (curve.sum(axis=-1) + 2.0 * prior * s * (1.0 - s))[..., None]
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        size = np.abs(step).max(axis=-1, keepdims=True)
        step = step * np.minimum(1.0, 2.0 / np.maximum(size, 1e-300))
        theta = theta - step
        if size.max() < tol:
            break
    return theta - theta.mean(axis=-1, keepdims=True)


def bootstrap_bradley_terry(
    first: np.ndarray,
    second: np.ndarray,
    scores: np.ndarray,
    n_systems: int,
    clusters: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    prior: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(θ[S], lo[S], hi[S]): the fit on all votes and percentile intervals of θ.

    Each resample draws items (clusters) with replacement and refits; all resamples are
    fitted together as one batch of win matrices.
    """
    scores = np.asarray(scores, dtype=float)
    first, second = np.asarray(first), np.asarray(second)
    theta = bradley_terry(win_matrix(first, second, scores, n_systems), prior)
    if scores.size == 0:
        return theta, theta.copy(), theta.copy()
    clusters = np.arange(scores.size) if clusters is None else np.asarray(clusters)
    weights = _cluster_weights(clusters, n_boot, np.random.default_rng(seed))  # [B, n]
    # Each vote adds its score at (first, second) and the rest at (second, first).
    contrib = np.zeros((scores.size, n_systems * n_systems))
    rows = np.arange(scores.size)
    np.add.at(contrib, (rows, first * n_systems + second), scores)
    np.add.at(contrib, (rows, second * n_systems + first), 1.0 - scores)
    boot = bradley_terry((weights @ contrib).reshape(n_boot, n_systems, n_systems), prior)
    lo, hi = _percentiles(boot, level)
    return theta, lo, hi


# ---------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence, b: Sequence, categories: Sequence | None = None) -> float:
    """Cohen's κ of two raters' labels a[n], b[n] on the same items.

    κ = (p_o − p_e) / (1 − p_e); nan for no items; 1.0 when both raters used one and
    the same category throughout (p_e = 1, perfect agreement).
    """
    if len(a) != len(b):
        raise ValueError(f"two raters need labels for the same items: {len(a)} vs {len(b)}")
    if not len(a):
        return float("nan")
    cats = list(categories) if categories is not None else sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    table /= table.sum()
    p_o = np.trace(table)
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else float("nan")
    return float((p_o - p_e) / (1 - p_e))


def _rated_twice(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return counts[counts.sum(axis=1) >= 2]


def raw_agreement(counts: np.ndarray) -> float:
    """Mean share of agreeing rater pairs per item; counts[items, categories].

    Items with fewer than two ratings are left out; nan when none remains.
    """
    counts = _rated_twice(counts)
    if not counts.shape[0]:
        return float("nan")
    n = counts.sum(axis=1)
    return float(np.mean((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ from counts[items, categories] (ratings of each item per category).

    Items may have different numbers of ratings (≥ 2 used); with a constant number this
    is Fleiss (1971) exactly. nan without items; 1.0 for perfect agreement on a single
    category (p_e = 1).
    """
    counts = _rated_twice(counts)
    if not counts.shape[0]:
        return float("nan")
    p_bar = raw_agreement(counts)
    share = counts.sum(axis=0) / counts.sum()
    p_e = float(share @ share)
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else float("nan")
    return float((p_bar - p_e) / (1 - p_e))
