"""Reading and writing videos: probing, uniform frame indices, streaming reads, H.264 writes.

Decoding and encoding go through PyAV (FFmpeg), which reads every common container and
writes H.264 mp4 files that play anywhere (OpenCV's wheels cannot write H.264). Frames are
numpy ``uint8`` arrays of shape ``(H, W, 3)`` in **RGB** order everywhere in dfdetect.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from dfdetect.media.files import atomic_path, permission_denied

SEEK_GAP = 48  # frames between wanted frames above which seeking beats decoding straight through


class VideoError(RuntimeError):
    """A video cannot be opened or decoded; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video without decoding it.

    Attributes:
        path: The file.
        frames: Number of frames (from the container, else duration x fps, else counted packets).
        fps: Average frame rate.
        width: Frame width in pixels.
        height: Frame height in pixels.
    """

    path: Path
    frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.fps if self.fps else 0.0


def _unreadable(path: Path, err: BaseException | str) -> VideoError:
    return VideoError(
        f"{path}: cannot be read as a video ({err}). Check that the file is a complete video "
        "(re-download or re-encode it, e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`)."
    )


class VideoAccessError(VideoError):
    """The file cannot be opened at all (permissions, a symbolic link loop or a dangling link).

    Not a property of the video's content: fixing the file system makes it readable, so a batch
    records it as an infrastructure failure that a rerun retries.
    """


def check_readable(path: Path) -> None:
    """Raise :class:`VideoError` / :class:`VideoAccessError` unless ``path`` is a file we may read.

    The message names the real cause: a link loop or a dangling link is not "no such file", and
    a permission problem is not a broken video.
    """
    try:
        st = path.stat()  # follows symbolic links
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise VideoAccessError(f"{path}: a symbolic link loop (following it leads back to itself); "
                                   "point the link at the video or remove it") from None
        if path.is_symlink():
            raise VideoAccessError(f"{path}: a symbolic link to {os.readlink(path)}, which does not "
                                   "exist; fix or remove the link") from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise VideoAccessError(permission_denied(path)) from None
        raise VideoError(f"{path}: no such file; check the path (and that Drive is mounted on Colab)"
                         ) from None
    if not os.path.isfile(path):
        raise VideoError(f"{path}: a folder or special file, not a video; give a video file")
    try:
        with open(path, "rb") as fh:  # PermissionError here; FFmpeg would call it a bad file
            fh.read(1)
    except PermissionError:
        raise VideoAccessError(permission_denied(path)) from None
    if st.st_size == 0:
        raise _unreadable(path, "the file is empty (0 bytes)")


@contextlib.contextmanager
def _open(path: Path, threads: int = 0
          ) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    check_readable(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise _unreadable(path, err) from None
    try:
        if not container.streams.video:
            raise _unreadable(path, "it has no video stream")
        stream = container.streams.video[0]
        if threads:  # a fixed number of frame threads (costs less CPU than FFmpeg's choice)
            stream.thread_type, stream.codec_context.thread_count = "FRAME", threads
        else:
            stream.thread_type = "AUTO"  # frame + slice threads: 2-3x faster on 1080p H.264
        yield container, stream
    finally:
        container.close()


def rotation_of(frame: av.VideoFrame) -> int:
    """Counter-clockwise degrees (0, 90, 180 or 270) that turn a decoded frame upright.

    Phones store portrait videos sideways with a display matrix; PyAV reports it as
    ``frame.rotation`` (e.g. -90: turn 90 degrees clockwise to display).
    """
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4 * 90


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` (H, W, ...) turned ``rotation`` degrees counter-clockwise (a copy only if turned)."""
    k = rotation // 90 % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def probe(path: str | Path) -> VideoInfo:
    """Read a video's frame count, rate and size without decoding frames.

    Raises:
        VideoError: Missing, empty, corrupt or non-video file.
    """
    path = Path(path)
    with _open(path) as (container, stream):
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        frames = int(stream.frames or 0)
        if frames <= 0 and stream.duration and stream.time_base:
            frames = round(float(stream.duration * stream.time_base) * fps)
        if frames <= 0:
            try:
                frames = sum(1 for p in container.demux(stream) if p.size)
            except av.error.FFmpegError as err:
                raise _unreadable(path, err) from None
        width, height = stream.codec_context.width, stream.codec_context.height
        if frames > 0 and width > 0 and _stream_rotation(container, stream) % 180:
            width, height = height, width  # the size frames have once turned upright
    if frames <= 0 or width <= 0:
        raise _unreadable(path, "it contains no frames")
    return VideoInfo(path=path, frames=frames, fps=fps, width=width, height=height)


def _stream_rotation(container: av.container.InputContainer,
                     stream: av.video.stream.VideoStream) -> int:
    """The display rotation of a stream, from its first decodable frame (0 when none decodes).

    PyAV has no getter for a stream's display matrix; frames carry it.
    """
    try:
        container.seek(stream.start_time or 0, stream=stream, backward=True)  # after a demux pass
        for frame in container.decode(stream):
            return rotation_of(frame)
    except av.error.FFmpegError:
        pass
    return 0


def uniform_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices evenly spaced over ``[0, num_frames)`` (centres of equal segments).

    A video shorter than ``count`` yields repeated indices (each frame used about
    ``count / num_frames`` times, in order), so a clip always has ``count`` frames.

    Returns:
        ``(count,) int64`` non-decreasing indices.
    """
    if num_frames <= 0 or count <= 0:
        raise ValueError(f"need num_frames > 0 and count > 0, got {num_frames}, {count}")
    return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)


def _presentation_pts(path: Path) -> list[int]:
    """Sorted timestamps of every frame of the video (a demux pass: reads packets, decodes nothing).

    Frame ``k`` of the video is the one with the ``k``-th timestamp, whatever the frame rate does.
    """
    with _open(path) as (container, stream):
        try:
            return sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        except av.error.FFmpegError:
            return []


def decode_frames(path: str | Path, indices: Sequence[int] | None = None, max_frames: int = 0,
                  threads: int = 0) -> Iterator[tuple[int, av.VideoFrame]]:
    """Stream the decoded frames of a video as PyAV frames (no pixel conversion, no rotation).

    Frame numbers count frames in presentation order (the decoder's output order), never derived
    from timestamps and a nominal rate, so a variable-frame-rate video numbers its frames
    0, 1, 2, ... without repeats or holes. Jumps over long stretches (``indices`` far apart) seek
    to the exact timestamp of the wanted frame, found by one demux pass.

    Args:
        path: Video file.
        indices: Frame numbers to return (any order, duplicates allowed; returned sorted and
            de-duplicated). ``None`` returns every frame.
        max_frames: With ``indices=None``, stop after this many frames (0 = no limit).
        threads: Decoder threads (frame threads); 0 lets FFmpeg choose (frame and slice threads,
            about one per core: fastest alone, but ~30% more CPU than 2 frame threads at 1080p).

    Yields:
        ``(index, frame)``; turn ``frame`` into pixels with :func:`to_rgb` (applies the rotation).

    Raises:
        VideoError: The file cannot be opened or its first frame cannot be decoded.
    """
    path = Path(path)
    wanted = None if indices is None else sorted({int(i) for i in indices})
    with _open(path, threads) as (container, stream):
        index = -1  # presentation-order number of the last frame decoded (None: after a seek)
        pts_list: list[int] | None = None  # every frame's timestamp, sorted (the first seek reads it)
        n_yielded, pos, seeked_for = 0, 0, -1  # pos: position in `wanted`
        try:
            decoder = container.decode(stream)
            while True:
                if wanted is not None:
                    if pos >= len(wanted):
                        return
                    if index is not None and wanted[pos] - index > SEEK_GAP and seeked_for != wanted[pos]:
                        seeked_for = wanted[pos]  # never seek twice for one target
                        pts_list = _presentation_pts(path) if pts_list is None else pts_list
                        if wanted[pos] >= len(pts_list):
                            return
                        container.seek(pts_list[wanted[pos]], stream=stream, backward=True,
                                       any_frame=False)
                        decoder = container.decode(stream)
                        index = None
                try:
                    frame = next(decoder)
                except StopIteration:
                    return
                if index is None:  # the first frame after a seek: find it among the timestamps
                    k = bisect.bisect_left(pts_list, frame.pts) if frame.pts is not None else -1
                    index = k if 0 <= k < len(pts_list) and pts_list[k] == frame.pts else seeked_for
                else:
                    index += 1
                if wanted is None:
                    yield index, frame
                    n_yielded += 1
                    if max_frames and n_yielded >= max_frames:
                        return
                    continue
                while pos < len(wanted) and wanted[pos] < index:
                    pos += 1  # not in the stream (a damaged stretch): skip it
                if pos < len(wanted) and wanted[pos] == index:
                    yield index, frame
                    n_yielded += 1
                    pos += 1
        except av.error.FFmpegError as err:
            if n_yielded == 0 and (index is None or index < 0):
                raise _unreadable(path, err) from None
            return  # a truncated tail: keep what decoded


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an upright RGB ``(H, W, 3) uint8`` array (display rotation applied)."""
    return upright(frame.to_ndarray(format="rgb24"), rotation_of(frame))


@dataclass(frozen=True)
class YuvFrame:
    """A decoded frame as its three I420 planes (4:2:0, 8-bit), upright.

    What face extraction works on: the detector samples 192x192 pixels of it and crops are cut
    from the planes, so the whole frame is never converted to RGB.

    Attributes:
        y: ``(H, W) uint8`` luma.
        u: ``(ceil(H/2), ceil(W/2)) uint8`` blue-difference chroma.
        v: Red-difference chroma, the shape of ``u``.
        full_range: Values span 0-255 (JPEG range, common in phone videos), not 16-235/240.
        colorspace: FFmpeg's matrix tag (1 BT.709, 5/6 BT.601, 2 unspecified, read as BT.601).
        rgb: ``(H, W, 3)`` RGB (FFmpeg's conversion) for sources stored as RGB (GIFs, RGB
            videos), whose colour would lose detail in 4:2:0 planes, and for frames converted
            anyway (``with_rgb``); else ``None``.
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    full_range: bool = False
    colorspace: int = 2
    rgb: np.ndarray | None = None

    def video_range(self) -> YuvFrame:
        """The same frame in video range (16-235 luma, 16-240 chroma), as H.264 files carry it."""
        if not self.full_range:
            return self
        return YuvFrame(cv2.LUT(self.y, LUMA_TO_VIDEO), cv2.LUT(self.u, CHROMA_TO_VIDEO),
                        cv2.LUT(self.v, CHROMA_TO_VIDEO), False, self.colorspace)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``: the shape of the same frame as RGB."""
        return (*self.y.shape, 3)


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A view of one plane's pixels (no copy; it keeps the decoded frame alive)."""
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    return rows.reshape(plane.height, plane.line_size)[:, :plane.width]


LUMA_TO_VIDEO = np.round(16 + np.arange(256) * 219 / 255).astype(np.uint8)  # full -> video range
CHROMA_TO_VIDEO = np.round(128 + (np.arange(256) - 128) * 224 / 255).clip(0, 255).astype(np.uint8)


def to_yuv(frame: av.VideoFrame, with_rgb: bool = False) -> YuvFrame:
    """A decoded frame as upright I420 planes; converted by FFmpeg only if not 4:2:0 8-bit already.

    The range and matrix tags are kept (FFmpeg's RGB conversion, :func:`to_rgb`, reads them too):
    ``yuvj420p`` and frames tagged full range are full range; RGB and palette sources (GIFs)
    become video-range BT.601 and keep their RGB frame, as does every frame when ``with_rgb``.
    """
    name = frame.format.name
    yuv = name.startswith("yuv")
    full = yuv and (name.startswith("yuvj") or getattr(frame, "color_range", 0) == 2)
    colorspace = int(getattr(frame, "colorspace", 2) or 2) if yuv else 2
    rotation = rotation_of(frame)
    rgb = to_rgb(frame) if with_rgb or not yuv else None
    if name not in ("yuv420p", "yuvj420p"):  # 10-bit, 4:2:2, 4:4:4, RGB: to 4:2:0, range kept
        frame = frame.reformat(format="yuvj420p" if full else "yuv420p")
    return YuvFrame(*(upright(_plane(p), rotation) for p in frame.planes), full, colorspace, rgb)


def iter_frames(
    path: str | Path, indices: Sequence[int] | None = None, max_frames: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream frames of a video without holding more than one in memory.

    Frames are numbered in presentation order (see :func:`decode_frames`) and turned upright
    when the file carries a display rotation (phone videos).

    Args:
        path: Video file.
        indices: Frame indices to return (any order, duplicates allowed; returned sorted and
            de-duplicated). ``None`` returns every frame.
        max_frames: With ``indices=None``, stop after this many frames (0 = no limit).

    Yields:
        ``(index, frame)`` with ``frame`` an RGB ``(H, W, 3) uint8`` array.

    Raises:
        VideoError: The file cannot be opened or its first frame cannot be decoded.
    """
    return _converted(decode_frames(path, indices, max_frames), to_rgb)


def iter_yuv_frames(
    path: str | Path, indices: Sequence[int] | None = None, max_frames: int = 0,
    rgb_up_to: int = 0, threads: int = 0,
) -> Iterator[tuple[int, YuvFrame]]:
    """:func:`iter_frames`, with each frame as its I420 planes (:class:`YuvFrame`), not RGB.

    Frames of at most ``rgb_up_to`` pixels also carry their RGB conversion (``YuvFrame.rgb``);
    ``threads`` as in :func:`decode_frames`.
    """
    return _converted(decode_frames(path, indices, max_frames, threads),
                      lambda f: to_yuv(f, with_rgb=f.width * f.height <= rgb_up_to))


def _converted(frames: Iterator[tuple[int, av.VideoFrame]], convert) -> Iterator[tuple[int, object]]:
    try:
        for index, frame in frames:
            yield index, convert(frame)
    finally:
        frames.close()


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Read the given frames (in the given order, duplicates allowed).

    Indices past the end of the video are clamped to the last decoded frame.

    Returns:
        ``(len(indices), H, W, 3) uint8`` RGB array.

    Raises:
        VideoError: Unreadable file, or no frame could be decoded.
    """
    got = dict(iter_frames(path, indices))
    if not got:
        raise _unreadable(Path(path), "no frame could be decoded")
    keys = sorted(got)
    out = []
    for i in indices:
        i = int(i)
        if i not in got:
            i = keys[min(int(np.searchsorted(keys, i)), len(keys) - 1)]
        out.append(got[i])
    return np.stack(out)


def read_all_frames(path: str | Path, max_frames: int = 0) -> np.ndarray:
    """Decode a (short) video entirely: ``(N, H, W, 3) uint8`` RGB. For face videos, not sources."""
    frames = [f for _, f in iter_frames(path, max_frames=max_frames)]
    if not frames:
        raise _unreadable(Path(path), "no frame could be decoded")
    return np.stack(frames)


class VideoWriter:
    """Write RGB frames to an H.264 mp4, atomically: the file appears only when closed cleanly.

    Example:
        >>> with VideoWriter("faces/v1.mp4", fps=25) as w:  # doctest: +SKIP
        ...     w.write(face)  # (H, W, 3) uint8 RGB, same size every frame
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 18, preset: str = "veryfast",
                 deterministic: bool = False, threads: int = 0):
        self.path = Path(path)
        self.deterministic = deterministic
        self.threads = threads  # x264 threads (0 = its default); 1 when other threads do other work
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.frames = 0
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._container = None
        self._stream = None

    def __enter__(self) -> VideoWriter:  # noqa: PYI034 (Self needs Python 3.11)
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3) uint8`` RGB frame (H and W even for H.264 4:2:0)."""
        self._open_stream(*frame.shape[:2])
        if self.deterministic or not self.threads or frame.shape[0] % 2 or frame.shape[1] % 2:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        else:  # face videos (threads given): OpenCV's RGB -> I420 (SIMD) instead of swscale's
            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420),
                                            format="yuv420p")
        self._encode(vf)

    def write_yuv(self, frame: YuvFrame) -> None:
        """Append one video-range I420 frame as it is (no RGB conversion; H and W even).

        The file is tagged with the first frame's matrix (``colorspace``), so that decoding it
        gives the colours of the source the planes were cut from.
        """
        h, w = frame.y.shape
        if h % 2 or w % 2 or frame.u.shape != (h // 2, w // 2) or frame.v.shape != frame.u.shape:
            raise ValueError(f"{self.path}: need even I420 planes, got {frame.y.shape}, "
                             f"{frame.u.shape}, {frame.v.shape}")
        if frame.full_range:
            raise ValueError(f"{self.path}: convert full-range planes with video_range() first")
        if self._stream is None:
            self._open_stream(h, w)
            self._stream.codec_context.colorspace = frame.colorspace
        i420 = np.concatenate([frame.y.ravel(), frame.u.ravel(), frame.v.ravel()])
        self._encode(av.VideoFrame.from_ndarray(i420.reshape(h * 3 // 2, w), format="yuv420p"))

    def _open_stream(self, h: int, w: int) -> None:
        if self._stream is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": self.preset}
            if self.deterministic:  # x264's SIMD code gives run-to-run differences at some sizes
                self._stream.options = {**self._stream.options, "x264-params": "asm=0:threads=1"}
            elif self.threads:
                self._stream.options = {**self._stream.options, "threads": str(self.threads)}

    def _encode(self, vf: av.VideoFrame) -> None:
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        finally:
            if exc_type is None and self.frames == 0:
                exc_type, exc = ValueError, ValueError(f"{self.path}: no frames written")
                self._atomic.__exit__(exc_type, exc, None)
                raise exc
            self._atomic.__exit__(exc_type, exc, tb)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18,
                deterministic: bool = False) -> int:
    """Write RGB frames to an H.264 mp4 atomically; return the number written.

    ``deterministic``: the same frames always give the same file (x264 without SIMD, one
    thread: several times slower; for small clips whose content must be reproducible).
    """
    with VideoWriter(path, fps=fps, crf=crf, deterministic=deterministic) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames
