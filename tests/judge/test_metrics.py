"""Text diagnostics and the bootstrap interval against hand-computed values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.metrics_text import (
    bootstrap_ci,
    corpus_ngram_f1,
    distinct_n,
    lcs_length,
    length_stats,
    ngram_f1,
    quantile,
    rouge_l,
    whitespace_tokens,
    words,
)


def toks(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize(
    "cand,ref,n,expected",
    [
        # m = min(2,1) + min(1,1) = 2; P = 2/3, R = 2/3
        ("the the cat", "the cat sat", 1, 2 / 3),
        # bigrams {the the, the cat} vs {the cat, cat sat}: m = 1, P = R = 1/2
        ("the the cat", "the cat sat", 2, 0.5),
        ("the the cat", "the cat sat", 3, 0.0),
        # P = 2/4, R = 2/2 -> 2 * 0.5 * 1 / 1.5
        ("a b c d", "a b", 1, 2 / 3),
        # clipped: "a" counts once; P = 1/4, R = 1/2 -> 2 * (1/8) / (3/4)
        ("a a a a", "a b", 1, 1 / 3),
        ("a b c", "a b c", 3, 1.0),
        ("", "a", 1, 0.0),
        ("a b", "a", 2, 0.0),  # only the candidate has a bigram
    ],
)
def test_ngram_f1_matches_hand_computed_values(cand, ref, n, expected):
    assert ngram_f1(toks(cand), toks(ref), n) == pytest.approx(expected)


def test_ngram_f1_is_undefined_when_neither_side_has_an_ngram():
    assert ngram_f1(toks("a b"), toks("c"), 3) is None
    # ...and such items are left out of the average, not counted as zeros.
    cands, refs = [["a"], ["a"], ["x"]], [["a"], ["b"], []]
    assert corpus_ngram_f1(cands, refs, 1) == pytest.approx((1 + 0 + 0) / 3)
    assert corpus_ngram_f1(cands, refs, 2) is None
    assert corpus_ngram_f1([["a", "b"], ["c"]], [["a", "b"], ["c"]], 2) == 1.0


@pytest.mark.parametrize(
    "cand,ref,beta,expected",
    [
        ("the cat sat down", "the cat lay down", 1.0, 0.75),  # LCS "the cat down"
        ("a b c d e", "a c e", 1.0, 0.75),  # P = 3/5, R = 1 -> 2 * 0.6 / 1.6
        ("a b c d e", "a c e", 2.0, 3 / 3.4),  # 5 P R / (R + 4 P) = 3 / 3.4
        ("a b", "c d", 1.0, 0.0),
        ("", "a", 1.0, 0.0),
    ],
)
def test_rouge_l_matches_hand_computed_values(cand, ref, beta, expected):
    assert rouge_l(toks(cand), toks(ref), beta) == pytest.approx(expected)


def test_rouge_l_of_two_empty_answers_is_undefined():
    assert rouge_l([], []) is None


def lcs_table(a, b) -> int:
    """The textbook dynamic programme, to check the bit-parallel version against."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = row[:]
        for j, y in enumerate(b, start=1):
            row[j] = prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1])
    return row[-1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=40), st.lists(st.sampled_from("abcd"), max_size=40)
)
def test_bit_parallel_lcs_equals_the_dynamic_programme(a, b):
    assert lcs_length(a, b) == lcs_table(a, b) == lcs_length(b, a)


def test_lcs_of_long_answers_is_fast_and_right():
    rng = random.Random(0)
    a = [rng.choice("abcdefgh") for _ in range(300)]
    b = [rng.choice("abcdefgh") for _ in range(300)]
    assert lcs_length(a, b) == lcs_table(a, b)


def test_distinct_n_counts_unique_over_total_ngrams_within_answers():
    answers = [toks("a b a"), toks("b c")]
    assert distinct_n(answers, 1) == pytest.approx(3 / 5)
    assert distinct_n(answers, 2) == pytest.approx(3 / 3)  # "a b" "b a" "b c"; none across
    assert distinct_n([toks("a b a b")], 2) == pytest.approx(2 / 3)
    assert distinct_n([toks("a")], 2) is None


def test_quantiles_and_length_stats():
    assert quantile([4, 1, 3, 2], 0.95) == pytest.approx(3.85)  # position 2.85
    assert quantile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)
    stats = length_stats([3, 1, 2])
    assert (stats.n, stats.mean, stats.median, stats.p95) == (3, 2.0, 2.0, pytest.approx(2.9))
    assert length_stats([]) is None


def test_tokenizers_for_length_and_overlap():
    assert whitespace_tokens("  Hello,  world! \n") == ["Hello,", "world!"]
    assert words("Hello, World!") == ["hello", ",", "world", "!"]


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(1)
    true_mean, trials, covered = 50.0, 200, 0
    for trial in range(trials):
        sample = [rng.gauss(true_mean, 10) for _ in range(60)]
        lo, hi = bootstrap_ci(sample, resamples=400, seed=trial)
        assert lo < sum(sample) / len(sample) < hi
        covered += lo <= true_mean <= hi
    # The percentile interval is a little narrow at n = 60; 95 % ± sampling noise.
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_is_seeded_and_degenerates_on_constant_values():
    values = [1.0, 4.0, 2.0, 8.0, 5.0]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    assert bootstrap_ci([7.0] * 5) == (7.0, 7.0)
    assert bootstrap_ci([]) is None
