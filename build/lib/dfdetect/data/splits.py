"""Group-aware train/val/test splits: a FAKE and its REAL source never straddle two splits."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from dfdetect.config import DataConfig
from dfdetect.extraction.manifest import OK
from dfdetect.labels import LABEL_NAMES, SPLITS

log = logging.getLogger(__name__)


class LeakageError(ValueError):
    """A group (source video or person) appears in two splits; the message names the groups."""



def _group_keys(df: pd.DataFrame) -> pd.Series:
    """Each row's group; a row without one is its own group."""
    return df["group"].where(df["group"].astype(str).str.len() > 0, df["video_id"]).astype(str)


def check_splits(df: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` if any group has rows in two splits (rows without a split ignored)."""
    keyed = pd.DataFrame({"g": _group_keys(df), "s": df["split"]})
    keyed = keyed[keyed["s"] != ""]
    per = keyed.groupby("g")["s"].unique()
    leaks = {g: sorted(s) for g, s in per.items() if len(s) > 1}
    if leaks:
        shown = "; ".join(f"{g}: {', '.join(s)}" for g, s in list(leaks.items())[:20])
        raise LeakageError(
            f"{len(leaks)} group(s) appear in more than one split ({shown}). Rows of one group "
            "(a source video, its fakes and augmented copies) must share a split: fix the split "
            "column of the labels CSV, or clear it to let split_manifest assign whole groups."
        )


def class_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per split and label (usable rows only): a split x label table of counts."""
    ok = df[(df["status"] == OK) & df["label"].isin(LABEL_NAMES.values())]
    table = pd.crosstab(ok["split"].replace("", "(none)"), ok["label"])
    return table.reindex(columns=list(LABEL_NAMES.values()), fill_value=0)


def _fold(groups: np.ndarray, y: np.ndarray, n_pick: int, seed: int) -> set[str]:
    """About ``n_pick`` groups, stratified by label, chosen by scikit-learn's StratifiedGroupKFold."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    n_splits = int(min(max(2, round(n_groups / max(n_pick, 1))), n_groups))
    smallest = np.unique(y, return_counts=True)[1].min()
    if smallest < n_splits:  # scikit-learn needs every class in every fold
        n_splits = max(2, int(smallest))
        if smallest < 2:
            y = np.zeros_like(y)  # a class with one row cannot be stratified: plain group folds
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members": expected when tiny
        warnings.simplefilter("ignore", UserWarning)
        _, picked = next(splitter.split(np.zeros(len(y)), y, groups))
    return set(groups[picked])


def _assign(groups: np.ndarray, y: np.ndarray, cfg: DataConfig, seed: int) -> dict[str, str]:
    """Group -> split for groups without a fixed split."""
    names = sorted(set(groups))
    n = len(names)
    n_test = round(cfg.test_fraction * n) if cfg.test_fraction > 0 else 0
    n_val = round(cfg.val_fraction * n) if cfg.val_fraction > 0 else 0
    if n >= 3:  # tiny data sets still get one group per requested split
        n_test, n_val = max(n_test, cfg.test_fraction > 0), max(n_val, cfg.val_fraction > 0)
    elif n == 2:
        n_test, n_val = 0, int(cfg.val_fraction > 0 or cfg.test_fraction > 0)
    else:
        n_test = n_val = 0
    out = dict.fromkeys(names, "train")
    rest = np.ones(len(groups), bool)
    for split, count in (("test", n_test), ("val", n_val)):
        if count and len(set(groups[rest])) > 1:
            for g in _fold(groups[rest], y[rest], count, seed):
                out[g] = split
            rest &= ~np.isin(groups, [g for g, s in out.items() if s == split])
    return out


def _assign_covering(groups: np.ndarray, y: np.ndarray, cfg: DataConfig, tries: int = 8
                     ) -> dict[str, str]:
    """:func:`_assign` with the first of a few seeds that puts every class in every split
    (else the seed covering most (split, class) pairs)."""
    best, best_score = {}, -1
    for a in range(tries):
        split_of = _assign(groups, y, cfg, cfg.seed + 1000 * a)
        pairs = {(split_of[g], c) for g, c in zip(groups, y)}
        score = len(pairs)
        if score == len(set(split_of.values())) * len(set(y)):
            return split_of
        if score > best_score:
            best, best_score = split_of, score
    log.warning("no split with every class in every split was found (tiny or very unbalanced data)")
    return best


def split_manifest(df: pd.DataFrame, cfg: DataConfig | None = None) -> pd.DataFrame:
    """Fill the ``split`` column with train/val/test, keeping every group in one split.

    Rows with a split keep it and pass it to the rest of their group. Other groups are split
    by scikit-learn's StratifiedGroupKFold (fractions ``cfg.val_fraction`` and
    ``cfg.test_fraction`` of groups, stratified by label, seed ``cfg.seed``); among a few seeds
    the first giving both classes in every split is kept. Tiny sets get at least one group per
    split (two groups: train and val only; one: train only) and a warning says so.

    Returns:
        A copy of ``df`` with ``split`` filled; the class counts per split are logged.

    Raises:
        LeakageError: A group already has rows in two splits.
        ValueError: A split value other than train/val/test.
    """
    cfg = cfg or DataConfig()
    df = df.copy()
    df["split"] = df["split"].fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(df["split"]) - {"", *SPLITS})
    if bad:
        raise ValueError(f"unknown split value(s) {bad} in the manifest; use {', '.join(SPLITS)} or ''")
    check_splits(df)
    keys = _group_keys(df)
    fixed = dict(zip(keys[df["split"] != ""], df["split"][df["split"] != ""]))
    free = ~keys.isin(list(fixed))
    usable = free & (df["status"] == OK) & df["label"].isin(LABEL_NAMES.values())
    if usable.any():
        groups, y = keys[usable].to_numpy(), df["label"][usable].to_numpy().astype(str)
        best = _assign_covering(groups, y, cfg)
        fixed.update(best)
        if len(set(groups)) < 3:
            log.warning("only %d group(s) to split: %s; val/test are partly empty",
                        len(set(groups)), best)
    df["split"] = keys.map(fixed).fillna("train").to_numpy()  # groups without usable rows
    check_splits(df)
    log.info("class counts per split:\n%s", class_counts(df).to_string())
    return df
