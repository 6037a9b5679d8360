"""The Dataset over the manifest: one clip of ``T`` preprocessed face frames per usable row.

* :class:`FrameSequenceDataset` reads one clip of ``T`` frames per face video: evenly spaced for
  evaluation (deterministic), a random offset and stride for training. A face video shorter
  than ``T`` frames repeats frames in order (each about ``T / N`` times; see
  :mod:`dfdetect.data.sampling`). Training clips may be augmented and REAL ones self-blended into
  FAKEs, with one parameter draw per clip.
Splits: :mod:`dfdetect.data.splits`; loaders: :mod:`dfdetect.data.loaders`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dfdetect.augment.ops import AugmentConfig, augment_clip
from dfdetect.augment.selfblend import SelfBlendConfig, self_blend, sidecar_landmarks
from dfdetect.config import DataConfig
from dfdetect.data.framecache import FrameCache
from dfdetect.data.preprocess import preprocess_clip, resize_frames
from dfdetect.data.sampling import ClipSampler, clip_sampler
from dfdetect.data.splits import check_splits, split_manifest
from dfdetect.extraction.manifest import OK, read_manifest, sidecar_path
from dfdetect.labels import FAKE, LABEL_NAMES, REAL, SPLITS, label_to_int
from dfdetect.media import video

log = logging.getLogger(__name__)

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
            (:class:`dfdetect.data.framecache.FrameCache`) and read clips from it: ``True`` keeps it
            in ``<manifest folder>/cache/``, a path names another folder; reused while the face
            videos are unchanged. ``False`` (default) decodes the clip's face video per item.
        cache_workers: Processes decoding face videos when the cache is built.
        sampler: Which frames make a clip (a :class:`dfdetect.data.sampling.ClipSampler`);
            default random offset and stride (``cfg.train_stride``) when ``train``, else uniform.

    Rows whose status is not "ok" or without a REAL/FAKE label are left out (counts logged).
    Items: ``frames (T, 3, S, S) float32`` (T = ``cfg.train_frames`` for training items when it
    is set, else ``cfg.frames``), ``label`` int64 scalar tensor (1 = FAKE; a
    self-blended clip is FAKE), ``video_id`` str.
    """

    def __init__(self, manifest: str | Path, cfg: DataConfig | None = None, split: str | None = None,
                 train: bool = False, *, augment_cfg: AugmentConfig | None = None,
                 blend_cfg: SelfBlendConfig | None = None,
                 cache: bool | str | Path = False, cache_workers: int = 1,
                 sampler: ClipSampler | None = None):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split={split!r}: use one of {', '.join(SPLITS)} or None")
        self.manifest = Path(manifest).resolve()
        cfg = cfg or DataConfig()
        self.cfg, self.split, self.train = cfg, split, train
        self.augment_cfg, self.blend_cfg = augment_cfg, blend_cfg
        self.sampler = sampler or clip_sampler(train, cfg.train_stride)
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
        length = (cfg.train_frames or cfg.frames) if self.train else cfg.frames
        idx = self.sampler(int(self.lengths[i]), length, rng)
        frames, label = self._frames(i, idx), int(self.labels[i])
        if self.train and cfg.self_blend_prob > 0 and label == REAL and rng.random() < cfg.self_blend_prob:
            frames, _, _ = self_blend(frames, self._landmarks(i, idx), rng,
                                      self.blend_cfg or SelfBlendConfig())
            label = FAKE
        if self.train and cfg.augment:
            frames, _ = augment_clip(frames, rng, self.augment_cfg or AugmentConfig())
        return {"frames": preprocess_clip(frames, cfg),
                "label": torch.tensor(label, dtype=torch.int64), "video_id": self.video_ids[i]}



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
