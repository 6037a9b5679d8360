"""Augmented and self-blended copies of REAL face videos, written into the manifest.

:func:`augment_manifest` balances a data set: it adds augmented REAL copies (``<id>_aug<k>``,
``source="augment"``) until REAL:FAKE reaches a target ratio, or self-blended FAKE copies
(``<id>_sbi<k>``, ``source="self_blend"``) for a data set short of FAKEs (or with none). Every
copy keeps its source's ``file``, ``group`` and ``split`` (a copy never lands in another split
than its source), stores its drawn parameters as JSON in ``params``, and gets a face video and a
sidecar (keypoints moved with a flip or rotation) under the manifest's ``faces/`` folder.

Determinism: the k-th copy of a video draws from ``copy_rng(seed, kind, video_id, k)`` only, so
a copy is the same whatever else runs. Resumable: the manifest is rewritten (atomically) after
every copy; a rerun skips copies whose row and valid face video exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfdetect.augment.ops import AugmentConfig, apply_params, draw_params, transform_keypoints
from dfdetect.augment.selfblend import SelfBlendConfig, self_blend, sidecar_landmarks
from dfdetect.extraction.manifest import (
    OK,
    UNREADABLE,
    face_video_path,
    read_manifest,
    sidecar_path,
    write_manifest,
)
from dfdetect.labels import FAKE, LABEL_NAMES, REAL
from dfdetect.media import video
from dfdetect.media.files import atomic_path, remove_stale_temporaries

log = logging.getLogger(__name__)

KINDS = {"augment": "aug", "self_blend": "sbi"}  # source value -> video_id tag


class AugmentError(ValueError):
    """Augmentation cannot run on this manifest; the message says why and what to do."""


def copy_rng(seed: int, kind: str, video_id: str, k: int) -> np.random.Generator:
    """The generator of copy ``k`` of ``video_id``: a function of its arguments only."""
    digest = hashlib.blake2b(f"{kind}\0{video_id}".encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little"), k])


def _sources(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows a copy of ``kind`` may be made from: usable REAL rows, never a copy of the same kind
    (augmented copies may be self-blended: their sidecars carry moved keypoints)."""
    ok = df[(df["status"] == OK) & (df["label"] == LABEL_NAMES[REAL])]
    excluded = ("augment", "self_blend") if kind == "augment" else ("self_blend",)
    return ok[~ok["source"].isin(excluded)].sort_values("video_id", kind="stable")


def plan_copies(df: pd.DataFrame, kind: str = "augment", ratio: float = 1.0, per_video: int = 0,
                seed: int = 0) -> list[tuple[str, int]]:
    """Which copies to make: ``[(source video_id, k), ...]``.

    Args:
        df: The manifest.
        kind: "augment" (REAL copies) or "self_blend" (FAKE copies).
        ratio: Target REAL:FAKE ratio (1.0 = as many REAL as FAKE rows), reached by adding
            copies; rows of ``kind`` itself are not counted, so the plan (and a rerun's) is the
            same before and after the copies exist.
        per_video: When > 0, exactly this many copies of every source instead of a ratio.
        seed: Which sources get the one extra copy when copies do not divide evenly.

    Returns:
        The planned copies, sources in video_id order, k from 0.
    """
    if kind not in KINDS:
        raise AugmentError(f"kind={kind!r}: use 'augment' or 'self_blend'")
    src = _sources(df, kind)["video_id"].tolist()
    if per_video > 0:
        return [(v, k) for v in src for k in range(per_video)]
    if ratio <= 0:
        raise AugmentError(f"ratio={ratio}: give a positive REAL:FAKE ratio (1.0 = balanced)")
    ok = df[(df["status"] == OK) & (df["source"] != kind)]
    n_real = int((ok["label"] == LABEL_NAMES[REAL]).sum())
    n_fake = int((ok["label"] == LABEL_NAMES[FAKE]).sum())
    needed = (math.ceil(ratio * n_fake - 1e-9) - n_real if kind == "augment"
              else math.ceil(n_real / ratio - 1e-9) - n_fake)
    if needed <= 0 or not src:
        return []
    base, extra = divmod(needed, len(src))
    lucky = set(np.random.default_rng([seed, 7]).permutation(len(src))[:extra].tolist())
    return [(v, k) for i, v in enumerate(src) for k in range(base + (i in lucky))]


def _valid(path: Path) -> bool:
    try:
        return path.is_file() and video.probe(path).frames > 0
    except video.VideoError:
        return False


def _load_sidecar(face: Path) -> dict[str, np.ndarray] | None:
    npz = sidecar_path(face)
    if not npz.is_file():
        return None
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_sidecar(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def make_copy(face: Path, out: Path, kind: str, rng: np.random.Generator, crf: int = 18,
              cfg: AugmentConfig | None = None, blend_cfg: SelfBlendConfig | None = None
              ) -> dict[str, Any]:
    """Write one augmented or self-blended copy of face video ``face`` to ``out`` (+ sidecar).

    Returns:
        The drawn parameters (JSON-able).

    Raises:
        VideoError: The source face video cannot be read.
    """
    frames, fps = video.read_all_frames(face), video.probe(face).fps
    side = _load_sidecar(face)
    if side is not None and len(side.get("keypoints", frames)) != len(frames):
        log.warning("%s: sidecar has %d rows for %d frames; not copying it",
                    face, len(side["keypoints"]), len(frames))
        side = None
    if kind == "augment":
        params = draw_params(rng, cfg or AugmentConfig())
        out_frames = apply_params(frames, params)
        if side is not None and "keypoints" in side:
            side["keypoints"] = transform_keypoints(side["keypoints"], params, frames.shape[1:3])
    else:
        landmarks = None if side is None else sidecar_landmarks(side, frames.shape[2])
        out_frames, _, params = self_blend(frames, landmarks, rng, blend_cfg or SelfBlendConfig())
    drawn = params.to_dict()
    if side is not None:
        side["augment_params"] = np.array(json.dumps(drawn))
        _write_sidecar(sidecar_path(out), side)  # sidecar first: the video marks a valid copy
    video.write_video(out, out_frames, fps=fps, crf=crf, deterministic=True)  # a remade copy is identical
    return drawn


def _mark_missing(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rows marked ``ok`` whose face video is gone become ``unreadable`` (saying why), so they are
    neither copied nor trained on; a planned copy in that state is made again."""
    ok = df["status"] == OK
    gone = [i for i in df.index[ok] if not face_video_path(path, df.loc[i]).is_file()]
    if not gone:
        return df
    df = df.copy()
    for i in gone:
        df.loc[i, "status"] = UNREADABLE
        df.loc[i, "error"] = (f"face video {df.loc[i, 'face_video']} is missing (deleted?); rerun "
                              "extract for this video (augment remakes a missing copy)")
    log.warning("%s: %d row(s) marked ok have no face video (e.g. %s): marked %r",
                path, len(gone), df.loc[gone[0], "face_video"], UNREADABLE)
    write_manifest(df, path)
    return read_manifest(path)


def augment_manifest(
    manifest: str | Path, *, ratio: float = 1.0, per_video: int = 0, self_blend: bool = False,
    seed: int = 0, cfg: AugmentConfig | None = None, blend_cfg: SelfBlendConfig | None = None,
    crf: int = 18, progress: bool = True,
) -> pd.DataFrame:
    """Add augmented REAL (or self-blended FAKE) copies to a manifest, balancing its classes.

    Args:
        manifest: ``manifest.csv`` from extraction; rewritten in place after every copy.
        ratio: Target REAL:FAKE ratio (see :func:`plan_copies`).
        per_video: When > 0, this many copies of every REAL video instead of a ratio.
        self_blend: Make self-blended FAKE copies instead of augmented REAL ones.
        seed: Seed of every draw (with the video id and copy number).
        cfg: Augmentation ranges (default ``AugmentConfig()``).
        blend_cfg: Self-blend ranges (default ``SelfBlendConfig()``).
        crf: H.264 quality of the written face videos.
        progress: Show a tqdm bar.

    Returns:
        The updated manifest.

    Raises:
        ManifestError: No manifest at ``manifest``.
        AugmentError: No usable REAL rows to copy.
    """
    path = Path(manifest)
    df = _mark_missing(read_manifest(path), path)
    kind = "self_blend" if self_blend else "augment"
    if _sources(df, kind).empty:
        raise AugmentError(f"{path}: no REAL rows with status 'ok' to copy; check the labels "
                           "given at extraction (`dfdetect extract --labels ...`)")
    plan = plan_copies(df, kind, ratio, per_video, seed)
    if not plan:
        log.info("%s: nothing to add for REAL:FAKE = %g (counts: %s); use per_video for more",
                 path, ratio, df[df["status"] == OK]["label"].value_counts().to_dict())
        return df
    by_id = df.set_index("video_id", drop=False)
    for folder in {face_video_path(path, by_id.loc[v]).parent for v, _ in plan}:
        remove_stale_temporaries(folder)  # left by a killed run
    done = made = 0
    for src_id, k in tqdm(plan, desc=kind, disable=not progress, unit="copy"):
        new_id = f"{src_id}_{KINDS[kind]}{k}"
        src = by_id.loc[src_id]
        rel = (Path(src["face_video"]).parent / f"{new_id}.mp4").as_posix()
        if new_id in by_id.index and by_id.loc[new_id, "status"] == OK and _valid(path.parent / rel):
            done += 1
            continue
        drawn = make_copy(face_video_path(path, src), path.parent / rel, kind,
                          copy_rng(seed, kind, src_id, k), crf, cfg, blend_cfg)
        row = src.to_dict() | {
            "video_id": new_id, "face_video": rel, "tracks": "", "status": OK, "error": "",
            "label": LABEL_NAMES[REAL if kind == "augment" else FAKE], "source": kind,
            "params": json.dumps({"kind": kind, "of": src_id, "copy": k, "seed": seed, **drawn}),
        }
        by_id.loc[new_id] = pd.Series(row)
        write_manifest(by_id.reset_index(drop=True), path)
        made += 1
    log.info("%s: %d %s copies written, %d already there", path, made, kind, done)
    return read_manifest(path)
