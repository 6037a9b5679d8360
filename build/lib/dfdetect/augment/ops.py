"""Clip-consistent augmentation of face clips: one parameter draw per clip, applied to every frame.

A real video does not flicker, so an augmented copy must not either: :func:`draw_params` draws
one :class:`ClipParams` per clip (flip, rotation, brightness, contrast, blur, noise level,
JPEG/H.264 re-compression) and :func:`apply_params` applies it to all ``T`` frames at once as a
``(T, C, H, W)`` tensor with torchvision's ``transforms.v2``. Noise is the one per-frame
quantity: its level is the clip's, its pattern is new each frame (as sensor noise is), from a
generator seeded by the clip's parameters, never from global random state.

Self-blending (a REAL face blended with a jittered copy of itself, a pseudo-FAKE) is in
:mod:`dfdetect.augment.selfblend`; augmented and self-blended copies written into a manifest in
:mod:`dfdetect.augment.copies`; the before/after figure is :func:`dfdetect.viz.augmentation_figure`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from dfdetect.config import AugmentConfig
from dfdetect.media import video

REFERENCE_SIZE = 224  # pixel-valued parameters (blur sigma) are given for a face of this side
KEYPOINT_SWAP = (1, 0, 2, 3, 5, 4)  # a mirrored face's right eye/ear is the original's left one


@dataclass(frozen=True)
class ClipParams:
    """One clip's augmentation; the defaults are the identity.

    Attributes:
        flip: Mirror left-right.
        angle: Counter-clockwise rotation about the centre, degrees.
        brightness: Gain (1 = unchanged).
        contrast: Factor around the clip's mean grey (1 = unchanged).
        blur_sigma: Gaussian blur sigma in pixels of a 224-px face (0 = none).
        noise_std: Gaussian noise std in 0-255 units (0 = none).
        noise_seed: Seed of the per-frame noise patterns.
        codec: Re-compression: "none", "jpeg" or "h264".
        quality: JPEG quality (1-100) or H.264 CRF (0-51).
        shift: Translation ``(dx, dy)`` as fractions of the width and height (edges mirrored):
            the jitter of a face box between detectors.
    """

    flip: bool = False
    angle: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0
    codec: str = "none"
    quality: int = 0
    shift: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return dataclasses.asdict(self)


def draw_params(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> ClipParams:
    """Draw one clip's parameters.

    Every value is drawn whether or not its transform is on, so the stream of draws (and thus
    every other parameter) does not depend on which transforms happened to be switched on.
    """
    on = rng.random(7) < [cfg.flip_prob, cfg.rotate_prob, cfg.brightness_prob, cfg.contrast_prob,
                          cfg.blur_prob, cfg.noise_prob, cfg.compress_prob]
    angle = rng.uniform(-cfg.max_angle, cfg.max_angle)
    brightness = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    blur, noise = rng.uniform(*cfg.blur_sigma), rng.uniform(*cfg.noise_std)
    noise_seed = int(rng.integers(2**31))
    codec = "jpeg" if rng.random() < 0.5 else "h264"
    quality = int(rng.integers(*cfg.jpeg_quality, endpoint=True) if codec == "jpeg"
                  else rng.integers(*cfg.h264_crf, endpoint=True))
    shift = (0.0, 0.0)
    if cfg.shift_prob > 0:  # drawn last and only when asked for: older draws stay as they were
        on_shift, dxy = rng.random() < cfg.shift_prob, rng.uniform(-cfg.shift, cfg.shift, 2)
        shift = (round(float(dxy[0]), 4), round(float(dxy[1]), 4)) if on_shift else shift
    return ClipParams(
        flip=bool(on[0]), angle=round(float(angle), 3) if on[1] else 0.0,
        brightness=round(float(brightness), 4) if on[2] else 1.0,
        contrast=round(float(contrast), 4) if on[3] else 1.0,
        blur_sigma=round(float(blur), 3) if on[4] else 0.0,
        noise_std=round(float(noise), 3) if on[5] else 0.0, noise_seed=noise_seed,
        codec=codec if on[6] else "none", quality=quality if on[6] else 0, shift=shift,
    )


def to_tensor(clip: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3) uint8`` numpy -> ``(T, 3, H, W) uint8`` tensor (a view when possible)."""
    if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"expected a (T, H, W, 3) uint8 RGB clip, got {getattr(clip, 'dtype', type(clip))} "
                         f"{getattr(clip, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W) uint8`` tensor -> ``(T, H, W, 3) uint8`` contiguous numpy."""
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def clip_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Contrast of a ``(T, 3, H, W)`` clip around the **clip's** mean grey (one pivot for all frames).

    torchvision pivots on each image's own mean; viewing the clip as one tall image makes the
    mapping from input to output pixel values identical on every frame.
    """
    t, c, h, w = x.shape
    tall = x.permute(1, 0, 2, 3).reshape(c, t * h, w)
    return F.adjust_contrast(tall, factor).reshape(c, t, h, w).permute(1, 0, 2, 3)


def jpeg_roundtrip(clip: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode and decode every ``(H, W, 3) uint8`` RGB frame at ``quality`` (OpenCV's
    libjpeg; torchvision's JPEG functions are deprecated from 0.29)."""
    out = np.empty_like(clip)
    for t, frame in enumerate(clip):
        ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError(f"JPEG encoding failed at quality {quality}")
        out[t] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def h264_roundtrip(clip: np.ndarray, crf: int, fps: float = 25.0) -> np.ndarray:
    """Encode ``(T, H, W, 3) uint8`` frames with H.264 at ``crf`` and decode them back.

    Odd sides are padded by edge replication for the encoder and cropped off again.
    """
    t, h, w, _ = clip.shape
    padded = np.pad(clip, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with tempfile.TemporaryDirectory(prefix="dfdetect-h264-") as tmp:
        path = Path(tmp) / "clip.mp4"
        video.write_video(path, padded, fps=fps, crf=crf, deterministic=True)  # reproducible draws
        out = video.read_all_frames(path)
    if len(out) != t:  # never seen with libx264; a shorter decode would misalign labels
        raise video.VideoError(f"H.264 round trip returned {len(out)} of {t} frames")
    return np.ascontiguousarray(out[:, :h, :w])


def apply_params(clip: np.ndarray, p: ClipParams) -> np.ndarray:
    """Apply one clip's parameters to all of its frames.

    Args:
        clip: ``(T, H, W, 3) uint8`` RGB frames.
        p: The clip's parameters (from :func:`draw_params`).

    Returns:
        ``(T, H, W, 3) uint8`` RGB frames (a new array).
    """
    if p.shift != (0.0, 0.0):
        clip = shift_clip(clip, p.shift)
    x = to_tensor(clip)
    if p.flip:
        x = F.horizontal_flip(x)
    if p.angle:
        x = F.rotate(x, p.angle, interpolation=F.InterpolationMode.BILINEAR)
    if p.brightness != 1.0:
        x = F.adjust_brightness(x, p.brightness)
    if p.contrast != 1.0:
        x = clip_contrast(x, p.contrast)
    if p.blur_sigma > 0:
        sigma = p.blur_sigma * x.shape[-1] / REFERENCE_SIZE
        k = 2 * int(np.ceil(3 * sigma)) + 1
        x = F.gaussian_blur(x, [k, k], [sigma, sigma])
    if p.noise_std > 0:
        gen = torch.Generator().manual_seed(p.noise_seed)
        noise = torch.randn(x.shape, generator=gen) * p.noise_std
        x = (x.float() + noise).round_().clamp_(0, 255).to(torch.uint8)
    out = to_numpy(x)
    if p.codec == "jpeg":
        out = jpeg_roundtrip(out, p.quality)
    elif p.codec == "h264":
        out = h264_roundtrip(out, p.quality)
    return out


def shift_clip(clip: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Translate every ``(H, W, 3)`` frame of a ``(T, H, W, 3) uint8`` clip by ``shift``
    (fractions of W and H), mirroring at the edges: ``(T, H, W, 3) uint8``."""
    h, w = clip.shape[1:3]
    m = np.float32([[1, 0, shift[0] * w], [0, 1, shift[1] * h]])
    return np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101) for f in clip])


def augment_clip(clip: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
                 ) -> tuple[np.ndarray, ClipParams]:
    """Draw parameters once and apply them to every frame: ``(T, H, W, 3) -> (T, H, W, 3)``."""
    params = draw_params(rng, cfg)
    return apply_params(clip, params), params


def transform_keypoints(keypoints: np.ndarray, p: ClipParams, size: tuple[int, int]) -> np.ndarray:
    """Move face keypoints the way :func:`apply_params` moves the pixels under them.

    Args:
        keypoints: ``(N, 6, 2) float32`` (x, y) in crop pixels (continuous: pixel i spans [i, i+1)).
        p: The clip's parameters (only shift, flip and rotation move points).
        size: The frames' ``(H, W)``.

    Returns:
        ``(N, 6, 2) float32``; after a flip the right/left eye and ear entries are swapped so
        each keeps its anatomical meaning. NaN points stay NaN.
    """
    kp = torch.as_tensor(np.asarray(keypoints, np.float32)).clone() - 0.5  # torchvision: pixel centres
    kp = kp + torch.tensor([p.shift[0] * size[1], p.shift[1] * size[0]])
    if p.flip:
        kp = F.horizontal_flip_keypoints(kp, canvas_size=size)[:, list(KEYPOINT_SWAP)]
    if p.angle:
        kp = F.rotate_keypoints(kp, canvas_size=size, angle=p.angle)[0]
    return (kp + 0.5).numpy().astype(np.float32)
