"""Decoded face frames in one memory-mapped uint8 file, so training does not decode H.264 per clip.

A clip of ``T`` frames from a face video costs decoding every frame up to its last one (H.264
frames depend on earlier ones), which is several times ``T`` for long face videos. The cache
decodes each face video once, resizes its frames to the model's size exactly as
:func:`dfdetect.data.dataset.preprocess_clip` would, and stores them as ``(N_total, S, S, 3) uint8`` in
``NAME.u8`` with an index ``NAME.json`` (video id -> offset, frame count, source side, and the
face video's size and mtime, so a changed face video invalidates the cache). Reading a clip is
then a memory copy; the operating system's page cache shares the file between DataLoader
workers.

Disk: ``S * S * 3`` bytes per frame: 37.6 KB at 112 px (1.1 GB per 100 videos of 300 frames),
150 KB at 224 px. Builds are atomic (data, then index, each renamed into place).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dfdetect.data.preprocess import resize_frames
from dfdetect.media import video
from dfdetect.media.files import atomic_path, atomic_write_text, mp_context

log = logging.getLogger(__name__)

FORMAT = 1


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _decode(path: Path, size: int, length: int) -> tuple[np.ndarray, int]:
    """All frames of one face video at ``size`` (padded/cut to ``length``) and its source side."""
    frames = video.read_all_frames(path)
    side = frames.shape[2]
    frames = resize_frames(frames, size)
    if len(frames) < length:  # the container promised more than decoded: repeat the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)])
    return frames[:length], side


def _fill(args: tuple[str, int, int, int, str, int]) -> int:
    """Worker: decode one video into its slice of the (already allocated) data file."""
    data, total, offset, length, path, size = args
    frames, side = _decode(Path(path), size, length)
    mm = np.memmap(data, dtype=np.uint8, mode="r+", shape=(total, size, size, 3))
    mm[offset:offset + length] = frames
    mm.flush()
    return side


class FrameCache:
    """Read clips from a built cache (see :meth:`build`); safe to pickle into DataLoader workers.

    Attributes:
        size: Frame side S.
        index: ``video_id -> {"offset", "length", "side", "stamp"}``.
    """

    def __init__(self, base: str | Path):
        self.base = Path(base)
        meta = json.loads(self.base.with_suffix(".json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.base}.json: cache format {meta.get('format')}; delete it to rebuild")
        self.size, self.total, self.index = int(meta["size"]), int(meta["total"]), meta["videos"]
        self._mm: np.memmap | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}  # each process maps the file itself

    def _map(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.base.with_suffix(".u8"), dtype=np.uint8, mode="r",
                                 shape=(self.total, self.size, self.size, 3))
        return self._mm

    def length(self, video_id: str) -> int:
        """Frames stored for ``video_id``."""
        return int(self.index[video_id]["length"])

    def side(self, video_id: str) -> int:
        """Side of ``video_id``'s face video before resizing (for scaling its keypoints)."""
        return int(self.index[video_id]["side"])

    def read(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of ``video_id``: ``(T, S, S, 3) uint8`` RGB (indices clamped to the video)."""
        entry = self.index[video_id]
        idx = np.minimum(np.asarray(indices, dtype=np.int64), entry["length"] - 1)
        return np.asarray(self._map()[entry["offset"] + idx])

    def matches(self, videos: dict[str, Path], size: int) -> bool:
        """True when the cache holds exactly these face videos, unchanged, at ``size``."""
        return (size == self.size and set(videos) == set(self.index)
                and all(self.index[v]["stamp"] == _stamp(p) for v, p in videos.items()))

    @classmethod
    def open_or_build(cls, base: str | Path, videos: dict[str, Path], size: int,
                      workers: int = 1, progress: bool = True) -> FrameCache:
        """The cache at ``base`` if it matches ``videos`` and ``size``, else a freshly built one."""
        base = Path(base)
        if base.with_suffix(".json").is_file() and base.with_suffix(".u8").is_file():
            try:
                cache = cls(base)
                if cache.matches(videos, size):
                    return cache
            except (ValueError, KeyError, json.JSONDecodeError):
                pass
            log.info("%s: cache out of date; rebuilding", base)
        return cls.build(base, videos, size, workers, progress)

    @classmethod
    def build(cls, base: str | Path, videos: dict[str, Path], size: int, workers: int = 1,
              progress: bool = True) -> FrameCache:
        """Decode ``videos`` (video_id -> face video) into ``base.u8`` + ``base.json``.

        Args:
            base: Path without suffix, e.g. ``OUT/cache/train-112px``.
            videos: The face videos to cache.
            size: Frame side S after resizing.
            workers: Decoding processes.
            progress: Show a tqdm bar.
        """
        base = Path(base)
        base.parent.mkdir(parents=True, exist_ok=True)
        ids = sorted(videos)
        lengths = [video.probe(videos[v]).frames for v in ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        total = int(sum(lengths))
        log.info("caching %d face videos (%d frames, %.2f GB at %d px) in %s", len(ids), total,
                 total * size * size * 3 / 1e9, size, base)
        with atomic_path(base.with_suffix(".u8")) as tmp:
            np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(total, 1), size, size, 3)).flush()
            jobs = [(str(tmp), max(total, 1), o, n, str(videos[v]), size)
                    for v, o, n in zip(ids, offsets, lengths)]
            with contextlib.ExitStack() as stack:
                pool = (stack.enter_context(ProcessPoolExecutor(workers, mp_context=mp_context()))
                        if workers > 1 else None)
                sides = list(tqdm((pool.map if pool else map)(_fill, jobs), total=len(jobs),
                                  desc="cache", disable=not progress, unit="video"))
        index = {v: {"offset": o, "length": n, "side": s, "stamp": _stamp(videos[v])}
                 for v, o, n, s in zip(ids, offsets, lengths, sides)}
        atomic_write_text(base.with_suffix(".json"), json.dumps(
            {"format": FORMAT, "size": size, "total": max(total, 1), "videos": index}))
        return cls(base)

