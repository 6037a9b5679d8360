"""Self-blending: a REAL face clip blended with a jittered copy of itself becomes a pseudo-FAKE.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022), adapted
to clips: the copy ("source") gets a colour and sharpness jitter and a small shift/scale, and is
blended into the original ("target") inside a soft face mask, leaving the blending boundary and
colour mismatch that face-swap methods leave. A model trained on such clips learns those
artefacts rather than one generator's fingerprint, and a user with only REAL videos can train.

Clip consistency: :func:`self_blend` draws one :class:`BlendParams` per clip and applies it to
every frame; the mask is rebuilt on every frame from that frame's keypoints (or box) with the
same shape parameters, so it follows the face as it moves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from dfdetect.augment.ops import clip_contrast, to_numpy, to_tensor
from dfdetect.config import SelfBlendConfig

log = logging.getLogger(__name__)

MASKS = ("hull", "ellipse")


@dataclass(frozen=True)
class BlendParams:
    """One clip's self-blend (recorded with the output).

    Attributes:
        mask: "hull" or "ellipse".
        mask_scale: Mask size about its centre.
        morph_px: Dilation (> 0) or erosion (< 0) radius, pixels.
        blur_px: Gaussian sigma of the mask edge, pixels.
        ratio: Blend ratio: the mask's value inside the face (0 = output equals input).
        brightness: Source gain.
        contrast: Source contrast factor.
        saturation: Source saturation factor.
        channel_gain: Source (R, G, B) gains.
        sharpness: Source sharpness factor.
        shift_px: Source shift ``(dx, dy)``, pixels.
        scale: Source scale.
        face_px: The clip's face size the pixel values were derived from.
    """

    mask: str
    mask_scale: float
    morph_px: int
    blur_px: float
    ratio: float
    brightness: float
    contrast: float
    saturation: float
    channel_gain: tuple[float, float, float]
    sharpness: float
    shift_px: tuple[float, float]
    scale: float
    face_px: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _fill_missing(points: np.ndarray) -> np.ndarray | None:
    """Replace frames with non-finite points by the nearest frame that has them (None if none has)."""
    ok = np.isfinite(points.reshape(len(points), -1)).all(axis=1)
    if not ok.any():
        return None
    if ok.all():
        return points
    good = np.flatnonzero(ok)
    nearest = good[np.abs(np.arange(len(points))[:, None] - good[None, :]).argmin(axis=1)]
    return points[nearest]


def sidecar_landmarks(sidecar: Mapping[str, np.ndarray], size: int,
                      rows: np.ndarray | None = None) -> np.ndarray | None:
    """A face video's landmarks for :func:`self_blend`, from its sidecar.

    Args:
        sidecar: The ``.npz`` arrays (see :mod:`dfdetect.extraction.manifest`).
        size: The face video's side, pixels.
        rows: Frame rows wanted (default all).

    Returns:
        ``(N, 6, 2)`` keypoints when any is finite, else ``(N, 4)`` boxes in crop pixels from
        ``box`` and ``region`` when present, else None.
    """
    sel = slice(None) if rows is None else np.asarray(rows)
    kp = sidecar.get("keypoints")
    if kp is not None and np.isfinite(kp).any():
        return np.asarray(kp, np.float32)[sel]
    if "box" in sidecar and "region" in sidecar:
        box, region = np.asarray(sidecar["box"], np.float32), np.asarray(sidecar["region"], np.float32)
        scale = size / np.maximum(region[:, 2:3] - region[:, 0:1], 1.0)
        return ((box - np.tile(region[:, :2], 2)) * scale)[sel]
    return None


def face_size(landmarks: np.ndarray) -> float:
    """A clip's face size in pixels: median box width, or for keypoints the larger of the
    ear-to-ear distance and twice the eye-to-mouth distance (robust to profile views)."""
    if landmarks.shape[1:] == (4,):
        return float(np.median(landmarks[:, 2] - landmarks[:, 0]))
    ears = np.linalg.norm(landmarks[:, 4] - landmarks[:, 5], axis=1)
    down = np.linalg.norm(landmarks[:, 3] - (landmarks[:, 0] + landmarks[:, 1]) / 2, axis=1)
    return float(np.median(np.maximum(ears, 2 * down)))


def face_outline(kp: np.ndarray) -> np.ndarray:
    """Points around a face from BlazeFace's six keypoints: ``(6, 2) -> (11, 2)``.

    The keypoints stop at the eyes and mouth, so brow and chin points are added along the
    eye-to-mouth direction (the face's own "down", which follows head roll).
    """
    eyes, mouth = (kp[0] + kp[1]) / 2, kp[3]
    down = mouth - eyes
    extra = [kp[0] - 0.9 * down, kp[1] - 0.9 * down, eyes - 1.0 * down,  # brow
             kp[4] + 0.8 * down, kp[5] + 0.8 * down, mouth + 0.8 * down]  # jaw, chin
    return np.vstack([kp, np.asarray(extra)]).astype(np.float32)


def _draw_mask(shape: tuple[int, int], pts: np.ndarray | None, box: np.ndarray | None,
               p: BlendParams) -> np.ndarray:
    """One frame's mask before morphology and blur, ``(H, W) uint8`` 0-255 (anti-aliased edge)."""
    m = np.zeros(shape, np.uint8)
    sub = 16  # sub-pixel drawing (cv2 shift=4)
    if box is not None:
        centre, axes, angle = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * 0.9, 0.0
    else:
        outline = face_outline(pts)
        if p.mask == "hull":
            c = outline.mean(axis=0)
            hull = cv2.convexHull(((outline - c) * p.mask_scale + c) * sub).astype(np.int32)
            return cv2.fillConvexPoly(m, hull, 255, lineType=cv2.LINE_AA, shift=4)
        eyes, mouth = (pts[0] + pts[1]) / 2, pts[3]
        down = mouth - eyes
        centre = eyes + 0.4 * down
        half_w = 0.5 * max(np.linalg.norm(pts[4] - pts[5]), 2 * np.linalg.norm(down))
        axes = np.array([half_w, 1.4 * np.linalg.norm(down)])
        angle = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0
    axes = np.maximum(axes * p.mask_scale, 1.0)
    return cv2.ellipse(m, tuple(int(v) for v in np.round(centre * sub)),
                       tuple(int(v) for v in np.round(axes * sub)), angle, 0, 360, 255,
                       thickness=-1, lineType=cv2.LINE_AA, shift=4)


def face_masks(landmarks: np.ndarray, shape: tuple[int, int], p: BlendParams) -> np.ndarray:
    """Soft blend masks, one per frame, following the face.

    Args:
        landmarks: ``(T, 6, 2)`` keypoints or ``(T, 4)`` boxes (x1, y1, x2, y2), crop pixels.
        shape: Frame ``(H, W)``.
        p: The clip's parameters (mask kind and scale, morphology, blur, ratio).

    Returns:
        ``(T, H, W) float32`` in ``[0, p.ratio]``.
    """
    is_box = landmarks.shape[1:] == (4,)
    r = abs(p.morph_px)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) if r else None
    out = np.empty((len(landmarks), *shape), np.float32)
    for t, lm in enumerate(landmarks):
        m = _draw_mask(shape, None if is_box else lm, lm if is_box else None, p).astype(np.float32)
        if kernel is not None:
            m = cv2.dilate(m, kernel) if p.morph_px > 0 else cv2.erode(m, kernel)
        if p.blur_px > 0:
            m = cv2.GaussianBlur(m, (0, 0), p.blur_px)
        out[t] = m * (p.ratio / 255.0)
    return out


def draw_blend_params(rng: np.random.Generator, face_px: float, cfg: SelfBlendConfig = SelfBlendConfig(),
                      boxes_only: bool = False) -> BlendParams:
    """Draw one clip's self-blend parameters (pixel values from the clip's face size ``face_px``)."""
    if cfg.mask not in (*MASKS, "random"):
        raise ValueError(f"SelfBlendConfig.mask={cfg.mask!r}: use 'hull', 'ellipse' or 'random'")
    kind = MASKS[int(rng.integers(2))] if cfg.mask == "random" else cfg.mask
    u = rng.uniform(-1, 1, size=10)  # drawn together: the stream never depends on the branch taken
    return BlendParams(
        mask="ellipse" if boxes_only else kind,
        mask_scale=round(float(rng.uniform(*cfg.mask_scale)), 4),
        morph_px=int(np.round(u[0] * cfg.morph * face_px)),
        blur_px=round(float(rng.uniform(*cfg.mask_blur) * face_px), 3),
        ratio=float(rng.choice(cfg.ratios)),
        brightness=round(1 + float(u[1]) * cfg.brightness, 4),
        contrast=round(1 + float(u[2]) * cfg.contrast, 4),
        saturation=round(1 + float(u[3]) * cfg.saturation, 4),
        channel_gain=tuple(round(1 + float(g) * cfg.channel, 4) for g in u[7:10]),
        sharpness=round(float(rng.uniform(*cfg.sharpness)), 4),
        shift_px=(round(float(u[4]) * cfg.max_shift * face_px, 3),
                  round(float(u[5]) * cfg.max_shift * face_px, 3)),
        scale=round(1 + float(u[6]) * cfg.scale, 4),
        face_px=round(face_px, 2),
    )


def jitter_source(clip: np.ndarray, p: BlendParams) -> np.ndarray:
    """The source copy: colour, sharpness and affine jitter, the same on every frame."""
    x = to_tensor(clip)
    x = F.adjust_brightness(x, p.brightness)
    x = clip_contrast(x, p.contrast)
    x = F.adjust_saturation(x, p.saturation)
    gains = torch.tensor(p.channel_gain, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x.float() * gains).round_().clamp_(0, 255).to(torch.uint8)  # colour cast (cheaper than hue)
    x = F.adjust_sharpness(x, p.sharpness)
    x = F.affine(x, angle=0.0, translate=list(p.shift_px), scale=p.scale, shear=[0.0, 0.0],
                 interpolation=F.InterpolationMode.BILINEAR)
    return to_numpy(x)


def self_blend(clip: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator,
               cfg: SelfBlendConfig = SelfBlendConfig()) -> tuple[np.ndarray, np.ndarray, BlendParams]:
    """Turn a REAL face clip into a self-blended pseudo-FAKE.

    Args:
        clip: ``(T, H, W, 3) uint8`` RGB face clip.
        landmarks: ``(T, 6, 2)`` BlazeFace keypoints or ``(T, 4)`` boxes, in the clip's pixels.
            Frames with NaN take the nearest frame's; ``None`` (or all NaN) uses a centred
            ellipse over the middle 60% of the crop.
        rng: Source of the one parameter draw.
        cfg: Parameter ranges.

    Returns:
        ``(blended (T, H, W, 3) uint8, mask (T, H, W) float32 in [0, ratio], params)``;
        ``blended = mask * source + (1 - mask) * clip``, so pixels where the mask is 0 are unchanged.
    """
    t, h, w, _ = clip.shape
    lm = None if landmarks is None else _fill_missing(np.asarray(landmarks, np.float32))
    if lm is None:
        log.debug("self_blend: no face landmarks; using a centred ellipse")
        lm = np.tile(np.array([[0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h]], np.float32), (t, 1))
    if len(lm) != t:
        raise ValueError(f"self_blend: {len(lm)} landmark rows for a {t}-frame clip; give one per frame")
    p = draw_blend_params(rng, face_size(lm), cfg, boxes_only=lm.shape[1:] == (4,))
    mask = face_masks(lm, (h, w), p)
    src = jitter_source(clip, p).astype(np.float32)
    tgt = clip.astype(np.float32)
    out = tgt + mask[..., None] * (src - tgt)
    return np.rint(out).clip(0, 255).astype(np.uint8), mask, p
