"""Following faces through a clip: an IoU tracker with short-gap bridging and a named keep rule.

Rules (chosen to be simple and honest rather than clever):

* A **track** is IoU-continuous: a detection continues the track whose last detected box
  overlaps it most (IoU >= ``FaceConfig.track_iou``; greedy, best pairs first).
* Frames are counted in the order they are read (``position``), so gaps mean the same with every
  sampling. Between two detections of a track at most ``FaceConfig.max_gap`` frames are
  **bridged**: their boxes are linearly interpolated and flagged ``interpolated``. A longer gap
  **ends** the track; a stale box is never carried over it. If the face comes back, it starts a
  new track (identities are not re-joined across long gaps: nothing here can tell two people
  apart, so joining would be a guess).
* With ``FaceConfig.detect_every = k`` the detector runs on every k-th frame read and the k-1
  frames between are bridged like gaps, so ``k - 1 <= max_gap`` is required. When a detection
  misses a track, the detector runs on every following frame until the track is found again or
  ends, so one weak frame costs a short gap, not ``2k - 1`` frames. Frames after a track's last
  detection are never given a box.
* The video's face is chosen by ``FaceConfig.keep_track`` over each track's whole length:
  ``"largest"`` = highest sum of box areas (big *and* long-lived), ``"most_confident"`` = highest
  sum of detection scores. Ties go to the track that started first.

:func:`track_faces` returns boxes only (no pixels), for callers that hold their frames;
:class:`FaceTracker` is the streaming form used by extraction, which crops each frame as soon
as every track has decided about it (at most ``max_gap + 1`` frames are held).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dfdetect.config import FaceConfig
from dfdetect.extraction.faces import FaceBox, FaceCropper

KEEP_RULES = ("largest", "most_confident")


@dataclass
class FaceTrack:
    """One face followed through a clip (N frames, in reading order).

    Attributes:
        track_id: Number of the track within its clip (0, 1, ... in order of appearance).
        frame_index: ``(N,) int64`` frame numbers in the source video.
        boxes: ``(N, 4) float32`` ``(x1, y1, x2, y2)`` in frame pixels.
        scores: ``(N,) float32`` detector scores (interpolated on bridged frames).
        keypoints: ``(N, 6, 2) float32`` BlazeFace keypoints in frame pixels.
        interpolated: ``(N,) bool``; True where the box was bridged, not detected.
        positions: ``(N,) int64`` positions of the frames in the sequence that was read.
    """

    track_id: int
    frame_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    interpolated: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    @property
    def detected(self) -> int:
        """Number of frames whose box comes from a detection."""
        return int((~self.interpolated).sum())

    @property
    def total_area(self) -> float:
        """Sum of box areas over the track (the ``"largest"`` rule)."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return float((wh[:, 0] * wh[:, 1]).sum())

    @property
    def total_score(self) -> float:
        """Sum of detection scores over detected frames (the ``"most_confident"`` rule)."""
        return float(self.scores[~self.interpolated].sum())


@dataclass(frozen=True)
class TrackedFace:
    """A track's box in one frame, as emitted by :meth:`FaceTracker.pop_settled`."""

    track_id: int
    box: np.ndarray  # (4,) float32 frame pixels
    score: float
    keypoints: np.ndarray  # (6, 2) float32 frame pixels
    interpolated: bool


@dataclass(frozen=True)
class SettledFrame:
    """A frame whose faces are final: every track has decided whether it appears there."""

    position: int  # order in which the frame was read (0-based)
    frame_index: int  # frame number in the source video
    frame: Any = field(repr=False)  # the frame pushed: (H, W, 3) uint8 RGB, or extraction's YuvFrame
    faces: list[TrackedFace] = field(default_factory=list)  # by track_id; empty: no face


@dataclass
class TrackingResult:
    """Output of :func:`track_faces`.

    Attributes:
        tracks: Every track, in order of appearance.
        frames_read: Number of frames read.
        read_index: ``(frames_read,) int64`` source frame numbers of the frames read; those not in
            a track's ``frame_index`` are the frames where that face is missing.
    """

    tracks: list[FaceTrack]
    frames_read: int
    read_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(4,)`` ``(x1, y1, x2, y2)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def check_tracking_config(cfg: FaceConfig) -> None:
    """Raise ``ValueError`` (saying what to change) for tracking settings that cannot work."""
    if cfg.keep_track not in KEEP_RULES:
        raise ValueError(f"FaceConfig.keep_track={cfg.keep_track!r}: use one of {list(KEEP_RULES)}")
    if cfg.detect_every < 1 or cfg.max_gap < 0:
        raise ValueError(f"need detect_every >= 1 and max_gap >= 0, got {cfg.detect_every}, {cfg.max_gap}")
    if cfg.detect_every - 1 > cfg.max_gap:
        raise ValueError(
            f"FaceConfig.detect_every={cfg.detect_every} leaves {cfg.detect_every - 1} frames between "
            f"detections but max_gap={cfg.max_gap} bridges at most {cfg.max_gap}: "
            f"use detect_every <= max_gap + 1"
        )


class _Track:
    """A track being built: parallel lists, one entry per frame."""

    def __init__(self, track_id: int):
        self.track_id = track_id
        self.pos: list[int] = []
        self.box: list[np.ndarray] = []
        self.score: list[float] = []
        self.kps: list[np.ndarray] = []
        self.interp: list[bool] = []

    @property
    def last_pos(self) -> int:
        return self.pos[-1]

    def add(self, pos: int, box: np.ndarray, score: float, kps: np.ndarray, interp: bool) -> None:
        self.pos.append(pos)
        self.box.append(box)
        self.score.append(score)
        self.kps.append(kps)
        self.interp.append(interp)

    def bridge_to(self, pos: int, det: FaceBox) -> None:
        """Interpolate the frames strictly between the last detection and ``pos``, then add ``det``."""
        p0, b0, s0, k0 = self.last_pos, self.box[-1], self.score[-1], self.kps[-1]
        b1, k1 = det.as_array(), det.keypoints.astype(np.float32)
        for p in range(p0 + 1, pos):
            t = (p - p0) / (pos - p0)
            self.add(p, (1 - t) * b0 + t * b1, (1 - t) * s0 + t * det.score, (1 - t) * k0 + t * k1, True)
        self.add(pos, b1, det.score, k1, False)

    def freeze(self, index_of: dict[int, int]) -> FaceTrack:
        pos = np.asarray(self.pos, dtype=np.int64)
        return FaceTrack(
            track_id=self.track_id,
            frame_index=np.array([index_of[p] for p in self.pos], dtype=np.int64),
            boxes=np.asarray(self.box, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(self.score, dtype=np.float32),
            keypoints=np.asarray(self.kps, dtype=np.float32).reshape(-1, 6, 2),
            interpolated=np.asarray(self.interp, dtype=bool),
            positions=pos,
        )


class FaceTracker:
    """Streaming IoU tracker: :meth:`push` frames in order, :meth:`pop_settled` finished ones.

    The tracker holds the frames not yet settled (at most ``cfg.max_gap + 1``), so a caller can
    crop each frame when it comes back from :meth:`pop_settled` without keeping a copy.

    Args:
        cropper: The detector (only its ``detect(frame, color)`` is used).
        cfg: ``detect_every``, ``max_gap`` and ``track_iou`` are used here.
        color: Channel order of the frames pushed, ``"rgb"`` or ``"bgr"``.

    Raises:
        ValueError: Inconsistent settings (see :func:`check_tracking_config`).
    """

    def __init__(self, cropper: FaceCropper, cfg: FaceConfig, color: str = "rgb"):
        check_tracking_config(cfg)
        self.cropper, self.cfg, self.color = cropper, cfg, color
        self.frames_read = 0
        self._active: list[_Track] = []
        self._done: list[_Track] = []  # ended tracks
        self._unflushed: list[_Track] = []  # ended tracks with frames not yet popped
        self._next_id = 0
        self._index_of: dict[int, int] = {}  # position -> source frame index
        self._frames: deque[np.ndarray] = deque()  # frames of positions >= self._emitted
        self._detected: dict[int, list[FaceBox]] = {}  # detections of unsettled positions
        self._emitted = 0  # positions < this have been returned by pop_settled
        self._lost = False  # a track was missed at the last detection: detect the next frame too

    def push(self, frame_index: int, frame: np.ndarray) -> None:
        """Feed the next frame read (``(H, W, 3) uint8``); detection runs if it is its turn."""
        pos = self.frames_read
        self.frames_read += 1
        self._index_of[pos] = int(frame_index)
        self._frames.append(frame)
        if self._lost or self.on_schedule(pos):
            self._update(pos, self._detect(pos))

    def on_schedule(self, pos: int) -> bool:
        """Whether :meth:`push` detects the ``pos``-th frame pushed (0-based) whatever happens
        before it: every ``detect_every``-th (others too while a track is lost)."""
        return pos % self.cfg.detect_every == 0

    def _detect(self, pos: int) -> list[FaceBox]:
        if pos not in self._detected:
            frame = self._frames[pos - self._emitted]
            self._detected[pos] = self.cropper.detect(frame, color=self.color)
        return self._detected[pos]

    def _match(self, tracks: Sequence[_Track], detections: list[FaceBox]) -> list[tuple[int, int]]:
        """Greedy IoU assignment, best pairs first: ``[(track i, detection j), ...]``."""
        pairs = sorted(
            ((iou(t.box[-1], d.as_array()), ti, di)
             for ti, t in enumerate(tracks) for di, d in enumerate(detections)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        matches = []
        for overlap, ti, di in pairs:
            if overlap < self.cfg.track_iou:
                break
            if ti not in used_t and di not in used_d:
                used_t.add(ti)
                used_d.add(di)
                matches.append((ti, di))
        return matches

    def _update(self, pos: int, detections: list[FaceBox]) -> None:
        matches = self._match(self._active, detections)
        for ti, di in matches:
            self._active[ti].bridge_to(pos, detections[di])
        matched = {ti for ti, _ in matches}
        used = {di for _, di in matches}
        still, self._lost = [], False
        for ti, track in enumerate(self._active):
            if ti not in matched and self._backfill(track, pos):
                # found on a skipped frame: its newer box may now overlap a detection here
                free = [di for di in range(len(detections)) if di not in used]
                again = self._match([track], [detections[di] for di in free])
                if again:
                    track.bridge_to(pos, detections[free[again[0][1]]])
                    used.add(free[again[0][1]])
                    matched.add(ti)
            if ti not in matched:
                # a missed track is looked for again on the next frame; end it now if even
                # that frame would leave a gap longer than max_gap
                if pos - track.last_pos > self.cfg.max_gap:
                    self._end(track)
                    continue
                self._lost = True
            still.append(track)
        for di, det in enumerate(detections):
            if di not in used:
                track = _Track(self._next_id)
                self._next_id += 1
                track.add(pos, det.as_array(), det.score, det.keypoints.astype(np.float32), False)
                still.append(track)
        self._active = still

    def _backfill(self, track: _Track, pos: int) -> bool:
        """Look for a missed track on the frames skipped since its last detection, newest first.

        With ``detect_every > 1`` this turns a miss into the shortest possible gap. Returns
        whether the track was found.
        """
        for q in range(pos - 1, track.last_pos, -1):
            if q in self._detected:
                continue  # the detector already ran there (and missed this track)
            found = self._match([track], self._detect(q))
            if found:
                track.bridge_to(q, self._detected[q][found[0][1]])
                return True
        return False

    def _end(self, track: _Track) -> None:
        self._done.append(track)
        self._unflushed.append(track)

    def _settled_until(self) -> int:
        """Positions below this are final for every track."""
        if not self._active:
            return self.frames_read
        return min(t.last_pos for t in self._active) + 1

    def pop_settled(self, final: bool = False) -> list[SettledFrame]:
        """Frames (in reading order) whose faces are final, each returned exactly once.

        Args:
            final: The clip has ended: close all tracks and return every remaining frame.
        """
        if final:
            for track in self._active:
                self._end(track)
            self._active = []
        until = self._settled_until()
        if until <= self._emitted:
            return []
        faces: dict[int, list[TrackedFace]] = {p: [] for p in range(self._emitted, until)}
        for track in self._active + self._unflushed:
            for i in range(len(track.pos) - 1, -1, -1):  # only the newest entries can be pending
                p = track.pos[i]
                if p < self._emitted:
                    break
                if p < until:
                    faces[p].append(TrackedFace(track.track_id, track.box[i], track.score[i],
                                                track.kps[i], track.interp[i]))
        out = []
        for p in range(self._emitted, until):
            self._detected.pop(p, None)
            out.append(SettledFrame(p, self._index_of[p], self._frames.popleft(),
                                    sorted(faces[p], key=lambda f: f.track_id)))
        self._emitted = until
        self._unflushed = [t for t in self._unflushed if t.last_pos >= until]
        return out

    def tracks(self) -> list[FaceTrack]:
        """Every track so far (call after ``pop_settled(final=True)``), in order of appearance."""
        return sorted((t.freeze(self._index_of) for t in self._done + self._active),
                      key=lambda t: t.track_id)


def select_track(tracks: Sequence[FaceTrack], rule: str = "largest") -> FaceTrack | None:
    """The track that is the clip's face under ``rule`` (see the module docstring); None if none.

    Raises:
        ValueError: Unknown rule.
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"keep rule {rule!r}: use one of {list(KEEP_RULES)}")
    if not tracks:
        return None
    key = (lambda t: t.total_area) if rule == "largest" else (lambda t: t.total_score)
    best = max(key(t) for t in tracks)
    return min((t for t in tracks if key(t) == best), key=lambda t: t.track_id)


def track_faces(frames: Iterable[tuple[int, np.ndarray]], cropper: FaceCropper,
                cfg: FaceConfig, color: str = "rgb") -> TrackingResult:
    """Detect and track faces through a sequence of frames (boxes only; frames are not kept).

    Args:
        frames: ``(frame_index, frame)`` pairs in reading order, frames ``(H, W, 3) uint8``
            (e.g. :func:`dfdetect.media.video.iter_frames`, or an evenly sampled list).
        cropper: The detector.
        cfg: Tracking settings.
        color: Channel order of the frames, ``"rgb"`` or ``"bgr"``.

    Returns:
        All tracks; pick the clip's face with ``select_track(result.tracks, cfg.keep_track)``.
    """
    tracker = FaceTracker(cropper, cfg, color=color)
    read = []
    for index, frame in frames:
        tracker.push(index, frame)
        read.append(int(index))
        tracker.pop_settled()  # keeps the pending window small; boxes stay in the tracks
    tracker.pop_settled(final=True)
    return TrackingResult(tracker.tracks(), tracker.frames_read, np.asarray(read, dtype=np.int64))
