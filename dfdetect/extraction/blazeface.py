"""BlazeFace run directly through LiteRT: the detector of MediaPipe's ``FaceDetector``, without MediaPipe.

:class:`BlazeFace` loads one of the shipped ``.tflite`` models and reproduces what MediaPipe's
face detection graph does around it, so its faces are MediaPipe's faces (tested against the
Tasks API on real video, ``tests/test_blazeface.py``):

1. **Letterbox** (:func:`letterbox_matrix`): the frame is scaled so its longer side is the model's
   input side (192 px for the full-range model, 128 for the short-range one), centred, padded
   with black, by a bilinear perspective warp that only reads the pixels it samples
   (``cv2.warpPerspective``, as MediaPipe's CPU image-to-tensor step), then mapped to ``[-1, 1]``.
2. **Decode**: one SSD anchor per cell of the model's grid (48x48 at stride 4, or 16x16 and 8x8
   with two and six anchors), 16 numbers per anchor (box centre and size, six keypoints) in
   input pixels, and a logit (clipped to +-100, then sigmoid).
3. **Weighted non-maximum suppression** (IoU > 0.3 merges, box and keypoints averaged with the
   scores as weights, the best score kept), then the letterbox is undone.

Why not MediaPipe's Tasks API: per 1080p frame it costs 5.6-6.7 ms on one core (it copies the
whole frame into an ``mp.Image`` and hands back boxes rounded to whole pixels of the image it was
given), where the model itself takes 3.6 ms; here the warp reads 192x192 samples of the frame
(or of its YUV planes, :meth:`BlazeFace.input_yuv`, so a decoded video frame never needs a full
RGB conversion) and boxes stay in float frame pixels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from dfdetect.media.video import CHROMA_TO_VIDEO, LUMA_TO_VIDEO


@dataclass(frozen=True)
class ModelSpec:
    """How one BlazeFace model is fed and decoded (MediaPipe's graph options for it)."""

    file: str  # in dfdetect/assets
    side: int  # input side, pixels
    strides: tuple[int, ...]  # SSD layers (equal strides share a grid)
    interpolated: bool  # a second anchor per layer and cell (short-range) or not (full-range)


SPECS = {
    "full": ModelSpec("face_detection_full_range_sparse.tflite", 192, (4,), False),
    "short": ModelSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True),
}
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold


def _yuv_to_rgb(kr: float, kb: float) -> np.ndarray:
    """Video-range (Y 16-235, U/V 16-240) YUV -> RGB of the matrix with luma weights ``kr``, ``kb``,
    as a ``(3, 4)`` matrix for ``cv2.transform``."""
    ys, cs = 255 / 219, 255 / 224
    rv, bu = 2 * (1 - kr) * cs, 2 * (1 - kb) * cs
    gu, gv = -bu * kb / (1 - kr - kb), -rv * kr / (1 - kr - kb)
    m = np.array([[ys, 0.0, rv], [ys, gu, gv], [ys, bu, 0.0]])
    return np.concatenate([m, -(m @ [16.0, 128.0, 128.0])[:, None]], axis=1).astype(np.float32)


# by FFmpeg's colorspace tag, as its RGB conversion reads it: 1 BT.709, 9/10 BT.2020, else BT.601
YUV_TO_RGB = {1: _yuv_to_rgb(0.2126, 0.0722), 9: _yuv_to_rgb(0.2627, 0.0593),
              10: _yuv_to_rgb(0.2627, 0.0593)}
BT601 = _yuv_to_rgb(0.299, 0.114)
FULL_TO_VIDEO = np.stack([LUMA_TO_VIDEO, CHROMA_TO_VIDEO, CHROMA_TO_VIDEO], 1).reshape(256, 1, 3)
SCORE_CLIP = 100.0  # logits are clipped to +-this before the sigmoid
NUM_KEYPOINTS = 6


def anchor_centres(spec: ModelSpec) -> np.ndarray:
    """SSD anchor centres ``(A, 2) float32`` (x, y), normalised to the input (fixed size 1x1)."""
    centres = []
    i = 0
    while i < len(spec.strides):
        stride = spec.strides[i]
        layers = 0
        while i < len(spec.strides) and spec.strides[i] == stride:  # equal strides: one grid
            layers += 1
            i += 1
        per_cell = layers * (2 if spec.interpolated else 1)
        n = -(-spec.side // stride)
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def letterbox_matrix(height: int, width: int, side: int) -> np.ndarray:
    """``(3, 3) float64`` map from frame pixels to the ``side x side`` letterboxed input.

    The longer frame side becomes ``side``; the other is centred (black bands on both sides).
    """
    longest = max(height, width)
    scale = side / longest
    return np.array([[scale, 0.0, (longest - width) / 2 * scale],
                     [0.0, scale, (longest - height) / 2 * scale],
                     [0.0, 0.0, 1.0]])


def whole_pixels(box: np.ndarray) -> np.ndarray:
    """A ``(4,)`` box as MediaPipe's Tasks API reports it: origin and size truncated to whole pixels.

    For comparing our float boxes with MediaPipe's like with like (a 1-pixel rounding alone is
    3% IoU on a 60 px face).
    """
    x1, y1 = np.floor(box[:2])
    return np.array([x1, y1, x1 + np.floor(box[2] - box[0]), y1 + np.floor(box[3] - box[1])])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box against ``(N, 4)`` boxes, all ``(x1, y1, x2, y2)``."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``(x1, y1, x2, y2)``.
        points: ``(N, K, 2)`` keypoints.
        scores: ``(N,)`` in ``[0, 1]``.
        iou: Overlap above which a box joins the best remaining one.

    Returns:
        ``(box (4,), keypoints (K, 2), score)`` per face, best first: the score-weighted mean of
        each group's boxes and keypoints, with the group's best score.
    """
    order = np.argsort(-scores, kind="stable")
    faces = []
    while order.size:
        best = order[0]
        joined = _iou(boxes[best], boxes[order]) > iou
        joined[0] = True
        group = order[joined]
        weights = scores[group][:, None]
        total = float(weights.sum())
        faces.append(((boxes[group] * weights).sum(0) / total,
                      (points[group] * weights[:, :, None]).sum(0) / total, float(scores[best])))
        order = order[~joined]
    return faces


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ logging (LiteRT's delegate banner) while the block runs."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class BlazeFace:
    """One BlazeFace model on one LiteRT interpreter (one thread; not shared between threads).

    Args:
        model: The model's bytes (a shipped ``.tflite`` file).
        spec: Its input side and anchors (:data:`SPECS`).
        min_score: Faces scoring below this are dropped.

    Raises:
        ValueError: The model's tensors are not BlazeFace's for ``spec`` (another file).
    """

    def __init__(self, model: bytes, spec: ModelSpec, min_score: float = 0.5):
        from ai_edge_litert.interpreter import Interpreter  # the runtime: only when detecting

        with quiet_native_stderr():
            self._net = Interpreter(model_content=model, num_threads=1)
            self._net.allocate_tensors()
        self.spec, self.min_score = spec, min_score
        self._anchors = anchor_centres(spec)
        (inp,) = self._net.get_input_details()
        outs = sorted(self._net.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        shape = (1, spec.side, spec.side, 3)
        if (tuple(inp["shape"]) != shape or len(outs) != 2
                or tuple(outs[0]["shape"]) != (1, len(self._anchors), 16)
                or tuple(outs[1]["shape"]) != (1, len(self._anchors), 1)):
            raise ValueError(f"not a BlazeFace model with a {shape} input and "
                             f"{len(self._anchors)} anchors")
        self._input = inp["index"]
        self._regressors, self._logits = self._net.tensor(outs[0]["index"]), self._net.tensor(outs[1]["index"])
        self._buffer = np.empty(shape, np.float32)
        # a score >= min_score is a logit >= this (the sigmoid is only taken of those)
        self._min_logit = (-np.inf if min_score <= 0 else np.inf if min_score >= 1
                           else float(np.log(min_score / (1 - min_score))))

    def input_rgb(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's input made from an RGB ``(H, W, 3) uint8`` frame, and the letterbox map."""
        m = letterbox_matrix(*frame.shape[:2], self.spec.side)
        side = self.spec.side
        return cv2.warpPerspective(frame, m, (side, side), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0), m

    def input_yuv(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool = False,
                  colorspace: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """The model's input made from an I420 frame's planes (luma ``(H, W)``, chroma ``(H/2, W/2)``).

        Luma is warped bilinearly; each input pixel takes the chroma sample of the 2x2 block its
        luma comes from (as FFmpeg's conversion reads 4:2:0); only the ``side x side`` result is
        converted to RGB, with the matrix of FFmpeg's ``colorspace`` tag (BT.709, BT.2020, else
        BT.601; ``full_range`` planes are mapped to video range first). Within 0.6-0.8 grey levels
        (mean) of warping FFmpeg's RGB conversion of the whole frame.
        """
        side = self.spec.side
        m = letterbox_matrix(*y.shape, side)
        # input pixel -> chroma pixel floor(luma / 2), as a rounding (nearest) warp reads it
        to_chroma = np.array([[0.5, 0.0, -0.5 + 1e-3], [0.0, 0.5, -0.5 + 1e-3], [0.0, 0.0, 1.0]])
        mc = np.linalg.inv(to_chroma @ np.linalg.inv(m))
        border = {"borderMode": cv2.BORDER_CONSTANT}
        planes = [cv2.warpPerspective(y, m, (side, side), flags=cv2.INTER_LINEAR,
                                      borderValue=0 if full_range else 16, **border)]
        planes += [cv2.warpPerspective(c, mc, (side, side), flags=cv2.INTER_NEAREST, borderValue=128,
                                       **border) for c in (u, v)]
        yuv = cv2.merge(planes)
        if full_range:
            yuv = cv2.LUT(yuv, FULL_TO_VIDEO)
        return cv2.transform(yuv, YUV_TO_RGB.get(colorspace, BT601)), m

    def run(self, image: np.ndarray, to_input: np.ndarray
            ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Detect faces in a letterboxed input.

        Args:
            image: ``(side, side, 3) uint8`` RGB model input.
            to_input: ``(3, 3)`` map from frame pixels to ``image`` pixels.

        Returns:
            ``(box (4,) x1 y1 x2 y2, keypoints (6, 2) x y, score)`` in float **frame** pixels,
            best first.
        """
        np.multiply(image, np.float32(2 / 255), out=self._buffer[0], casting="unsafe")
        self._buffer -= 1.0
        self._net.set_tensor(self._input, self._buffer)
        self._net.invoke()
        logits = self._logits()[0, :, 0]  # views of LiteRT's buffers, valid until the next invoke
        keep = np.flatnonzero(logits >= self._min_logit - 1e-6)
        if not keep.size:
            return []
        scores = 1 / (1 + np.exp(-np.clip(logits[keep].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
        keep, scores = keep[scores >= self.min_score], scores[scores >= self.min_score]
        if not keep.size:
            return []
        raw, anchors = self._regressors()[0, keep], self._anchors[keep]
        side = self.spec.side
        centre = raw[:, :2] / side + anchors
        size = raw[:, 2:4] / side
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        points = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) / side + anchors[:, None, :]
        back = np.linalg.inv(to_input)
        scale, offset = back[0, 0] * side, back[:2, 2]  # normalised input -> frame pixels
        return [(box * scale + np.tile(offset, 2), kps * scale + offset, score)
                for box, kps, score in weighted_nms(boxes, points, scores)]
