"""The verdict parser on good, odd and broken judge outputs."""

from __future__ import annotations

import pytest

from trainer.judge import UnparseableVerdict, item_score, parse_verdict


@pytest.mark.parametrize(
    "text,scores",
    [
        ("8 7", (8, 7)),
        ("8 7\nAssistant 1 is more detailed than Assistant 2.", (8, 7)),
        ("8/10 7/10", (8, 7)),
        ("Assistant 1: 8\nAssistant 2: 7\nBecause...", (8, 7)),
        ("8, 7", (8, 7)),
        ("   8 7", (8, 7)),
        ("\n\n  8   7  \nwhy", (8, 7)),
        ("**8 7**", (8, 7)),
        ("**Assistant 1:** 8\n**Assistant 2:** 7", (8, 7)),
        ("7.5 8", (7.5, 8)),
        ("Scores: 8 and 7", (8, 7)),
        ("Assistant 2: 7\nAssistant 1: 8", (8, 7)),
        ("Assistant 1: 8, Assistant 2: 7", (8, 7)),
        ("Score of Assistant 1: 6\nScore of Assistant 2: 9", (6, 9)),
        ("Assistant 1 score: 4.5/10\nAssistant 2 score: 9/10", (4.5, 9)),
        ("8 out of 10, 7 out of 10", (8, 7)),
        ("10 1", (10, 1)),
        ("# 9 3", (9, 3)),
    ],
)
def test_parser_reads_the_two_scores(text, scores):
    assert parse_verdict(text) == scores


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("8", "only one score"),
        ("8/10", "only one score"),
        ("Assistant 1: 8\nThe first answer is better.", "only one assistant"),
        ("0 7", "outside 1–10"),
        ("8 11", "outside 1–10"),
        ("8 7 6", "not two scores"),
        ("Assistant 1 is better. 8 7", "not two scores"),
        ("I would give 8 and 7", "not two scores"),
        ("87", "only one score"),
        ("The answers are both fine.", "not two scores"),
    ],
)
def test_parser_rejects_what_is_not_two_scores_from_1_to_10(text, why):
    with pytest.raises(UnparseableVerdict, match=why):
        parse_verdict(text)


def test_item_score_is_the_model_share_of_the_two_scores():
    assert item_score(5, 5) == 50
    assert item_score(9, 3) == 75
    assert item_score(1, 10) == pytest.approx(100 / 11)
