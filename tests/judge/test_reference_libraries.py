"""The product's text metrics and statistics agree with the reference libraries the
field uses, to 1e-6 on random data: ROUGE-L with Google's rouge-score, Cohen's κ with
scikit-learn, Fleiss' κ with statsmodels, Bradley–Terry strengths with choix. The
libraries are dev-only: the product keeps its own small implementations."""

from __future__ import annotations

import random

import choix
import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from trainer.metrics_text import rouge_l, rouge_tokens
from webapp.lib import stats

VOCAB = "the a cat dog sat lay on mat rug and, It's 42 naïve co-operate! Ünïcode é. x2".split()


def _text(rng: random.Random) -> str:
    words = [rng.choice(VOCAB) for _ in range(rng.randint(1, 30))]
    return " ".join(words) + rng.choice(["", ".", "!", " ?", "\n"])


def test_rouge_l_equals_rouge_score_on_200_generated_pairs():
    rng = random.Random(0)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    checked = 0
    for _ in range(200):
        cand, ref = _text(rng), _text(rng)
        theirs = scorer.score(ref, cand)["rougeL"].fmeasure  # score(target, prediction)
        ours = rouge_l(rouge_tokens(cand), rouge_tokens(ref))
        if ours is None:  # both without a token: undefined here, 0 there
            assert theirs == 0.0
            continue
        assert ours == pytest.approx(theirs, abs=1e-6)
        checked += 1
    assert checked >= 190


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    a = rng.choice(["left", "tie", "right"], size=60)
    b = np.where(rng.random(60) < 0.6, a, rng.choice(["left", "tie", "right"], size=60))
    assert stats.cohen_kappa(list(a), list(b)) == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    raters, items = 4, 40
    counts = np.stack([rng.multinomial(raters, rng.dirichlet([1, 1, 1])) for _ in range(items)])
    ours = stats.fleiss_kappa(counts)
    assert ours == pytest.approx(sm_fleiss_kappa(counts, method="fleiss"), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_bradley_terry_strengths_equal_choix(seed):
    """Maximum likelihood (a vanishing prior) on a tournament where every system wins and loses."""
    rng = np.random.default_rng(seed)
    n = 5
    truth = rng.normal(size=n)
    wins = np.zeros((n, n))
    games = []
    for i in range(n):
        for j in range(i + 1, n):
            for _ in range(30):
                winner, loser = (
                    (i, j) if rng.random() < 1 / (1 + np.exp(truth[j] - truth[i])) else (j, i)
                )
                wins[winner, loser] += 1
                games.append((winner, loser))
    ours = stats.bradley_terry(wins, prior=1e-9, max_iter=200, tol=1e-12)  # ~no prior
    theirs = choix.ilsr_pairwise(n, games, alpha=0.0, tol=1e-12, max_iter=10_000)
    np.testing.assert_allclose(ours - ours.mean(), theirs - theirs.mean(), atol=1e-6)
