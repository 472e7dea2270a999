"""trainer.dedup: exact duplicates after normalising, near duplicates by MinHash LSH."""

from __future__ import annotations

from trainer.dedup import Contamination, clusters, contamination, first_of_group, normalise

LONG = (
    "Sort these numbers from the smallest to the largest and say how many there are: 12 7 3 44 8 19"
)


def test_normalising_folds_case_spacing_and_punctuation_but_not_words():
    assert normalise("  Sort: 3, 1,\t2!  ") == normalise("sort 3 1 2") == "sort 3 1 2"
    assert normalise("Ｓｏｒｔ　３") == "sort 3"  # NFKC: full-width forms
    assert normalise("sort 3 1 2") != normalise("sort 3 2 1")


def test_clusters_join_exact_and_near_duplicates_and_leave_the_rest_alone():
    texts = [
        LONG,  # 0
        "Reverse the word banana.",  # 1
        LONG.upper() + "!!",  # 2: exact, once normalised
        LONG.replace("19", "21"),  # 3: near (one number changed in a long prompt)
        "Reverse the word apple.",  # 4: a different short prompt
        "What is 2 + 2?",  # 5
    ]
    assert clusters(texts) == [[0, 2, 3], [1], [4], [5]]
    assert first_of_group(texts) == [0, 1, 0, 0, 4, 5]


def test_contamination_counts_held_out_prompts_found_in_training():
    training = [LONG, "Reverse the word banana."]
    held_out = [LONG.lower(), LONG.replace("19", "21"), "Reverse the word apple.", "What?"]
    assert contamination(held_out, training) == Contamination(exact=1, near=1, checked=4)
    assert contamination(["What?"], training).as_dict() == {"exact": 0, "near": 0, "checked": 1}
