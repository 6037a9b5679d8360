"""Clips for the model: preprocessing, the Dataset over the manifest, group-aware splits, loaders.

* :func:`preprocess_clip` is **the** preprocessing (the Dataset and prediction both call it):
  ``(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32``, antialiased resize then the backbone's
  normalisation.
* :class:`FrameSequenceDataset` reads one clip of ``T`` frames per face video: evenly spaced for
  evaluation (deterministic), a random offset and stride for training. A face video shorter
  than ``T`` frames repeats frames in order (each about ``T / N`` times; see
  :func:`clip_indices`). Training clips may be augmented and REAL ones self-blended into
  FAKEs, with one parameter draw per clip.
* :func:`split_manifest` assigns train/val/test by ``group`` so that a FAKE and its REAL source
  (and augmented copies) never straddle two splits; :func:`check_splits` raises
  :class:`LeakageError` otherwise.
* :func:`make_loader` builds the DataLoader (class-balancing sampler, per-worker seeding).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler
from torchvision.transforms.v2 import functional as F

from dfdetect import video
from dfdetect.augment import AugmentConfig, augment_clip
from dfdetect.config import DataConfig
from dfdetect.io import mp_context
from dfdetect.labels import FAKE, LABEL_NAMES, REAL, SPLITS, label_to_int
from dfdetect.manifest import OK, read_manifest, sidecar_path
from dfdetect.selfblend import SelfBlendConfig, self_blend, sidecar_landmarks

log = logging.getLogger(__name__)

BALANCE = ("sampler", "loss", "none")


class LeakageError(ValueError):
    """A group (source video or person) appears in two splits; the message names the groups."""


# ----------------------------------------------------------------------------- preprocessing

def _as_tensor(frames: np.ndarray) -> torch.Tensor:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 \
            or frames.dtype != np.uint8:
        raise ValueError("expected frames as a (T, H, W, 3) uint8 RGB array, got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}")
    return torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) view


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.resize(x, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(T, H, W, 3) uint8`` frames to ``(T, size, size, 3) uint8`` exactly as
    :func:`preprocess_clip` does (so resizing first and preprocessing later changes nothing)."""
    x = _resize(_as_tensor(frames), size)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def preprocess_clip(frames: np.ndarray, cfg: DataConfig) -> torch.Tensor:
    """The one preprocessing of face frames for the model.

    Args:
        frames: ``(T, H, W, 3) uint8`` RGB face crops (square; other shapes are stretched).
        cfg: ``size`` (S) and the backbone's ``mean``/``std``.

    Returns:
        ``(T, 3, S, S) float32``: bilinear antialiased resize (on uint8), scaled to [0, 1],
        normalised per channel with ``cfg.mean``/``cfg.std``.
    """
    x = _resize(_as_tensor(frames), cfg.size).contiguous()  # float maths is 3x faster contiguous
    x = F.to_dtype(x, torch.float32, scale=True)
    return F.normalize(x, list(cfg.mean), list(cfg.std))


def clip_indices(num_frames: int, length: int, train: bool = False,
                 rng: np.random.Generator | None = None, stride: int = 0) -> np.ndarray:
    """Which frames of an ``num_frames``-frame face video make a clip of ``length`` frames.

    Evaluation (``train=False``): ``length`` indices evenly spaced over the video (centres of
    equal segments), the same every time. Training: a random stride (``stride`` when > 0, else
    uniform in ``[1, num_frames // length]``) and a random start so the clip fits.

    Short videos (``num_frames < length``), train or not: every frame in order, each repeated
    about ``length / num_frames`` times (e.g. 3 frames, length 6 -> 0 0 1 1 2 2).

    Returns:
        ``(length,) int64`` non-decreasing indices in ``[0, num_frames)``.
    """
    if num_frames < length or not train:
        return video.uniform_indices(num_frames, length)
    if rng is None:
        raise ValueError("clip_indices(train=True) needs rng")
    max_stride = max(1, (num_frames - 1) // max(length - 1, 1))
    step = min(stride, max_stride) if stride > 0 else int(rng.integers(1, max(1, num_frames // length) + 1))
    step = min(step, max_stride)
    start = int(rng.integers(0, num_frames - (length - 1) * step))
    return start + step * np.arange(length, dtype=np.int64)


def read_clip(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """Decode frames ``indices`` of a face video: ``(T, H, W, 3) uint8`` RGB.

    Face videos are short, so they are decoded straight through up to the last wanted frame:
    ``video.read_frames`` is given an index every ``SEEK_GAP`` frames so it never seeks. A face
    video often has one keyframe (x264 puts one every 250 frames), so each seek would land on
    frame 0 and decode the same frames again: 2-5x slower for frames far apart (same output).
    """
    indices = np.asarray(indices, dtype=np.int64)
    anchors = np.arange(0, int(indices.max()), video.SEEK_GAP, dtype=np.int64)
    return video.read_frames(path, np.concatenate([indices, anchors]))[:len(indices)]


# ----------------------------------------------------------------------------- splits

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


# ----------------------------------------------------------------------------- dataset

class FrameSequenceDataset(Dataset):
    """One clip per usable manifest row: ``{"frames", "label", "video_id"}``.

    Args:
        manifest: ``manifest.csv`` path; face videos are resolved relative to its folder.
        cfg: Clip length ``frames`` (T), ``size`` (S), normalisation, ``train_stride``,
            ``augment``, ``self_blend_prob``, split fractions and ``seed`` (default
            ``DataConfig()``).
        split: "train", "val" or "test" (None = every usable row). When the manifest's split
            column is incomplete, :func:`split_manifest` fills it first (same result for every
            split, so separately built train/val/test datasets agree).
        train: Random clip offsets and (per ``cfg``) augmentation and self-blending.
        augment_cfg: Ranges of on-the-fly augmentation (an ``AugmentConfig``; default ranges
            when None). Applied after resizing to S, one draw per clip.
        blend_cfg: Ranges of on-the-fly self-blending (a ``SelfBlendConfig``), likewise.
        cache: Decode every face video once into a memory-mapped uint8 file
            (:class:`dfdetect.framecache.FrameCache`) and read clips from it: ``True`` keeps it
            in ``<manifest folder>/cache/``, a path names another folder; reused while the face
            videos are unchanged. ``False`` (default) decodes the clip's face video per item.
        cache_workers: Processes decoding face videos when the cache is built.

    Rows whose status is not "ok" or without a REAL/FAKE label are left out (counts logged).
    Items: ``frames (T, 3, S, S) float32``, ``label`` int64 scalar tensor (1 = FAKE; a
    self-blended clip is FAKE), ``video_id`` str.
    """

    def __init__(self, manifest: str | Path, cfg: DataConfig | None = None, split: str | None = None,
                 train: bool = False, *, augment_cfg: AugmentConfig | None = None,
                 blend_cfg: SelfBlendConfig | None = None,
                 cache: bool | str | Path = False, cache_workers: int = 1):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split={split!r}: use one of {', '.join(SPLITS)} or None")
        self.manifest = Path(manifest).resolve()
        cfg = cfg or DataConfig()
        self.cfg, self.split, self.train = cfg, split, train
        self.augment_cfg, self.blend_cfg = augment_cfg, blend_cfg
        self.rows = self._select(read_manifest(self.manifest))
        self.labels = np.array([label_to_int(v) for v in self.rows["label"]], dtype=np.int64)
        self.video_ids = self.rows["video_id"].tolist()
        self.paths = [self.manifest.parent / p for p in self.rows["face_video"]]
        self.cache = self._open_cache(cache, cache_workers) if cache is not False else None
        if self.cache is not None:
            self.lengths = np.array([self.cache.length(v) for v in self.video_ids])
        else:
            self.lengths = np.array([n if n > 0 else video.probe(p).frames
                                     for n, p in zip(self.rows["frames_with_face"], self.paths)])
        self._sides: dict[int, int] = {}
        self.reseed(cfg.seed)

    def _select(self, df: pd.DataFrame) -> pd.DataFrame:
        bad = df["status"] != OK
        if bad.any():
            log.info("%s: %d row(s) left out because their status is not 'ok' (%s)", self.manifest,
                     int(bad.sum()), df.loc[bad, "status"].value_counts().to_dict())
        unlabelled = ~bad & ~df["label"].isin(LABEL_NAMES.values())
        if unlabelled.any():
            log.warning("%s: %d usable row(s) have no REAL/FAKE label and are left out",
                        self.manifest, int(unlabelled.sum()))
        if self.split is not None:
            if (df.loc[~bad & ~unlabelled, "split"] == "").any():
                df = split_manifest(df, self.cfg)
            check_splits(df)
            df = df[df["split"] == self.split]
        rows = df[(df["status"] == OK) & df["label"].isin(LABEL_NAMES.values())]
        if rows.empty:
            log.warning("%s: no usable rows%s", self.manifest, f" in split {self.split!r}" if self.split else "")
        return rows.reset_index(drop=True)

    def _open_cache(self, cache: bool | str | Path, workers: int):
        from dfdetect.framecache import FrameCache

        folder = self.manifest.parent / "cache" if cache is True else Path(cache)
        base = folder / f"{self.split or 'all'}-{self.cfg.size}px"
        return FrameCache.open_or_build(base, dict(zip(self.video_ids, self.paths)), self.cfg.size,
                                        workers=workers)

    def reseed(self, seed: int) -> None:
        """Restart the random clip/augmentation stream (loaders call it per worker and epoch)."""
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def _frames(self, i: int, idx: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            return self.cache.read(self.video_ids[i], idx)
        frames = read_clip(self.paths[i], idx)
        self._sides[i] = frames.shape[2]
        return resize_frames(frames, self.cfg.size)

    def _landmarks(self, i: int, idx: np.ndarray) -> np.ndarray | None:
        npz = sidecar_path(self.paths[i])
        if not npz.is_file():
            return None
        with np.load(npz, allow_pickle=False) as z:
            side = {k: z[k] for k in z.files}
        if i not in self._sides:
            self._sides[i] = (self.cache.side(self.video_ids[i]) if self.cache is not None
                              else video.probe(self.paths[i]).width)
        rows = np.minimum(idx, len(side.get("keypoints", side.get("box", idx))) - 1)
        lm = sidecar_landmarks(side, self._sides[i], rows)
        return None if lm is None else lm * (self.cfg.size / self._sides[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        cfg, rng = self.cfg, self._rng
        idx = clip_indices(int(self.lengths[i]), cfg.frames, self.train, rng, cfg.train_stride)
        frames, label = self._frames(i, idx), int(self.labels[i])
        if self.train and cfg.self_blend_prob > 0 and label == REAL and rng.random() < cfg.self_blend_prob:
            frames, _, _ = self_blend(frames, self._landmarks(i, idx), rng,
                                      self.blend_cfg or SelfBlendConfig())
            label = FAKE
        if self.train and cfg.augment:
            frames, _ = augment_clip(frames, rng, self.augment_cfg or AugmentConfig())
        return {"frames": preprocess_clip(frames, cfg),
                "label": torch.tensor(label, dtype=torch.int64), "video_id": self.video_ids[i]}


# ----------------------------------------------------------------------------- loading

def pos_weight(df: pd.DataFrame, self_blend_prob: float = 0.0) -> float:
    """``BCEWithLogitsLoss`` pos_weight = REAL / FAKE clips expected from the training rows given.

    Args:
        df: The training split's manifest rows (unusable rows are ignored).
        self_blend_prob: On-the-fly self-blending turns this share of REAL clips into FAKEs.

    Returns:
        The ratio; 1.0 (with a warning) when no FAKE clip is expected, so that a REAL-only
        manifest can still be loaded (training it needs self-blending: pass its probability).
    """
    ok = df[df["status"] == OK]
    n_real = float((ok["label"] == LABEL_NAMES[REAL]).sum())
    n_fake = float((ok["label"] == LABEL_NAMES[FAKE]).sum())
    n_real, n_fake = n_real * (1 - self_blend_prob), n_fake + n_real * self_blend_prob
    if n_fake == 0:
        log.warning("no FAKE rows in the training split: pos_weight 1.0. Add fakes, run "
                    "`dfdetect augment --self-blend`, or train with DataConfig.self_blend_prob > 0 "
                    "(and pass it here)")
        return 1.0
    return n_real / n_fake


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed each worker's dataset copy from torch's worker seed
    (the loader's generator gives a new base seed per epoch; + worker_id per worker)."""
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    while not hasattr(ds, "reseed") and hasattr(ds, "dataset"):  # through Subset wrappers
        ds = ds.dataset
    if hasattr(ds, "reseed"):
        ds.reseed(info.seed % 2**63)


def _labels_of(dataset: Dataset) -> np.ndarray:
    if hasattr(dataset, "labels"):
        return np.asarray(dataset.labels)
    if isinstance(dataset, torch.utils.data.Subset):
        return _labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    raise TypeError(f"balance='sampler' needs dataset.labels; {type(dataset).__name__} has none")


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 0,
                balance: str = "sampler", distributed: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over clips.

    Args:
        dataset: Usually a :class:`FrameSequenceDataset`.
        batch_size: Clips per batch.
        train: Shuffle (or balance) and keep the last partial batch out; else the dataset order.
        workers: Worker processes (0 = in this process).
        balance: With ``train``: "sampler" draws clips with weights 1 / (count of their class
            in the manifest), so batches are balanced on average (on-the-fly self-blending then
            adds FAKEs on top); "loss" or "none" shuffle (use :func:`pos_weight` with "loss").
        distributed: Use a DistributedSampler (call ``loader.sampler.set_epoch(epoch)``); class
            balance then has to come from the loss.
        seed: Seed of the shuffling/sampling and of the dataset's clip randomness; pass a
            different one per epoch (e.g. ``seed + epoch``) for different clips every epoch.

    Returns:
        The loader; each worker reseeds its dataset copy, so random clip offsets differ across
        workers and epochs yet repeat for the same seeds.
    """
    if balance not in BALANCE:
        raise ValueError(f"balance={balance!r}: use one of {', '.join(BALANCE)}")
    generator = torch.Generator().manual_seed(seed)
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)  # workers=0: the main process draws the clips
    sampler, shuffle = None, False
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        if train and balance == "sampler":
            log.info("distributed loading: balance classes with the loss (pos_weight), not a sampler")
    elif train and balance == "sampler" and len(dataset):
        labels = _labels_of(dataset)
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = 1.0 / counts[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(labels),
                                        replacement=True, generator=generator)
    else:
        shuffle = train
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=workers, worker_init_fn=seed_worker if workers else None,
                      multiprocessing_context=mp_context() if workers else None,
                      generator=generator, drop_last=train and len(dataset) > batch_size,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)
