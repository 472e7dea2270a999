"""Duplicate and near-duplicate prompts (torch-free: the web, the demo and the benches
use it).

- ``normalise``: case, whitespace and punctuation folded, so "Sort: 3, 1, 2." and
  "sort 3 1 2" are the same prompt.
- ``Index``: MinHash LSH (``datasketch``) over the normalised text's character 5-grams;
  ``near`` finds texts whose estimated Jaccard similarity is at least ``NEAR`` (0.8).
- ``contamination``: how many held-out prompts also occur, exactly or nearly, among the
  training prompts.
- ``clusters``: prompts grouped with their exact and near duplicates, so that a held-out
  split can take only prompts that have none.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasketch import MinHash

NEAR = 0.8  # estimated Jaccard similarity of character 5-grams
SHINGLE = 5
PERMUTATIONS = 64


def normalise(text: str) -> str:
    """Casefolded, punctuation and symbols dropped, whitespace collapsed (NFKC first)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return re.sub(r"\s+", " ", kept).strip()


def _shingles(key: str) -> set[bytes]:
    if len(key) <= SHINGLE:
        return {key.encode()}
    return {key[i : i + SHINGLE].encode() for i in range(len(key) - SHINGLE + 1)}


class Index:
    """Normalised texts (``normalise``), exactly (a dict) and nearly (MinHash LSH)."""

    def __init__(self) -> None:
        from datasketch import MinHashLSH

        self.exact: dict[str, int] = {}
        self.lsh = MinHashLSH(threshold=NEAR, num_perm=PERMUTATIONS)

    def add(self, item: int, key: str, sketch: MinHash) -> None:
        if key in self.exact:
            return  # its first occurrence stands for it
        self.exact[key] = item
        self.lsh.insert(item, sketch)

    def near(self, sketch: MinHash) -> list[int]:
        """Items near the text of ``sketch`` (exact duplicates included)."""
        return list(self.lsh.query(sketch))


@functools.cache
def _permutations() -> Any:
    """The hash permutations, drawn once (datasketch draws them again for each sketch)."""
    from datasketch import MinHash

    return MinHash(num_perm=PERMUTATIONS, seed=1).permutations


def minhash(key: str) -> MinHash:
    """The MinHash of a normalised text's character 5-grams."""
    from datasketch import MinHash

    sketch = MinHash(num_perm=PERMUTATIONS, seed=1, permutations=_permutations())
    sketch.update_batch(list(_shingles(key)))
    return sketch


@dataclass(frozen=True)
class Contamination:
    exact: int  # held-out prompts whose normalised text is a training prompt's
    near: int  # the others with a near-duplicate among the training prompts
    checked: int  # held-out prompts checked

    def as_dict(self) -> dict[str, int]:
        return {"exact": self.exact, "near": self.near, "checked": self.checked}


def contamination(held_out: Iterable[str], training: Iterable[str]) -> Contamination:
    index = Index()
    for i, text in enumerate(training):
        key = normalise(text)
        index.add(i, key, minhash(key))
    exact = near = checked = 0
    for text in held_out:
        checked += 1
        key = normalise(text)
        if key in index.exact:
            exact += 1
        elif index.near(minhash(key)):
            near += 1
    return Contamination(exact, near, checked)


def clusters(texts: Sequence[str]) -> list[list[int]]:
    """The positions of ``texts`` grouped with their exact and near duplicates (union-find
    over the LSH's candidates), each group in order, the groups by their first member."""
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = Index()
    for i, text in enumerate(texts):
        key = normalise(text)
        first = index.exact.get(key)
        if first is not None:
            parent[root(i)] = root(first)
            continue
        sketch = minhash(key)
        for j in index.near(sketch):
            parent[root(i)] = root(j)
        index.add(i, key, sketch)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def norm_hash(text: str) -> str:
    """sha256 of the normalised text: exact duplicates (after ``normalise``) share it."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def first_of_group(texts: Sequence[str]) -> list[int]:
    """For each text, the position of the first text of its group (``clusters``)."""
    first = list(range(len(texts)))
    for group in clusters(texts):
        for i in group:
            first[i] = group[0]
    return first
