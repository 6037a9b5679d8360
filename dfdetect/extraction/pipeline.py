"""Videos -> face videos + manifest: :func:`process_videos` (a batch) and :func:`create_face_videos`.

For each source video: stream its frames (bounded memory whatever its length), detect and track
faces (:mod:`dfdetect.extraction.tracking`), crop every track's face as soon as its box is final, and keep
the track chosen by ``FaceConfig.keep_track`` as ``OUT/faces/<video_id>.mp4`` (H.264, fixed size)
with its sidecar ``OUT/faces/<video_id>.npz``; with ``FaceConfig.all_tracks`` every other track of
at least ``min_track_frames`` frames becomes ``OUT/faces/<video_id>__t<track_id>.mp4``. Frames
without the kept face are not written; the sidecar's ``frame_index`` says where each face frame
came from and ``read_index`` lists every frame read, so missing frames are explicit.

Sidecar keys: those of :mod:`dfdetect.extraction.manifest` (``frame_index``, ``box``, ``keypoints`` in crop
pixels, ``score``, ``interpolated``) plus ``region (N, 4) int32`` (the square cut from the source,
may pass its edges) and ``read_index (M,) int64``.

Rows remember what they were computed from (``source_stamp``: the source's size and mtime), so
a video that changed (re-downloaded, fixed) is redone. ``failed`` rows (a dead worker, a full
disk, a permission problem: not properties of the video) are retried by a rerun, and a batch
that had to stop raises :class:`BatchStoppedError` after saving what it finished. One writer per
output folder: a second ``extract`` on the same folder (and shard) is refused at once.

Safety: everything of one video is written in ``OUT/faces/.tmp-<video_id>.work/`` and moved into
place when complete, sidecar first, so "valid output" = face video + sidecar present with equal
frame counts. The manifest is rewritten atomically after each video; a rerun skips videos with a
manifest row and valid outputs and redoes the rest, so a kill loses at most the videos in progress.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfdetect.config import ExtractConfig, FaceConfig, to_dict
from dfdetect.extraction import manifest as mf
from dfdetect.extraction.faces import (
    FaceBox,
    FaceCropper,
    check_face_config,
    check_opencv,
    crop_region,
    cut_square,
    to_crop_pixels,
)
from dfdetect.extraction.tracking import (
    FaceTrack,
    FaceTracker,
    SettledFrame,
    TrackedFace,
    check_tracking_config,
    select_track,
)
from dfdetect.labels import read_labels
from dfdetect.media.files import TMP_MARK, atomic_write_text, mp_context
from dfdetect.media.find import VIDEO_SUFFIXES, find_videos
from dfdetect.media.video import (
    VideoAccessError,
    VideoError,
    VideoWriter,
    YuvFrame,
    iter_yuv_frames,
    probe,
    uniform_indices,
)

try:  # POSIX (Linux, macOS, Colab); without it the output folder is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

FACES_DIR = "faces"
CONFIG_NAME = "extract_config.json"
FAILED = "processing failed"  # error prefix of rows that a rerun retries (not a property of the file)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no later video can be written either: stop the batch
PARENT_POLL = 0.5  # seconds between a worker's checks that the process that started it is alive
PREFETCH = 3  # frames decoded ahead in a background thread
ENCODE_AHEAD = 4  # settled frame batches queued for the crop + encode thread
# Frames up to this size are also converted to RGB (FFmpeg), and the detector reads that: the
# frame it warps is then 0.1.0's to the bit. Faces of ~50 px in 640x480 video are 15 px in BlazeFace's
# 192x192 input, where half a grey level moves a box by several % IoU: on the real 640x480 clips
# the planes agree with 0.1.0 in 98.8% of frames, RGB in 99.7%. Converting costs about as much
# as decoding; above this size, where it costs most, the detector reads the YUV planes (99.8% on
# the same clips upscaled to 1080p; bench/extract_speed.py).
RGB_DETECT_PIXELS = 1280 * 720
DECODE_THREADS = 2  # the decoder's share of the cores; detection and encoding have their own
DETECT_THREADS = 2  # frames detected side by side (one LiteRT interpreter each, single-threaded)
DETECT_AHEAD = 2  # detect_every periods of frames read ahead of the tracker, so detections overlap
# settings of earlier versions that are gone, with the value that behaves as this version does
REMOVED_SETTINGS = {"face": {"detect_size": 0}}


class ExtractError(RuntimeError):
    """The batch cannot start (bad arguments or an output folder made with other settings)."""


class BatchStoppedError(ExtractError):
    """The batch stopped early (full disk, dead worker); finished rows are saved, rerun to go on."""


@dataclass(frozen=True)
class VideoJob:
    """One source video of a batch, with its labels-CSV fields."""

    path: Path  # the file
    file: str  # as named in the labels CSV (else relative to the videos folder, "/"-separated)
    video_id: str  # manifest key: ``file`` without extension, "/" replaced by "__"
    label: str = ""
    group: str = ""
    split: str = ""


def video_id_for(relative: str) -> str:
    """Stable manifest key of a video from its path relative to the videos folder."""
    return Path(relative).with_suffix("").as_posix().replace("/", "__")


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"i/n"`` (0-based) -> ``(i, n)``; ``None`` -> ``(0, 1)``.

    Raises:
        ExtractError: Not of the form ``i/n`` with ``0 <= i < n``.
    """
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise ExtractError(f"shard={shard!r}: write it as i/n, e.g. 0/4 for the first of 4 parts") from None
    if not 0 <= i < n:
        raise ExtractError(f"shard={shard!r}: need 0 <= i < n (parts are numbered from 0)")
    return i, n


def _find_videos(videos: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path]]:
    """The videos folder and the video files under it (a folder, one file or a list of files)."""
    if isinstance(videos, (str, Path)):
        src = Path(videos)
        if not src.exists():
            raise ExtractError(f"{src}: no such folder or file (on Colab: is Drive mounted?)")
        if src.is_file():
            return src.parent, [src]
        return src, find_videos(src)
    paths = [Path(p).resolve() for p in videos]
    return (Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()), paths


def plan_jobs(videos: str | Path | Sequence[str | Path], labels_csv: str | Path | None = None
              ) -> list[VideoJob]:
    """The videos of a batch, sorted by video_id.

    Args:
        videos: A folder (searched recursively for :data:`VIDEO_SUFFIXES`), one file, or a list
            of files (relative to their common folder).
        labels_csv: When given, exactly the files it lists (relative to the videos folder) are
            the batch, with their label, group and split.

    Raises:
        ExtractError: Nothing to process, or two files would get the same video_id.
        LabelsError: The labels CSV is malformed or lists files that are not there.
    """
    if labels_csv is not None:
        root = Path(videos) if Path(videos).is_dir() else Path(videos).parent
        table = read_labels(labels_csv, root)  # checks the files exist, warns about unlisted ones
        jobs = [VideoJob(root / r.file, r.file, video_id_for(r.file), r.label, r.group, r.split)
                for r in table.itertuples(index=False)]
    else:
        root, paths = _find_videos(videos)
        jobs = [VideoJob(p, p.relative_to(root).as_posix(),
                         video_id_for(p.relative_to(root).as_posix())) for p in paths]
    if not jobs:
        raise ExtractError(f"{videos}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)})")
    by_id: dict[str, str] = {}
    for job in jobs:
        if job.video_id in by_id:
            raise ExtractError(f"{by_id[job.video_id]} and {job.file} would both be video_id "
                               f"{job.video_id!r}; rename one of them")
        by_id[job.video_id] = job.file
    return sorted(jobs, key=lambda j: j.video_id)


def _prefetch(items: Iterator[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``depth`` ahead (decoding overlaps detection).

    One thread calls ``next`` in order; exceptions reach the consumer through ``result()``.
    """
    end = object()
    pool = ThreadPoolExecutor(1, thread_name_prefix="dfdetect-decode")
    try:
        ahead = deque(pool.submit(next, items, end) for _ in range(depth))
        while (item := ahead.popleft().result()) is not end:
            ahead.append(pool.submit(next, items, end))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        items.close()  # the video file, also when the consumer stops early


class _DetectAhead:
    """The tracker's detector: the frames it detects on schedule are detected ahead, on a pool.

    :meth:`submit` starts the detection of a frame the tracker will detect when it is pushed
    (every ``detect_every``-th); :meth:`detect` (the tracker's call) returns it, and detects any
    other frame (a lost track, a backfill) at once. Frames are :class:`YuvFrame` s; each pool
    thread gets its own interpreter from the :class:`FaceCropper` (kept there for the next video).
    """

    def __init__(self, cropper: FaceCropper, pool: ThreadPoolExecutor):
        self.cropper, self.pool = cropper, pool
        # id(frame) -> its detection; the frame is alive (lookahead, then the tracker) until the
        # tracker's push takes the result, so an id cannot be reused while it is a key
        self._ahead: dict[int, Future] = {}

    def submit(self, frame: YuvFrame) -> None:
        self._ahead[id(frame)] = self.pool.submit(self.cropper.detect_yuv, frame)

    def detect(self, frame: YuvFrame, color: str = "rgb") -> list[FaceBox]:
        future = self._ahead.pop(id(frame), None)
        return future.result() if future is not None else self.cropper.detect_yuv(frame)

    def cancel(self) -> None:
        """Drop the detections not taken (after a failure)."""
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()


class _TrackWriter:
    """One track's face video (in the staging folder) and the sidecar rows that go with it."""

    def __init__(self, path: Path, fps: float, face_cfg: FaceConfig, crf: int):
        self.path, self.cfg, self.rows = path, face_cfg, []
        self.video = VideoWriter(path, fps=fps, crf=crf, threads=1)  # the other core detects

    def add(self, frame: YuvFrame, frame_index: int, face: TrackedFace) -> None:
        region = crop_region(face.box, frame.shape, self.cfg.margin)
        self.video.write_yuv(cut_yuv(frame, region, self.cfg.size))
        self.rows.append((frame_index, face.box, to_crop_pixels(face.keypoints, region, self.cfg.size),
                          face.score, face.interpolated, region))

    def arrays(self, read_index: np.ndarray) -> dict[str, np.ndarray]:
        """The sidecar: per face frame, and ``read_index`` (every frame read)."""
        cols = list(zip(*self.rows, strict=True))
        types = (np.int64, np.float32, np.float32, np.float32, bool, np.int32)
        names = ("frame_index", "box", "keypoints", "score", "interpolated", "region")
        return {**{k: np.asarray(c, t) for k, c, t in zip(names, cols, types, strict=True)},
                "read_index": read_index}


def cut_yuv(frame: YuvFrame, region: tuple[int, int, int, int], size: int) -> YuvFrame:
    """:func:`cut_square` on each plane: ``(size, size)`` luma, ``(size/2, size/2)`` chroma.

    Black outside the frame; the chroma square starts at the luma square's position halved,
    rounded down (half a chroma pixel at most). The crop is in video range whatever the frame's.
    """
    x1, y1, x2, _ = region
    cx, cy, cside = x1 // 2, y1 // 2, max(1, round((x2 - x1) / 2))
    chroma = (cx, cy, cx + cside, cy + cside)
    return YuvFrame(cut_square(frame.y, region, size, fill=0 if frame.full_range else 16),
                    cut_square(frame.u, chroma, size // 2, fill=128),
                    cut_square(frame.v, chroma, size // 2, fill=128),
                    frame.full_range, frame.colorspace).video_range()


def _open_frames(path: Path, cfg: ExtractConfig
                 ) -> tuple[Iterator[tuple[int, YuvFrame]], float, int, int]:
    """The frames to read, the frame rate, how many of them the header promises, and its length.

    Raises:
        VideoError: The file cannot be opened as a video.
    """
    info = probe(path)
    if cfg.sampling == "uniform":
        indices = uniform_indices(info.frames, cfg.num_frames)
        frames = iter_yuv_frames(path, indices, rgb_up_to=RGB_DETECT_PIXELS, threads=DECODE_THREADS)
        return frames, info.fps, len(set(indices.tolist())), info.frames
    expected = min(info.frames, cfg.max_frames) if cfg.max_frames else info.frames
    frames = iter_yuv_frames(path, max_frames=cfg.max_frames, rgb_up_to=RGB_DETECT_PIXELS,
                             threads=DECODE_THREADS)
    return frames, info.fps, expected, info.frames


def _track_and_write(frames: Iterator[tuple[int, YuvFrame]], fps: float, cropper: FaceCropper,
                     face_cfg: FaceConfig, crf: int, stage: Path
                     ) -> tuple[list[FaceTrack], dict[int, _TrackWriter], np.ndarray]:
    """One streaming pass: track, crop every track's frames as they settle, write staging videos.

    Four stages overlap (PyAV, OpenCV, LiteRT and x264 release the GIL): a prefetch thread
    decodes frames (to their YUV planes; to RGB as well only up to :data:`RGB_DETECT_PIXELS`),
    :data:`DETECT_THREADS` threads detect the frames the tracker will detect on schedule,
    :data:`DETECT_AHEAD` ``detect_every`` periods ahead of it (one detection at a time was the
    critical path), this thread tracks (detecting at once the frames a lost track needs), and an
    encode thread crops the settled frames from the planes and writes them. Every queue is
    bounded: memory stays flat in video length.
    """
    writers: dict[int, _TrackWriter] = {}
    read: list[int] = []
    with contextlib.ExitStack() as stack:  # closes every video; a failure removes them all
        # OpenCV's own threads on 192- and 224-pixel images cost twice the CPU for half the
        # wall time, taken from the stages running beside them: one thread while this runs
        stack.callback(cv2.setNumThreads, cv2.getNumThreads())
        cv2.setNumThreads(1)
        detector = _DetectAhead(cropper, stack.enter_context(
            ThreadPoolExecutor(DETECT_THREADS, thread_name_prefix="dfdetect-detect")))
        stack.callback(detector.cancel)
        tracker = FaceTracker(detector, face_cfg)

        def write(settled: list[SettledFrame]) -> None:
            for s in settled:
                for face in s.faces:
                    if face.track_id not in writers:
                        w = _TrackWriter(stage / f"t{face.track_id}.mp4", fps, face_cfg, crf)
                        stack.enter_context(w.video)
                        writers[face.track_id] = w
                    writers[face.track_id].add(s.frame, s.frame_index, face)

        pending: deque = deque()

        def push(index: int, frame: YuvFrame) -> None:
            read.append(index)
            tracker.push(index, frame)
            settled = tracker.pop_settled()
            if settled:
                pending.append(encoder.submit(write, settled))
            while len(pending) > ENCODE_AHEAD:
                pending.popleft().result()

        ahead: deque[tuple[int, YuvFrame]] = deque()
        depth = DETECT_AHEAD * face_cfg.detect_every
        with ThreadPoolExecutor(1, thread_name_prefix="dfdetect-encode") as encoder:
            try:
                for pos, (index, frame) in enumerate(_prefetch(frames)):
                    if tracker.on_schedule(pos):
                        detector.submit(frame)
                    ahead.append((index, frame))
                    if len(ahead) > depth:
                        push(*ahead.popleft())
                while ahead:
                    push(*ahead.popleft())
                pending.append(encoder.submit(write, tracker.pop_settled(final=True)))
                while pending:
                    pending.popleft().result()
            finally:
                for future in pending:  # after a failure: drop what is queued
                    future.cancel()
    return tracker.tracks(), writers, np.asarray(read, np.int64)


def _publish(writer: _TrackWriter, read_index: np.ndarray, faces_dir: Path, name: str) -> str:
    """Move a finished track into ``faces/``: sidecar first, then the video (the validity mark)."""
    staged_npz = writer.path.with_suffix(".npz")
    np.savez(staged_npz, **writer.arrays(read_index))
    os.replace(staged_npz, faces_dir / f"{name}.npz")
    os.replace(writer.path, faces_dir / f"{name}.mp4")
    return f"{FACES_DIR}/{name}.mp4"


def _verdict(path: Path, tracks: list[FaceTrack], n: int, expected: int, face_cfg: FaceConfig,
             extract_cfg: ExtractConfig, video_frames: int) -> tuple[FaceTrack | None, str, str]:
    """``(kept track or None, status, error)`` of a video whose ``n`` frames were tracked.

    One vocabulary with prediction's ``NO_FACE``: a face found in fewer than ``min_face_frames``
    frames (none, or a few false detections) is ``no_face``; ``too_short`` is kept for videos
    with fewer frames than that, where no verdict about faces is possible. A truncated file
    says so in ``error`` whatever its status, ``ok`` included.
    """
    note = ""
    if n < expected - 1:  # a header's count may be off by one; more means a broken file
        note = f"only {n} of the {expected} frames could be decoded: the file may be truncated"
        log.warning("%s: %s", path, note)
    kept = select_track(tracks, face_cfg.keep_track)
    if not n:
        return None, mf.UNREADABLE, "no frame could be decoded"
    need, found = extract_cfg.min_face_frames, len(kept) if kept else 0
    if found >= need:
        return kept, mf.OK, note
    if n < need:
        error = f"only {n} frame(s) read, fewer than min_face_frames={need}"
    else:
        error = (f"no face: found in {found} of {n} frames read, {need} needed (min_face_frames; "
                 f"detector {face_cfg.model!r}, min_score {face_cfg.min_score}); try a lower min_score")
    hint = _more_frames_hint(found, n, video_frames, need, extract_cfg)
    return kept, (mf.TOO_SHORT if n < need else mf.NO_FACE), "; ".join(x for x in (error, hint, note) if x)


def _more_frames_hint(found: int, n: int, video_frames: int, need: int, cfg: ExtractConfig) -> str:
    """Which flag reads more frames, when the video has frames that were not read and a face was seen."""
    if found == 0 or n >= video_frames - 1:
        return ""  # no face at all, or every frame was read: more sampling cannot help
    if cfg.sampling == "uniform":
        more = min(video_frames, -(-need * n // found))
        return f"sampling more frames may find enough: e.g. --num-frames {more} (of {video_frames})"
    if cfg.max_frames and n >= cfg.max_frames:
        return f"reading more frames may find enough: raise --max-frames (now {cfg.max_frames}) or use 0"
    return ""  # every frame was tried: the rest did not decode


def create_face_videos(video_path: str | Path, out_dir: str | Path, video_id: str,
                       face_cfg: FaceConfig | None = None, extract_cfg: ExtractConfig | None = None,
                       cropper: FaceCropper | None = None) -> dict[str, Any]:
    """Extract the face video(s) of one source video.

    Args:
        video_path: The source video.
        out_dir: Output folder; files go to ``out_dir/faces/``.
        video_id: Name of the outputs (``faces/<video_id>.mp4`` and ``.npz``).
        face_cfg: Detection, tracking and crop settings (default ``FaceConfig()``).
        extract_cfg: Frame sampling and encoding settings (default ``ExtractConfig()``).
        cropper: A detector to reuse across videos (one is created and closed otherwise).

    Returns:
        Manifest fields ``video_id, face_video, tracks, frames_read, frames_with_face, status,
        error, source`` (status ``ok``, ``no_face``, ``unreadable``, ``too_short``, or ``failed``
        when the file cannot be opened at all: permissions, a link loop; see the manifest).

    Raises:
        OSError: Writing the outputs failed (e.g. a full disk); nothing half-written is left.
    """
    face_cfg, extract_cfg = face_cfg or FaceConfig(), extract_cfg or ExtractConfig()
    faces_dir = Path(out_dir) / FACES_DIR
    stage = faces_dir / f"{TMP_MARK}{video_id}.work"
    for suffix in (".mp4", ".npz"):  # a redo never leaves an old output looking valid
        (faces_dir / f"{video_id}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    row = {"video_id": video_id, "face_video": "", "tracks": "", "frames_read": 0,
           "frames_with_face": 0, "status": mf.OK, "error": "", "source": "extract"}
    try:
        with contextlib.ExitStack() as stack:
            cropper = cropper or stack.enter_context(FaceCropper(face_cfg))
            try:
                frames, fps, expected, length = _open_frames(Path(video_path), extract_cfg)
                tracks, writers, read_index = _track_and_write(frames, fps, cropper, face_cfg,
                                                               extract_cfg.crf, stage)
            except VideoAccessError as err:
                return {**row, "status": mf.FAILED, "error": str(err)}
            except VideoError as err:
                return {**row, "status": mf.UNREADABLE, "error": str(err)}
        kept, status, error = _verdict(Path(video_path), tracks, len(read_index), expected,
                                       face_cfg, extract_cfg, length)
        row.update(frames_read=len(read_index), frames_with_face=len(kept) if kept else 0,
                   status=status, error=f"{video_path}: {error}" if error else "")
        if status != mf.OK:
            return row
        row["error"] = f"{video_path}: {error}" if error else ""
        others = [t for t in tracks if face_cfg.all_tracks and t.track_id != kept.track_id
                  and len(t) >= face_cfg.min_track_frames]
        row["tracks"] = ";".join(_publish(writers[t.track_id], read_index, faces_dir,
                                          f"{video_id}__t{t.track_id}") for t in others)
        row["face_video"] = _publish(writers[kept.track_id], read_index, faces_dir, video_id)
        return row
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def output_is_valid(out_dir: str | Path, face_video: str, frames: int | None = None) -> bool:
    """True if ``face_video`` (relative to ``out_dir``) and its sidecar exist and agree.

    Args:
        out_dir: The extraction output folder.
        face_video: Path relative to it, e.g. ``faces/v1.mp4``.
        frames: Expected number of face frames (the manifest's ``frames_with_face``), if known.
    """
    video = Path(out_dir) / face_video
    try:
        with np.load(mf.sidecar_path(video)) as side:
            n = len(side["frame_index"])
        return probe(video).frames == n and (frames is None or frames == n)
    except (OSError, KeyError, ValueError, VideoError):
        return False


def source_stamp(path: str | Path) -> str:
    """``"<size>:<mtime_ns>"`` of a file ("" when it cannot be stat'ed): what a row was made from."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _is_done(row: dict | None, job: VideoJob, out_dir: Path) -> bool:
    if row is None or row["status"] == mf.FAILED or row["error"].startswith(FAILED):
        return False
    stamp = row.get("source_stamp", "")
    if stamp != source_stamp(job.path) and (stamp or row["status"] != mf.OK):
        # the video changed since (re-downloaded, replaced); unstamped rows of older versions
        # are trusted when ok (their outputs are checked below) and redone otherwise (cheap)
        return False
    if row["status"] != mf.OK:
        return True  # the row is the output; its verdict does not change on a rerun
    tracks = [t for t in row["tracks"].split(";") if t]
    return (output_is_valid(out_dir, row["face_video"], int(row["frames_with_face"]))
            and all(output_is_valid(out_dir, t) for t in tracks))


def _check_settings(out: Path, face_cfg: FaceConfig, extract_cfg: ExtractConfig) -> None:
    """Refuse to mix outputs of different settings in one folder; record them otherwise."""
    check_face_config(face_cfg)
    check_tracking_config(face_cfg)
    if extract_cfg.sampling not in ("all", "uniform"):
        raise ExtractError(f"ExtractConfig.sampling={extract_cfg.sampling!r}: use 'all' or 'uniform'")
    settings = {"face": to_dict(face_cfg), "extract": to_dict(extract_cfg)}
    path = out / CONFIG_NAME
    if path.is_file():
        old = json.loads(path.read_text())
        for part, values in settings.items():  # a field added since: the folder has its default
            defaults = to_dict(FaceConfig() if part == "face" else ExtractConfig())
            was = old.get(part, {})
            gone = [k for k, v in REMOVED_SETTINGS.get(part, {}).items() if was.get(k, v) != v]
            if gone:  # a removed setting that was not at its (now the only) behaviour
                raise ExtractError(
                    f"{path}: {out} was extracted with {', '.join(f'{part}.{k}={was[k]}' for k in gone)}, "
                    "a setting this version no longer has; use a new output folder, or delete this "
                    f"folder's faces/, manifest*.csv and {CONFIG_NAME} to start over")
            old[part] = {k: was.get(k, defaults[k]) for k in values}
        if old != settings:
            diff = sorted(f"{part}.{k}" for part in settings for k in settings[part]
                          if old.get(part, {}).get(k) != settings[part][k])
            raise ExtractError(
                f"{path}: {out} was extracted with other settings ({', '.join(diff)} differ); "
                "use a new output folder, or delete this folder's faces/, manifest*.csv and "
                f"{CONFIG_NAME} to start over")
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


_WORKER_CROPPER: FaceCropper | None = None  # one detector per pool process, made by _init_worker


def _init_worker(face_cfg: FaceConfig, parent: int) -> None:
    global _WORKER_CROPPER  # per-process state of a pool worker
    exit_with_parent(parent)
    _WORKER_CROPPER = FaceCropper(face_cfg)


def exit_with_parent(parent: int) -> None:
    """End this (worker) process as soon as process ``parent`` is gone, e.g. after ``kill -9``.

    A pool's workers are otherwise reparented to PID 1 and go on writing face videos nobody
    records. On Linux the kernel kills us when the parent dies (``PR_SET_PDEATHSIG``); a daemon
    thread that polls ``os.getppid()`` covers other systems and a parent that died before this
    call.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)  # nobody is left to read our results; skip cleanup that could block

    threading.Thread(target=watch, name="dfdetect-parent-watch", daemon=True).start()


def _run_job(job: VideoJob, out: Path, face_cfg: FaceConfig, extract_cfg: ExtractConfig,
             cropper: FaceCropper | None) -> dict[str, Any]:
    """One video -> its full manifest row; never raises (one bad video never stops the batch)."""
    fields = {"file": job.file, "label": job.label, "group": job.group, "split": job.split,
              "source_stamp": source_stamp(job.path)}  # before reading: a change during it redoes
    try:
        row = create_face_videos(job.path, out, job.video_id, face_cfg, extract_cfg,
                                 cropper or _WORKER_CROPPER)
    except OSError as err:
        if err.errno not in DISK_FULL:
            log.exception("%s: extraction failed", job.path)
        where = f" writing {err.filename}" if err.filename else ""
        row = {"video_id": job.video_id, "status": mf.FAILED, "source": "extract",
               "error": f"{FAILED} ({err.strerror or err}{where}); rerun to retry",
               "stop": f"the disk is full ({err.strerror}{where}): free space, then rerun to continue"
               if err.errno in DISK_FULL else ""}
    except Exception as err:  # recorded in the manifest, retried by a rerun
        log.exception("%s: extraction failed", job.path)
        row = {"video_id": job.video_id, "status": mf.FAILED, "source": "extract",
               "error": f"{FAILED} ({type(err).__name__}: {err}); rerun to retry"}
    if row["status"] != mf.OK:
        log.info("%s: %s: %s", job.file, row["status"], row["error"])
    return {**fields, **row}


def _run_all(todo: list[VideoJob], out: Path, face_cfg: FaceConfig, extract_cfg: ExtractConfig,
             workers: int) -> Iterator[dict[str, Any]]:
    """Rows of ``todo`` in the order they finish (a process pool when ``workers > 1``)."""
    if workers <= 1:
        with FaceCropper(face_cfg) as cropper:
            for job in todo:
                yield _run_job(job, out, face_cfg, extract_cfg, cropper)
        return
    with ProcessPoolExecutor(workers, mp_context=mp_context(), initializer=_init_worker,
                             initargs=(face_cfg, os.getpid())) as pool:
        futures = {pool.submit(_run_job, job, out, face_cfg, extract_cfg, None): job for job in todo}
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001 - a worker died (crash, out of memory)
                    dead = isinstance(err, BrokenProcessPool)
                    yield {"video_id": job.video_id, "file": job.file, "label": job.label,
                           "group": job.group, "split": job.split, "status": mf.FAILED,
                           "source": "extract", "source_stamp": source_stamp(job.path),
                           "error": f"{FAILED} (worker died: {err or type(err).__name__}); rerun to retry",
                           "stop": "a worker process died (killed, or out of memory); rerun to "
                           "retry, with fewer --workers if memory is short" if dead else ""}
        finally:  # stopped early (a full disk, a dead pool, Ctrl-C): drop the queued videos
            for future in futures:
                future.cancel()


def merge_parts(out_dir: str | Path) -> pd.DataFrame:
    """Merge ``OUT/manifest.part-<i>-of-<n>.csv`` (all n shards) into ``OUT/manifest.csv``.

    Raises:
        ExtractError: No parts, parts of different ``n``, or a part missing.
    """
    out = Path(out_dir)
    parts = {p: p.name.split(".")[1].split("-") for p in sorted(out.glob("manifest.part-*-of-*.csv"))}
    counts = {int(f[3]) for f in parts.values() if len(f) == 4}
    if len(counts) != 1:
        raise ExtractError(f"{out}: expected manifest.part-<i>-of-<n>.csv files of one n, "
                           f"found {sorted(p.name for p in parts)}; run extract --shard i/n first")
    n = counts.pop()
    missing = sorted(set(range(n)) - {int(f[1]) for f in parts.values()})
    if missing:
        raise ExtractError(f"{out}: manifest part(s) {missing} of {n} are missing; run "
                           f"`python -m dfdetect extract ... --shard {missing[0]}/{n}` first")
    return mf.merge_manifests(list(parts), out / mf.MANIFEST_NAME)


def manifest_name(shard: tuple[int, int]) -> str:
    """``manifest.csv``, or ``manifest.part-<i>-of-<n>.csv`` for a shard of ``n > 1`` parts."""
    i, n = shard
    return mf.MANIFEST_NAME if n == 1 else f"manifest.part-{i}-of-{n}.csv"


def process_videos(videos: str | Path | Sequence[str | Path], out_dir: str | Path,
                   labels_csv: str | Path | None = None, face_cfg: FaceConfig | None = None,
                   extract_cfg: ExtractConfig | None = None, workers: int = 1,
                   shard: str | tuple[int, int] | None = None, progress: bool = True
                   ) -> pd.DataFrame:
    """Extract face videos from a batch of videos, resumably, and write the manifest.

    Args:
        videos: Folder (recursive), one file, or a list of files (see :func:`plan_jobs`).
        out_dir: Output folder: ``faces/``, ``manifest.csv`` (or this shard's part) and
            ``extract_config.json``.
        labels_csv: ``file,label[,group][,split]`` CSV relative to ``videos``; it then defines the batch.
        face_cfg: Detection, tracking and crop settings (default ``FaceConfig()``).
        extract_cfg: Frame sampling and encoding settings (default ``ExtractConfig()``).
        workers: Processes working on different videos at once.
        shard: ``"i/n"``: process only every n-th video starting at the i-th (by video_id), and
            write ``manifest.part-<i>-of-<n>.csv``; merge the parts with
            :func:`dfdetect.extraction.manifest.merge_manifests` (``python -m dfdetect merge``).
        progress: Show a progress bar over videos.

    Returns:
        This run's manifest (one row per video of the batch or shard), also written to ``out_dir``.

    Raises:
        ExtractError: No videos, clashing video ids, a bad shard, or ``out_dir`` holds outputs
            of other settings.
    """
    face_cfg, extract_cfg = face_cfg or FaceConfig(), extract_cfg or ExtractConfig()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ExtractError(f"workers={workers!r}: give a number of processes >= 1")
    check_opencv()  # a broken cv2 is the environment's fault: stop before any row is written
    out = Path(out_dir)
    part = parse_shard(shard)
    jobs = plan_jobs(videos, labels_csv)[part[0]::part[1]]
    path = out / manifest_name(part)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with lock_output(out, part):
            _check_settings(out, face_cfg, extract_cfg)
            return _process(jobs, out, path, face_cfg, extract_cfg, workers, progress)
    except OSError as err:  # at start (a full disk, a read-only folder): one line, naming it
        if err.errno not in (*DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ExtractError(f"{err.filename or out}: cannot write the output folder {out} "
                           f"({err.strerror}); free space or choose another --out") from None


def _process(jobs: list[VideoJob], out: Path, path: Path, face_cfg: FaceConfig,
             extract_cfg: ExtractConfig, workers: int, progress: bool) -> pd.DataFrame:
    """The locked part of :func:`process_videos`: resume, run, and record every row."""
    for stale in out.glob(f"{TMP_MARK}{path.stem}-*{path.suffix}"):  # this part's, from a kill
        stale.unlink(missing_ok=True)
    rows: dict[str, dict] = {}
    if path.is_file():  # keep this batch's rows, and every row extraction did not write (augment's)
        wanted = {j.video_id for j in jobs}
        rows = {r["video_id"]: r for r in mf.read_manifest(path).to_dict("records")
                if r["video_id"] in wanted or r["source"] != "extract"}
    todo = [j for j in jobs if not _is_done(rows.get(j.video_id), j, out)]
    for job in todo:
        rows.pop(job.video_id, None)
    log.info("%d video(s) to extract, %d already done (%s)", len(todo), len(jobs) - len(todo), path)
    mf.write_manifest(pd.DataFrame(list(rows.values()), columns=list(mf.COLUMNS)), path)
    stop, done = "", 0
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="extract", unit="video",
              disable=not progress) as bar:
        for row in _run_all(todo, out, face_cfg, extract_cfg, workers):
            stop = row.pop("stop", "") or stop
            rows[row["video_id"]] = row
            mf.write_manifest(pd.DataFrame(list(rows.values())), path)
            done += 1
            bar.update()
            if stop:
                break
    if stop:
        raise BatchStoppedError(f"{out}: extraction stopped after {done} of {len(todo)} video(s): "
                                f"{stop}; finished rows are saved in {path}")
    return mf.read_manifest(path)


@contextlib.contextmanager
def lock_output(out: Path, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Hold the output folder for this run; refuse a second writer at once (:class:`ExtractError`).

    A whole-batch run holds ``OUT/.extract.lock`` exclusively; a shard holds it shared and its own
    part's lock exclusively, so shards ``i/n`` may run side by side but nothing runs twice.

    Refusing rather than waiting: the usual second writer is a notebook cell rerun while the
    first run is still alive in another kernel or terminal; waiting would look like a hang, and
    once the first run finished there is nothing left for the second to do. The message names
    the folder and the process holding it. Locks are ``fcntl.flock`` locks, released by the
    kernel when the holder dies, so a killed run never leaves a stale lock. On file systems
    without locks (some network mounts) the run goes on unlocked, with a warning.
    """
    if fcntl is None:
        yield
        return
    i, n = shard
    names = [(".extract.lock", fcntl.LOCK_EX if n == 1 else fcntl.LOCK_SH)]
    if n > 1:
        names.append((f".extract-part-{i}-of-{n}.lock", fcntl.LOCK_EX))
    with contextlib.ExitStack() as stack:
        for name, mode in names:
            fh = stack.enter_context(open(out / name, "a+"))
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise ExtractError(
                    f"{out}: another `dfdetect extract` ({holder}) is writing to this output folder; "
                    "wait for it to finish (or stop it), or use another output folder") from None
            except OSError as err:  # no locking on this file system
                log.warning("%s: cannot lock the output folder (%s); make sure no other extract "
                            "writes to it", out, err.strerror)
                continue
            stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
            if mode == fcntl.LOCK_EX:
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()}{'' if n == 1 else f', shard {i}/{n}'}")
                fh.flush()
        yield
