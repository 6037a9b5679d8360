"""Leave-people-out folds of the demo set: every person is a test person exactly once.

The demo's question is whether the detector separates REAL from FAKE on **people it never
saw**. :func:`people_folds` deals the 13 people into ``k`` folds of similar size (greedy by
clip count, ties broken by the seed); in fold ``i`` the people of fold ``i`` are the test set,
one other person is the validation set (best epoch, temperature) and the rest train.

:func:`fold_manifest` writes that split into a manifest. A face swap shows two people: the
target (its ``group``) and the donor whose face was pasted in. Training and validation rows
whose donor is a test person are left out, so no test person's face is ever seen in training;
``manipulations`` keeps only some kinds of FAKE per split (cross-manipulation: train on swaps,
test on re-enactments).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dfdetect.demo.dataset import NONE, clip_rng
from dfdetect.extraction.manifest import OK


class FoldError(ValueError):
    """Folds that would leak a person between train and test, or miss one."""


@dataclass(frozen=True)
class Fold:
    """One leave-people-out fold.

    Attributes:
        index: Fold number, 0-based.
        test: People whose clips are the test set.
        val: People whose clips choose the best epoch.
        train: Everyone else.
    """

    index: int
    test: tuple[str, ...]
    val: tuple[str, ...]
    train: tuple[str, ...]

    def split_of(self, person: str) -> str:
        """"train", "val" or "test" for ``person``."""
        if person in self.test:
            return "test"
        return "val" if person in self.val else "train"


def people_folds(table: pd.DataFrame, k: int = 4, seed: int = 0, val_people: int = 1
                 ) -> list[Fold]:
    """Deal the people of a demo labels table into ``k`` leave-people-out folds.

    Args:
        table: The demo labels table (``file,label,group,manipulation,donor``).
        k: Number of folds, 2 <= k <= number of people - ``val_people``.
        seed: Breaks ties between people with as many clips, and picks the validation people.
        val_people: Training people held out for validation in each fold.

    Returns:
        ``k`` folds; their test sets partition the people (checked by :func:`check_folds`).
    """
    counts = table.groupby("group").size()
    people = sorted(counts.index)
    if not 2 <= k <= len(people) - val_people:
        raise FoldError(f"k = {k} folds of {len(people)} people with {val_people} validation "
                        f"people: use 2 <= k <= {len(people) - val_people}")
    rng = clip_rng(seed, "folds")
    order = sorted(people, key=lambda p: (-counts[p], rng.random()))
    tests: list[list[str]] = [[] for _ in range(k)]
    sizes = np.zeros(k)
    for person in order:  # the biggest first, each to the fold with the fewest clips
        i = int(np.argmin(sizes))
        tests[i].append(person)
        sizes[i] += counts[person]
    folds = []
    for i, test in enumerate(tests):
        rest = [p for p in people if p not in test]
        big = [p for p in rest if counts[p] >= np.median(counts[rest])]  # a usable val set
        pick = clip_rng(seed, f"val{i}").permutation(len(big))[:val_people]
        val = sorted(big[j] for j in pick)
        folds.append(Fold(i, tuple(sorted(test)), tuple(val),
                          tuple(p for p in rest if p not in val)))
    check_folds(folds, people)
    return folds


def check_folds(folds: Iterable[Fold], people: Iterable[str]) -> None:
    """Raise :class:`FoldError` unless every person is a test person exactly once and no fold
    has a person in two of its splits."""
    folds, people = list(folds), set(people)
    seen = [p for f in folds for p in f.test]
    if sorted(seen) != sorted(people):
        missing, twice = people - set(seen), {p for p in seen if seen.count(p) > 1}
        raise FoldError(f"every person must be a test person once: missing {sorted(missing)}, "
                        f"twice {sorted(twice)}")
    for f in folds:
        parts = [set(f.test), set(f.val), set(f.train)]
        if set.union(*parts) != people or sum(map(len, parts)) != len(people):
            raise FoldError(f"fold {f.index}: a person is in two splits or in none")


def fold_manifest(manifest: pd.DataFrame, table: pd.DataFrame, fold: Fold,
                  manipulations: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The manifest rows of one fold with their ``split`` filled in.

    Args:
        manifest: The demo's extracted manifest (``file`` as in the labels table).
        table: The demo labels table (``manipulation`` and ``donor`` of each file).
        fold: The fold.
        manipulations: Per split, the FAKE kinds kept (e.g. ``{"train": ("swap",), "val":
            ("swap",), "test": ("reenact",)}``); a split not named keeps every kind.

    Returns:
        Usable rows with ``split`` set; training/validation swaps whose donor is a test person
        are left out (see the module docstring).
    """
    info = table.set_index("file")[["manipulation", "donor"]]
    df = manifest[manifest["status"] == OK].copy()
    df["split"] = [fold.split_of(g) for g in df["group"]]
    kind = df["file"].map(info["manipulation"]).fillna(NONE)
    donor = df["file"].map(info["donor"]).fillna("")
    keep = ~((df["split"] != "test") & donor.isin(fold.test))
    for split, kinds in (manipulations or {}).items():
        keep &= ~((df["split"] == split) & (kind != NONE) & ~kind.isin(kinds))
    out = df[keep].reset_index(drop=True)
    train_people = set(out.loc[out["split"] == "train", "group"])
    if train_people & set(fold.test):
        raise FoldError(f"fold {fold.index}: {sorted(train_people & set(fold.test))} in train and test")
    return out
