"""Statistics of pairwise votes against hand-computed values and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webapp.lib import stats

# Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories.
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_rates_of_wins_ties_losses():
    assert stats.rates(np.array([1, 1, 0.5, 0])) == (0.5, 0.25, 0.25)
    assert stats.rates(np.array([])) == (0.0, 0.0, 0.0)


def test_cohen_kappa_of_the_textbook_two_by_two_table():
    # 20 both yes, 5 A-yes/B-no, 10 A-no/B-yes, 15 both no: p_o = .7, p_e = .5, κ = .4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_by_hand_on_three_categories():
    a = ["a", "a", "tie", "b", "b", "a"]
    b = ["a", "tie", "tie", "b", "a", "a"]
    # p_o = 4/6; marginals a: (3/6, 3/6), tie: (1/6, 2/6), b: (2/6, 1/6)
    p_o = 4 / 6
    p_e = (3 * 3 + 1 * 2 + 2 * 1) / 36
    assert stats.cohen_kappa(a, b, ["a", "tie", "b"]) == pytest.approx((p_o - p_e) / (1 - p_e))


def test_cohen_kappa_edge_cases():
    assert stats.cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert stats.cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert stats.cohen_kappa(["tie"] * 3, ["tie"] * 3) == 1.0
    assert math.isnan(stats.cohen_kappa([], []))
    with pytest.raises(ValueError):
        stats.cohen_kappa(["a"], [])


def test_fleiss_kappa_of_the_worked_example():
    assert stats.raw_agreement(FLEISS_TABLE) == pytest.approx(0.378, abs=5e-4)
    assert stats.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_equals_cohen_style_values_on_small_cases():
    # Two raters who always agree, on both outcomes: κ = 1; items rated once are ignored.
    counts = np.array([[2, 0, 0], [0, 0, 2], [1, 0, 0]])
    assert stats.fleiss_kappa(counts) == pytest.approx(1.0)
    assert stats.raw_agreement(counts) == pytest.approx(1.0)
    # Three raters split 2–1 on each of two items: P_i = 1/3 each.
    counts = np.array([[2, 1, 0], [0, 1, 2]])
    assert stats.raw_agreement(counts) == pytest.approx(1 / 3)
    p_e = (2 / 6) ** 2 + (2 / 6) ** 2 + (2 / 6) ** 2
    assert stats.fleiss_kappa(counts) == pytest.approx((1 / 3 - p_e) / (1 - p_e))
    assert math.isnan(stats.fleiss_kappa(np.zeros((0, 3))))


def test_bradley_terry_two_systems_is_the_log_odds():
    # A beat B 3 times in 4: the MLE has θ_A − θ_B = log 3; the tiny prior barely moves it.
    theta = stats.bradley_terry(np.array([[0, 3], [1, 0]]))
    assert theta[0] - theta[1] == pytest.approx(math.log(3), abs=0.01)
    assert theta.sum() == pytest.approx(0.0)


def test_bradley_terry_recovers_known_strengths():
    strengths = np.array([1.0, 2.0, 4.0, 0.5])
    n = 200
    wins = n * strengths[:, None] / (strengths[:, None] + strengths[None, :])
    np.fill_diagonal(wins, 0)
    theta = stats.bradley_terry(wins)
    expected = np.log(strengths) - np.log(strengths).mean()
    assert theta == pytest.approx(expected, abs=1e-3)


def test_bradley_terry_counts_ties_as_half_wins():
    # One win each way and two ties: equal strengths.
    wins = stats.win_matrix(np.array([0, 0, 0, 0]), np.array([1, 1, 1, 1]), [1, 0, 0.5, 0.5], 2)
    assert wins.tolist() == [[0, 2], [2, 0]]
    assert stats.bradley_terry(wins) == pytest.approx([0, 0], abs=1e-9)


def test_bradley_terry_stays_finite_for_an_unbeaten_system_and_disconnected_pairs():
    theta = stats.bradley_terry(np.array([[0, 50], [0, 0]]))
    assert np.all(np.isfinite(theta)) and theta[0] > 3
    # Two separate pairs: each pair's difference is measured, the prior fixes the rest.
    w = stats.win_matrix(np.array([0, 0, 2, 2]), np.array([1, 1, 3, 3]), [1, 1, 0, 0], 4)
    theta = stats.bradley_terry(w)
    assert np.all(np.isfinite(theta))
    assert theta[0] > theta[1] and theta[3] > theta[2]
    assert theta[0] - theta[1] == pytest.approx(theta[3] - theta[2])


def _simulate(rng, n_items, p_win, p_tie, per_item=1):
    """Votes on n_items, each item judged per_item times with its own true rates."""
    draws = rng.choice(
        [stats.WIN, stats.TIE, stats.LOSE],
        size=n_items * per_item,
        p=[p_win, p_tie, 1 - p_win - p_tie],
    )
    return draws, np.repeat(np.arange(n_items), per_item)


def test_bootstrap_interval_contains_the_true_rate_in_a_seeded_simulation():
    rng = np.random.default_rng(1)
    scores, items = _simulate(rng, 300, 0.55, 0.15)
    ci = stats.bootstrap_rates(scores, items, n_boot=2000, seed=1)
    assert ci["win"][0] < 0.55 < ci["win"][1]
    assert ci["tie"][0] < 0.15 < ci["tie"][1]
    assert ci["lose"][0] < 0.30 < ci["lose"][1]
    win, _, _ = stats.rates(scores)
    assert ci["win"][0] < win < ci["win"][1]
    assert 0.05 < ci["win"][1] - ci["win"][0] < 0.2


def test_bootstrap_intervals_cover_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(42)
    covered = 0
    runs = 200
    for seed in range(runs):
        scores, items = _simulate(rng, 120, 0.5, 0.2)
        lo, hi = stats.bootstrap_rates(scores, items, n_boot=500, seed=seed)["win"]
        covered += lo <= 0.5 <= hi
    assert 0.88 <= covered / runs <= 0.99


def test_bootstrap_resamples_items_not_votes():
    # Each item judged by 3 people who always agree: the effective sample is the items,
    # so the interval must be wider than if the 3 votes were independent.
    rng = np.random.default_rng(3)
    item_scores = rng.choice([1.0, 0.0], size=80)
    scores = np.repeat(item_scores, 3)
    items = np.repeat(np.arange(80), 3)
    clustered = stats.bootstrap_rates(scores, items, n_boot=2000, seed=0)["win"]
    naive = stats.bootstrap_rates(scores, None, n_boot=2000, seed=0)["win"]
    assert clustered[1] - clustered[0] > 1.4 * (naive[1] - naive[0])


def test_bootstrap_bradley_terry_intervals_contain_the_true_strengths():
    true = np.array([0.6, 0.0, -0.6])  # centred, like the fit
    runs, covered = 40, np.zeros(3)
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        first = rng.integers(0, 3, 600)
        second = (first + 1 + rng.integers(0, 2, 600)) % 3
        p_first = 1 / (1 + np.exp(-(true[first] - true[second])))
        scores = (rng.random(600) < p_first).astype(float)
        theta, lo, hi = stats.bootstrap_bradley_terry(
            first, second, scores, 3, n_boot=300, seed=seed
        )
        assert np.all(lo <= theta) and np.all(theta <= hi)
        covered += (lo < true) & (true < hi)
        if seed == 0:
            assert list(np.argsort(-theta)) == [0, 1, 2]
    assert np.all(covered / runs >= 0.85), covered / runs


def test_empty_inputs_give_empty_answers():
    assert stats.bootstrap_rates(np.array([])) == {
        "win": (0.0, 0.0),
        "tie": (0.0, 0.0),
        "lose": (0.0, 0.0),
    }
    theta, lo, hi = stats.bootstrap_bradley_terry(
        np.array([], dtype=int), np.array([], dtype=int), np.array([]), 2
    )
    assert theta.tolist() == [0.0, 0.0] == lo.tolist() == hi.tolist()
