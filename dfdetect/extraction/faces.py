"""Face detection and cropping: :class:`FaceCropper`.

Two levels, as in facenet-pytorch: :meth:`FaceCropper.detect` returns :class:`FaceBox` es (box,
score and BlazeFace's six keypoints); :meth:`FaceCropper.crop` cuts a square face with a margin
out of a frame and resizes it. Which face of a video to keep is decided by :mod:`dfdetect.extraction.tracking`.

The detector is MediaPipe's BlazeFace, run through LiteRT by :mod:`dfdetect.extraction.blazeface`
(MediaPipe's own pre- and post-processing, reproduced) from a model file shipped inside the package
(``dfdetect/assets``, Apache-2.0, see its README): nothing is ever downloaded.

* ``FaceConfig.model="full"`` (default): the full-range model, for video frames where a face may
  be small (down to roughly 50-70 px in a 1280x720 frame).
* ``FaceConfig.model="short"``: the short-range model, **close-ups only** (selfie-like frames where
  the face fills much of the picture); it misses faces that are small in the frame.

Colour order is never guessed: frames are RGB unless ``color="bgr"`` is passed explicitly.

Speed: BlazeFace looks at a 192x192 input whatever the frame size; the letterbox warp reads only the
pixels it samples, from an RGB frame (:meth:`FaceCropper.detect`) or from a decoded frame's YUV
planes (:meth:`FaceCropper.detect_yuv`, what extraction uses above 1280x720: no full-frame RGB
conversion). Crops are always cut from the full-resolution frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dfdetect.config import FaceConfig
from dfdetect.extraction.blazeface import SPECS, BlazeFace
from dfdetect.media.video import YuvFrame

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

MODEL_FILES = {name: spec.file for name, spec in SPECS.items()}  # full: video frames; short: close-ups
KEYPOINT_NAMES = (
    "right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion",
)
COLORS = ("rgb", "bgr")


class BrokenEnvironmentError(RuntimeError):
    """The Python environment, not a video, is at fault; the message says how to repair it."""


OPENCV_DISTRIBUTIONS = ("opencv-contrib-python", "opencv-python", "opencv-python-headless",
                        "opencv-contrib-python-headless")


def check_opencv() -> None:
    """Raise :class:`BrokenEnvironmentError` if ``cv2`` is not a working OpenCV.

    On Colab several OpenCV distributions are installed into one ``cv2/`` folder; uninstalling
    one of them deletes files the others need, leaving a ``cv2`` without ``resize``. dfdetect works
    with whichever distribution owns ``cv2/``; this check only catches the broken case, once per
    batch, so that it is never recorded as a property of every video.
    """
    import importlib.metadata

    try:
        import cv2
        missing = [n for n in ("__version__", "resize", "cvtColor", "imencode") if not hasattr(cv2, n)]
    except ImportError as err:
        missing = [f"import ({err})"]
    if not missing:
        return
    installed = []
    for dist in OPENCV_DISTRIBUTIONS:
        try:
            installed.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    fix = installed[0] if installed else "opencv-contrib-python"
    raise BrokenEnvironmentError(
        f"OpenCV (cv2) is broken in this environment: it lacks {', '.join(missing)} (installed: "
        f"{', '.join(installed) or 'none'}). Repair it with `pip install --force-reinstall --no-deps "
        f"{fix}` and restart the runtime; no video was marked.")


class FaceModelError(RuntimeError):
    """The detector model cannot be loaded; the message names the file and what to do."""


@dataclass(frozen=True)
class FaceBox:
    """One detected face, in frame pixels.

    Attributes:
        x1: Left edge.
        y1: Top edge.
        x2: Right edge (exclusive).
        y2: Bottom edge (exclusive).
        score: Detector confidence in ``[0, 1]``.
        keypoints: ``(6, 2) float32`` (x, y) in MediaPipe order: right eye, left eye, nose tip,
            mouth centre, right ear tragion, left ear tragion (see :data:`KEYPOINT_NAMES`).
    """

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    keypoints: np.ndarray = field(compare=False, repr=False)

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        """Box centre ``(x, y)``."""
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def as_array(self) -> np.ndarray:
        """The box as ``(4,) float32`` ``(x1, y1, x2, y2)``."""
        return np.array([self.x1, self.y1, self.x2, self.y2], dtype=np.float32)


def _check_frame(frame: np.ndarray, color: str) -> None:
    if color not in COLORS:
        raise ValueError(f"color={color!r}: say which channel order the frame has, 'rgb' or 'bgr'")
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"expected a (H, W, 3) uint8 frame, got {type(frame).__name__} {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}; convert with .astype(np.uint8)")


def crop_region(box: FaceBox | np.ndarray, frame_shape: tuple[int, ...], margin: float
                ) -> tuple[int, int, int, int]:
    """The square a face is cut from: the box's longer side plus ``margin`` of it on every side.

    The square stays centred on the box, so near the frame edge it may extend past the frame
    (:meth:`FaceCropper.crop` pads that part with black). Its side is capped at the frame's
    longer side.

    Args:
        box: A :class:`FaceBox` or ``(4,)`` array ``(x1, y1, x2, y2)``.
        frame_shape: ``(H, W, ...)`` of the frame.
        margin: Border on each side as a fraction of the box's longer side (0.3 = 30%).

    Returns:
        ``(x1, y1, x2, y2)`` integers with ``x2 - x1 == y2 - y1 >= 2``.
    """
    x1, y1, x2, y2 = (box.as_array() if isinstance(box, FaceBox) else np.asarray(box, float))[:4]
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    side = math.floor(min(max(side, 2.0), max(frame_shape[0], frame_shape[1])) + 0.5)
    left = math.floor((x1 + x2) / 2 - side / 2 + 0.5)
    top = math.floor((y1 + y2) / 2 - side / 2 + 0.5)
    return left, top, left + side, top + side


def cut_square(frame: np.ndarray, region: tuple[int, int, int, int], size: int, fill: int = 0
               ) -> np.ndarray:
    """Cut ``region`` out of ``frame`` (``fill`` outside the frame) and resize it to ``size``.

    Only the region's pixels are touched, so this is cheap even on 4K frames.

    Args:
        frame: ``(H, W, C)`` or ``(H, W)`` (one plane of a YUV frame) ``uint8``.
        region: ``(x1, y1, x2, y2)`` square, may pass the frame's edges.
        size: Output side.
        fill: Value of the part outside the frame (0: black RGB; 16 and 128 for video-range YUV).

    Returns:
        ``(size, size, C)`` or ``(size, size)`` ``uint8`` in the frame's channel order.
    """
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = region
    side = x2 - x1
    inside = frame[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
    if inside.shape[:2] != (side, side):  # part of the square lies outside the frame
        square = np.full((side, side, *frame.shape[2:]), fill, dtype=np.uint8)
        if inside.size:
            oy, ox = max(y1, 0) - y1, max(x1, 0) - x1
            square[oy:oy + inside.shape[0], ox:ox + inside.shape[1]] = inside
        inside = square
    if side <= size or side == 2 * size:
        interp = cv2.INTER_LINEAR if side <= size else cv2.INTER_AREA
        return cv2.resize(inside, (size, size), interpolation=interp)
    # Shrinking: bilinear to twice the size, then an exact 2x2 average. Within ~0.5 grey level
    # of INTER_AREA (no aliasing) at a fixed cost, where INTER_AREA at a non-integer ratio
    # costs ~10x more on big faces.
    double = cv2.resize(inside, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(double, (size, size), interpolation=cv2.INTER_AREA)


def to_crop_pixels(points: np.ndarray, region: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Map frame-pixel points ``(..., 2)`` into the pixels of a ``size`` crop of ``region``."""
    x1, y1, x2, _ = region
    scale = size / (x2 - x1)
    out = (np.asarray(points, dtype=np.float32) - np.array([x1, y1], np.float32)) * scale
    return out.astype(np.float32)


def check_face_config(cfg: FaceConfig) -> None:
    """Raise ``ValueError`` (saying what to change) for detector/crop settings that cannot work."""
    if cfg.model not in MODEL_FILES:
        raise ValueError(f"FaceConfig.model={cfg.model!r}: use one of {sorted(MODEL_FILES)}")
    if cfg.size <= 0 or cfg.size % 2:
        raise ValueError(f"FaceConfig.size={cfg.size}: use a positive even size (H.264 needs it)")
    if cfg.margin < 0 or not 0 <= cfg.min_score <= 1:
        raise ValueError(f"need margin >= 0 and 0 <= min_score <= 1, got {cfg.margin}, {cfg.min_score}")


class FaceCropper:
    """Find faces with BlazeFace and cut square face crops.

    Args:
        cfg: ``model`` ("full"/"short"), ``min_score``, ``margin`` and ``size`` are used here
            (default ``FaceConfig()``).

    Raises:
        ValueError: Unknown model name or an odd/non-positive crop size.
        FaceModelError: The model file is missing from the package or the runtime rejects it.

    Threads may detect at once: each gets an interpreter of its own (the first is loaded here,
    others when threads overlap), kept for reuse until :meth:`close`.

    Example:
        >>> with FaceCropper() as cropper:  # doctest: +SKIP
        ...     boxes = cropper.detect(frame)            # frame: (H, W, 3) uint8 RGB
        ...     face = cropper.crop(frame, boxes[0])     # (224, 224, 3) uint8 RGB
    """

    def __init__(self, cfg: FaceConfig | None = None):
        cfg = cfg or FaceConfig()
        check_face_config(cfg)
        self.cfg = cfg
        self._idle: list[BlazeFace] = [self._load(cfg)]  # loaded now: a bad install fails here
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _load(cfg: FaceConfig) -> BlazeFace:
        name = MODEL_FILES[cfg.model]
        try:
            data = resources.files("dfdetect").joinpath("assets", name).read_bytes()
        except OSError as err:
            raise FaceModelError(
                f"dfdetect/assets/{name}: model file missing ({err}); reinstall dfdetect "
                "(`pip install -e .` from the repository, which ships the models)"
            ) from None
        try:
            return BlazeFace(data, SPECS[cfg.model], cfg.min_score)
        except ImportError as err:
            raise FaceModelError(f"the LiteRT runtime is missing ({err}); "
                                 "`pip install ai-edge-litert` (a dfdetect dependency)") from None
        except (RuntimeError, ValueError) as err:  # LiteRT's errors carry C++ text
            raise FaceModelError(
                f"dfdetect/assets/{name}: LiteRT could not load the model ({err}); reinstall "
                "dfdetect, whose model files may be damaged") from None

    def _faces(self, found: list[tuple[np.ndarray, np.ndarray, float]]) -> list[FaceBox]:
        return [FaceBox(*(float(c) for c in box), score, kps.astype(np.float32))
                for box, kps, score in found]

    @contextlib.contextmanager
    def _model(self) -> Iterator[BlazeFace]:
        """An interpreter of its own for the calling thread: an idle one, or a new one if all are busy.

        A LiteRT interpreter serves one thread at a time; threads detecting side by side (extraction's
        detect-ahead pool) each get one, and it is kept for the next caller (one per thread per batch).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("this FaceCropper was closed; make a new one")
            model = self._idle.pop() if self._idle else None
        if model is None:
            model = self._load(self.cfg)
        try:
            yield model
        finally:
            with self._lock:
                if not self._closed:
                    self._idle.append(model)

    def detect(self, frame: np.ndarray, color: str = "rgb") -> list[FaceBox]:
        """Find the faces in one frame.

        Args:
            frame: ``(H, W, 3) uint8`` image.
            color: Its channel order, ``"rgb"`` or ``"bgr"`` (OpenCV images); never guessed.

        Returns:
            Faces with ``score >= cfg.min_score``, highest score first (empty when none), in
            float frame pixels.
        """
        _check_frame(frame, color)
        with self._model() as model:
            image, to_input = model.input_rgb(frame)
            if color == "bgr":  # only the model's input is turned around, not the frame
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            return self._faces(model.run(image, to_input))

    def detect_yuv(self, frame: YuvFrame) -> list[FaceBox]:
        """Find the faces in a decoded frame's I420 planes, never converting the whole frame.

        Args:
            frame: The planes (:func:`dfdetect.media.video.to_yuv`), ``(H, W)`` luma.

        Returns:
            As :meth:`detect`, in pixels of the ``(H, W)`` frame.
        """
        if frame.rgb is not None:  # an RGB source (a GIF), or converted anyway: the exact input
            return self.detect(frame.rgb)
        with self._model() as model:
            return self._faces(model.run(*model.input_yuv(frame.y, frame.u, frame.v, frame.full_range,
                                                          frame.colorspace)))

    def crop_region(self, box: FaceBox | np.ndarray, frame_shape: tuple[int, ...]
                    ) -> tuple[int, int, int, int]:
        """Square ``(x1, y1, x2, y2)`` around ``box`` with ``cfg.margin`` (see :func:`crop_region`)."""
        return crop_region(box, frame_shape, self.cfg.margin)

    def crop(self, frame: np.ndarray, box: FaceBox | np.ndarray, color: str = "rgb") -> np.ndarray:
        """Cut the face in ``box`` out of ``frame`` as a square of side ``cfg.size``.

        Args:
            frame: ``(H, W, 3) uint8`` image.
            box: A :class:`FaceBox` or ``(4,)`` ``(x1, y1, x2, y2)`` in frame pixels.
            color: The frame's channel order; the crop is always returned **RGB**.

        Returns:
            ``(size, size, 3) uint8`` RGB; the part of the square outside the frame is black.
        """
        _check_frame(frame, color)
        face = cut_square(frame, self.crop_region(box, frame.shape), self.cfg.size)
        return cv2.cvtColor(face, cv2.COLOR_BGR2RGB) if color == "bgr" else face

    def close(self) -> None:
        """Release the detector (also done by ``with FaceCropper() as c:``)."""
        with self._lock:
            self._closed, self._idle = True, []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
