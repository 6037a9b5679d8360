"""The manifest: one row per video, written by extraction and augmentation, read by every later stage.

Columns (all strings in the CSV, typed here):

=================  ======================================================================
video_id           unique id of the row (from the file's path at extraction; ``<id>_aug3`` etc.)
file               the source video, as named in the labels CSV (relative to the videos folder)
label              "REAL", "FAKE" or "" (unlabelled)
group              original video or person the row derives from; splits never cut a group
split              "train" / "val" / "test" from the labels CSV, or ""
face_video         the face video, relative to the manifest's folder ("" when none)
tracks             other tracks' face videos, ";"-separated (only with FaceConfig.all_tracks)
frames_read        frames decoded from the source video
frames_with_face   frames of the face video that come from a detection (or a bridged gap)
status             "ok", "no_face", "unreadable", "too_short" or "failed" (see below)
error              human-readable reason when status is not "ok"; on an "ok" row, a warning
                   (e.g. "only 22 of 48 frames could be decoded: the file may be truncated")
source             "extract", "augment" or "self_blend"
params             JSON of the augmentation parameters ("" for extracted rows)
source_stamp       "<size>:<mtime_ns>" of the source video the row was computed from; a rerun
                   redoes a row whose video changed since ("" in manifests of older versions)
=================  ======================================================================

Statuses: ``ok`` (a face video); ``no_face`` (no face in at least ``min_face_frames`` frames read:
nothing found, or a few false detections); ``too_short`` (the video has fewer frames than
``min_face_frames``, so no verdict about faces is possible); ``unreadable`` (the file is not a
readable video); ``failed`` (not a property of the video: a dead worker, a full disk, a
permission problem; a rerun retries it).

Each face video ``faces/<video_id>.mp4`` has a sidecar ``faces/<video_id>.npz`` (see
:func:`sidecar_path`) holding, per face-video frame: ``frame_index (N,) int64`` (frame of the
source video), ``box (N, 4) float32`` (x1, y1, x2, y2 of the detection in source pixels),
``keypoints (N, 6, 2) float32`` (BlazeFace's six keypoints in *crop* pixels), ``score (N,)
float32`` and ``interpolated (N,) bool`` (the box was bridged over a short gap, not detected).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfdetect.labels import LABEL_NAMES
from dfdetect.media.files import atomic_write_text

COLUMNS = (
    "video_id", "file", "label", "group", "split", "face_video", "tracks",
    "frames_read", "frames_with_face", "status", "error", "source", "params", "source_stamp",
)
INT_COLUMNS = ("frames_read", "frames_with_face")

OK = "ok"
NO_FACE = "no_face"
UNREADABLE = "unreadable"
TOO_SHORT = "too_short"
FAILED = "failed"
STATUSES = (OK, NO_FACE, UNREADABLE, TOO_SHORT, FAILED)

MANIFEST_NAME = "manifest.csv"


class ManifestError(ValueError):
    """A manifest is missing, malformed, or inconsistent with the files beside it."""


def empty_manifest() -> pd.DataFrame:
    """A manifest with the right columns and no rows."""
    return normalise(pd.DataFrame(columns=list(COLUMNS)))


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly :data:`COLUMNS`, in order, typed (missing columns become "" / 0)."""
    df = df.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = 0 if col in INT_COLUMNS else ""
    df = df[list(COLUMNS)]
    for col in COLUMNS:
        if col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
        else:
            df[col] = df[col].fillna("").astype(str)
    return df.reset_index(drop=True)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV.

    Raises:
        ManifestError: The file is missing, lacks ``video_id``/``face_video``/``status``, or has
            duplicate video ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; run `python -m dfdetect extract` first")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    required = {"video_id", "face_video", "status"}
    if not required <= set(df.columns):
        raise ManifestError(
            f"{path}: not a dfdetect manifest (needs columns {sorted(required)}, has {list(df.columns)})"
        )
    dup = df["video_id"][df["video_id"].duplicated()].tolist()
    if dup:
        raise ManifestError(f"{path}: duplicate video_id(s) {dup[:10]}; merge parts with merge_manifests")
    return normalise(df)


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as a manifest atomically (sorted by video_id, so reruns give identical files)."""
    out = normalise(df).sort_values("video_id", kind="stable").reset_index(drop=True)
    atomic_write_text(Path(path), out.to_csv(index=False))


def merge_manifests(parts: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Merge shard manifests (``extract --shard i/n``) into one, refusing conflicting duplicates.

    Raises:
        ManifestError: The same video_id appears in two parts with different contents.
    """
    frames = [read_manifest(p) for p in parts]
    merged = pd.concat(frames, ignore_index=True) if frames else empty_manifest()
    merged = merged.drop_duplicates()
    dup = merged["video_id"][merged["video_id"].duplicated()].tolist()
    if dup:
        raise ManifestError(f"video_id(s) {dup[:10]} differ between manifest parts {list(map(str, parts))}")
    write_manifest(merged, out)
    return read_manifest(out)


def face_video_path(manifest_path: str | Path, row: pd.Series | dict) -> Path:
    """Absolute path of a row's face video (stored relative to the manifest's folder)."""
    return Path(manifest_path).resolve().parent / str(row["face_video"])


def sidecar_path(face_video: str | Path) -> Path:
    """The ``.npz`` file beside a face video holding per-frame boxes and keypoints."""
    return Path(face_video).with_suffix(".npz")


def usable(df: pd.DataFrame) -> pd.Series:
    """Rows a model can use: status "ok" and a REAL/FAKE label (a boolean mask over ``df``)."""
    return (df["status"] == OK) & df["label"].isin(LABEL_NAMES.values())
