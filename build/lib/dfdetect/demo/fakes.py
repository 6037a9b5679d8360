"""Face manipulations for the offline demo: clip-consistent FAKE videos made from REAL ones.

Two manipulations with different artefacts, so a detector trained on one can be tested on
the other (issue #7):

* :func:`face_swap` pastes another person's face: a similarity warp from the eye, nose and
  mouth keypoints, Reinhard colour matching in LAB and a feathered elliptical mask. Its
  artefacts are an identity change, a blending boundary and a colour/texture mismatch.
* :func:`face_reenact` keeps the identity and re-animates the mouth like a lip-sync edit: a
  smooth local warp (jaw drop, mouth corners) driven by speech-rate sinusoids, re-rendered
  at a lower resolution inside a feathered lower-face mask. Its artefacts are unnatural
  mouth motion and a blurred lower face.

Every random choice is drawn once per clip (``draw_*_params``) and the same parameters are
applied to all frames; the geometry follows the face through the per-frame keypoints
(``(T, 6, 2)`` frame pixels in BlazeFace order: right eye, left eye, nose tip, mouth centre,
right ear tragion, left ear tragion). These are demo fakes, far simpler than real deepfakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

SWAP = "swap"
REENACT = "reenact"
MANIPULATIONS = (SWAP, REENACT)
ALIGN_POINTS = 4  # eyes, nose tip and mouth align faces; ear points are unreliable off-frontal
STD_RATIO = (0.5, 2.0)  # contrast change allowed by colour matching (beyond it: garish colours)
MIN_ALPHA = 1.0 / 255  # mask values below this are 0: far pixels stay exactly as they were


class FakeError(ValueError):
    """Inputs to a manipulation are inconsistent (shapes, missing keypoints)."""


@dataclass(frozen=True)
class FakeClip:
    """A manipulated clip.

    Attributes:
        frames: ``(T, H, W, 3) uint8`` RGB frames.
        masks: ``(T, H, W) float32`` in ``[0, 1]``: how much of each pixel was replaced.
        kind: ``"swap"`` or ``"reenact"``.
        params: The per-clip parameters (JSON-serialisable), enough to redo the clip.
    """

    frames: np.ndarray
    masks: np.ndarray
    kind: str
    params: dict[str, Any]


# --------------------------------------------------------------------------- geometry


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Args:
        src: ``(N, 2)`` points, N >= 2.
        dst: ``(N, 2)`` corresponding points.

    Returns:
        ``(2, 3) float64`` matrix for :func:`cv2.warpAffine` (no reflection).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    zs = (src - mu_s) @ np.array([1, 1j])  # points as complex numbers
    zd = (dst - mu_d) @ np.array([1, 1j])
    a = np.vdot(zs, zd) / max(np.vdot(zs, zs).real, 1e-12)  # scale * exp(i * angle)
    rot = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def face_axes(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A face-aligned frame from BlazeFace keypoints.

    The "down" axis runs from the eyes' midpoint to the mouth and the scale is the larger of
    the eye distance and the eye-to-mouth distance, so both stay sensible for turned heads.

    Args:
        keypoints: ``(6, 2)`` (or at least ``(4, 2)``) frame pixels.

    Returns:
        ``(eyes_centre (2,), across (2,), down (2,), scale)``: unit vectors ``across`` (towards
        the image-right side of the face) and ``down``, and the scale in pixels.
    """
    kp = np.asarray(keypoints, np.float64)
    eyes = (kp[0] + kp[1]) / 2
    to_mouth = kp[3] - eyes
    dist = float(np.hypot(*to_mouth))
    scale = max(float(np.hypot(*(kp[1] - kp[0]))), dist, 1.0)
    down = to_mouth / dist if dist > 1e-6 else np.array([0.0, 1.0])
    across = np.array([down[1], -down[0]])
    return eyes, across, down, scale


def _ipt(xy: np.ndarray) -> tuple[int, int]:
    """A point or size as OpenCV wants it: a tuple of two rounded ints."""
    x, y = np.rint(np.asarray(xy, np.float64))
    return int(x), int(y)


def ellipse_mask(
    shape: tuple[int, int], keypoints: np.ndarray, offset: float, axes: tuple[float, float],
    feather: float,
) -> np.ndarray:
    """A feathered ellipse aligned with the face.

    Args:
        shape: Frame ``(H, W)``.
        keypoints: ``(6, 2)`` frame pixels.
        offset: Centre's distance below the eyes' midpoint, in face scales (see :func:`face_axes`).
        axes: Half-axes ``(across, down)`` in face scales.
        feather: Gaussian blur sigma of the edge, in face scales.

    Returns:
        ``(H, W) float32`` in ``[0, 1]``; values under 1/255 are exactly 0.
    """
    eyes, across, down, scale = face_axes(keypoints)
    centre = eyes + offset * scale * down
    angle = float(np.degrees(np.arctan2(across[1], across[0])))
    hard = np.zeros(shape, np.uint8)
    size = _ipt(np.maximum(np.asarray(axes) * scale, 1))
    cv2.ellipse(hard, _ipt(centre), size, angle, 0, 360, 255, -1)
    sigma = max(feather * scale, 0.5)
    mask = cv2.GaussianBlur(hard.astype(np.float32) / 255, (0, 0), sigma)
    mask[mask < MIN_ALPHA] = 0
    return mask


def smooth_series(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 (edges repeat the end values); ``window`` 1 = copy.

    Args:
        values: ``(T, ...)`` array, e.g. keypoints ``(T, 6, 2)``.
        window: Odd number of frames averaged.

    Returns:
        ``(T, ...) float64``.
    """
    values = np.asarray(values, np.float64)
    half = max(int(window), 1) // 2
    if half == 0 or len(values) < 2:
        return values.copy()
    padded = np.concatenate([values[:1].repeat(half, 0), values, values[-1:].repeat(half, 0)])
    sums = np.cumsum(np.concatenate([np.zeros_like(values[:1]), padded]), axis=0)
    return (sums[2 * half + 1:] - sums[:-2 * half - 1]) / (2 * half + 1)


def _check(frames: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    keypoints = np.asarray(keypoints, np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise FakeError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    if keypoints.shape[0] != frames.shape[0] or keypoints.shape[1] < ALIGN_POINTS:
        raise FakeError(f"keypoints must be (T, 6, 2) with T = {frames.shape[0]}, "
                        f"got {keypoints.shape}")
    if not np.isfinite(keypoints[:, :ALIGN_POINTS]).all():
        raise FakeError("keypoints contain NaN/inf: fill frames without a face (interpolate) first")
    return frames, keypoints


def _blend(frame: np.ndarray, new: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``frame`` where alpha is 0, ``new`` where it is 1: ``(H, W, 3) uint8``."""
    a = alpha[..., None]
    out = frame.astype(np.float32) * (1 - a) + new.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- face swap


def draw_swap_params(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one clip's face-swap parameters (mask shape, feathering, colour matching, blur)."""
    return {
        "mask_offset": float(rng.uniform(0.4, 0.5)),  # ellipse centre below the eyes, face scales
        "mask_axes": [float(rng.uniform(0.85, 1.0)), float(rng.uniform(1.05, 1.2))],
        "feather": float(rng.uniform(0.08, 0.16)),  # edge blur sigma, face scales
        "color_strength": float(rng.uniform(0.75, 1.0)),  # 1 = full Reinhard transfer
        "source_blur": float(rng.uniform(0.0, 0.8)),  # Gaussian sigma on the warped face, pixels
        "stats_window": 5,  # frames over which the target's colour statistics are averaged
    }


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)


def _roi(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice] | None:
    """Bounding box of the non-zero part of ``mask`` grown by ``pad`` pixels (None if empty)."""
    ys, xs = np.nonzero(mask.any(1)), np.nonzero(mask.any(0))
    if len(ys[0]) == 0:
        return None
    h, w = mask.shape
    y0, y1 = max(int(ys[0][0]) - pad, 0), min(int(ys[0][-1]) + 1 + pad, h)
    x0, x1 = max(int(xs[0][0]) - pad, 0), min(int(xs[0][-1]) + 1 + pad, w)
    return slice(y0, y1), slice(x0, x1)


def _masked_stats(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-weighted mean and std of each LAB channel of an RGB image: ``(2, 3)``."""
    box = _roi(mask)
    if box is None:
        raise FakeError("the face mask lies outside the image: check the keypoints")
    w = mask[box].ravel().astype(np.float64)
    px = _lab(image[box]).reshape(-1, 3).astype(np.float64)
    total = max(w.sum(), 1e-6)
    mean = (px * w[:, None]).sum(0) / total
    std = np.sqrt((((px - mean) ** 2) * w[:, None]).sum(0) / total)
    return np.stack([mean, np.maximum(std, 1e-3)])


def _swap_frame(frame: np.ndarray, mask: np.ndarray, source: np.ndarray, source_mask: np.ndarray,
                m: np.ndarray, src_stats: np.ndarray, goal: np.ndarray, blur: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """One frame of :func:`face_swap`: warp, colour-transfer and blend inside the mask's box.

    Returns:
        ``(frame (H, W, 3) uint8, alpha (H, W) float32)``: alpha is ``mask`` limited to where
        the warped donor mask is, so the donor's background never shows when poses differ.
    """
    box = _roi(mask)
    if box is None:  # face outside the frame
        return frame.copy(), mask
    ys, xs = box
    m = m.copy()
    m[:, 2] -= (xs.start, ys.start)  # render only the box
    size = (xs.stop - xs.start, ys.stop - ys.start)
    warped = cv2.warpAffine(source, m, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    if blur > 0.05:
        warped = cv2.GaussianBlur(warped, (0, 0), blur)
    ratio = np.clip(goal[1] / src_stats[1], *STD_RATIO)
    lab = (_lab(warped) - src_stats[0]) * ratio + goal[0]
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    alpha = np.zeros_like(mask)
    alpha[box] = mask[box] * cv2.warpAffine(source_mask, m, size, flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha[alpha < MIN_ALPHA] = 0
    out = frame.copy()
    out[box] = _blend(frame[box], np.clip(rgb * 255, 0, 255), alpha[box])
    return out, alpha


def face_swap(
    frames: np.ndarray, keypoints: np.ndarray, source: np.ndarray, source_keypoints: np.ndarray,
    rng: np.random.Generator | None = None, params: dict[str, Any] | None = None,
) -> FakeClip:
    """Swap the face of ``source`` into every frame of a clip, following the target face.

    Args:
        frames: Target clip ``(T, H, W, 3) uint8`` RGB.
        keypoints: Target keypoints ``(T, 6, 2)`` frame pixels (smooth them over time first,
            e.g. with :func:`smooth_series`, or detector jitter becomes visible).
        source: The donor face photo ``(h, w, 3) uint8`` RGB.
        source_keypoints: ``(6, 2)`` donor keypoints in ``source`` pixels.
        rng: Draws the parameters when ``params`` is not given (default seed 0).
        params: Parameters from :func:`draw_swap_params` (replays a clip exactly).

    Returns:
        The FakeClip (frames ``(T, H, W, 3)``, masks ``(T, H, W)``, kind "swap", params).
    """
    frames, keypoints = _check(frames, keypoints)
    p = dict(params) if params is not None else draw_swap_params(rng or np.random.default_rng(0))
    h, w = frames.shape[1:3]
    shape_args = (p["mask_offset"], tuple(p["mask_axes"]), p["feather"])
    src_mask = ellipse_mask(source.shape[:2], source_keypoints, *shape_args)
    src_stats = _masked_stats(source, src_mask)  # (2, 3), fixed for the clip
    masks = np.stack([ellipse_mask((h, w), kp, *shape_args) for kp in keypoints])
    tgt_stats = np.stack([_masked_stats(f, m) if m.any() else np.full((2, 3), np.nan)
                          for f, m in zip(frames, masks)])
    tgt_stats = _fill_nan(tgt_stats, src_stats)
    tgt_stats = smooth_series(tgt_stats, p["stats_window"])  # (T, 2, 3): no colour flicker
    goals = src_stats + p["color_strength"] * (tgt_stats - src_stats)  # partial = a mismatch
    src_pts = np.asarray(source_keypoints, np.float64)[:ALIGN_POINTS]
    out = np.empty_like(frames)
    for t, (frame, kp, goal) in enumerate(zip(frames, keypoints, goals)):
        m = similarity_transform(src_pts, kp[:ALIGN_POINTS])
        out[t], masks[t] = _swap_frame(frame, masks[t], source, src_mask, m, src_stats, goal,
                                       p["source_blur"])
    return FakeClip(frames=out, masks=masks, kind=SWAP, params=p)


def _fill_nan(stats: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Frames whose face is outside the frame borrow the nearest valid frame's statistics."""
    ok = ~np.isnan(stats).any(axis=(1, 2))
    if not ok.any():
        return np.repeat(fallback[None], len(stats), 0)
    idx = np.arange(len(stats))
    nearest = idx[ok][np.abs(idx[:, None] - idx[ok][None]).argmin(1)]
    return stats[nearest]


# --------------------------------------------------------------------------- reenactment


def draw_reenact_params(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one clip's mouth-reenactment parameters (motion signal, warp, re-render, mask)."""
    return {
        "open_amp": float(rng.uniform(0.12, 0.2)),  # largest jaw drop, face scales
        "smile_amp": float(rng.uniform(0.0, 0.08)),  # mouth-corner lift, face scales
        "freqs": [float(f) for f in rng.uniform(1.5, 4.0, 2)],  # syllable-rate opening, Hz
        "smile_freq": float(rng.uniform(0.3, 0.8)),  # Hz
        "phases": [float(f) for f in rng.uniform(0, 2 * np.pi, 3)],
        "sigma": [float(rng.uniform(0.5, 0.65)), float(rng.uniform(0.45, 0.6))],  # warp extent
        "resample": float(rng.uniform(0.35, 0.6)),  # re-render scale of the lower face
        "mask_offset": float(rng.uniform(1.05, 1.2)),  # below the eyes, face scales
        "mask_axes": [float(rng.uniform(0.75, 0.9)), float(rng.uniform(0.55, 0.7))],
        "feather": float(rng.uniform(0.08, 0.14)),
    }


def mouth_motion(params: dict[str, Any], frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The reenactment's drive signals, smooth in time.

    Returns:
        ``(opening (T,), smile (T,))`` in face scales: opening in ``[0, open_amp]``, smile in
        ``[0, smile_amp]``.
    """
    t = np.arange(frames) / fps
    (f1, f2), (p1, p2, p3) = params["freqs"], params["phases"]
    wave = 0.5 * (np.sin(2 * np.pi * f1 * t + p1) + np.sin(2 * np.pi * f2 * t + p2))
    opening = params["open_amp"] * (0.5 + 0.5 * wave)
    smile = params["smile_amp"] * (0.5 + 0.5 * np.sin(2 * np.pi * params["smile_freq"] * t + p3))
    return opening, smile


def _mouth_warp(image: np.ndarray, kp: np.ndarray, opening: float, smile: float,
                p: dict[str, Any]) -> np.ndarray:
    """Move the jaw and mouth corners of ``image`` (a region around the face) and open the mouth.

    Args:
        image: ``(h, w, 3) uint8`` region.
        kp: ``(6, 2)`` keypoints in the region's pixels.
        opening: Jaw drop in face scales.
        smile: Mouth-corner lift in face scales.
        p: The clip's parameters (``sigma``).

    Returns:
        ``(h, w, 3) uint8`` warped region.
    """
    _, across, down, scale = face_axes(kp)
    mouth = np.asarray(kp[3], np.float64)
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u = ((xs - mouth[0]) * across[0] + (ys - mouth[1]) * across[1]) / scale  # face scales
    v = ((xs - mouth[0]) * down[0] + (ys - mouth[1]) * down[1]) / scale
    su, sv = p["sigma"]
    weight = np.exp(-u**2 / (2 * su**2) - v**2 / (2 * sv**2))
    # jaw drop: below the lip line moves down, above it a little up; the lip line stays
    side = np.where(v > 0, 1.0, 0.35)
    dv = opening * side * np.tanh(v / 0.06) * weight - smile * (u / su) ** 2 * weight
    du = smile * np.tanh(u / su) * weight
    # backward map: output pixel x shows input at x - shift (fine for small displacements)
    map_x = (xs - (du * across[0] + dv * down[0]) * scale).astype(np.float32)
    map_y = (ys - (du * across[1] + dv * down[1]) * scale).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _paint_cavity(warped, mouth, across, down, scale, opening, smile)


def _paint_cavity(image: np.ndarray, mouth: np.ndarray, across: np.ndarray, down: np.ndarray,
                  scale: float, opening: float, smile: float) -> np.ndarray:
    """Darken the gap the jaw drop opens between the lips (the inside of the mouth)."""
    half_h = 0.45 * opening * scale
    if half_h < 1.0:
        return image
    centre = mouth + 0.33 * opening * scale * down  # the gap spans -0.35..+1 opening
    half_w = 0.2 * scale * (1 + 2 * smile)
    x, y = _ipt(mouth)
    r = max(int(0.1 * scale), 1)
    lips = image[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].reshape(-1, 3).mean(0)
    alpha = np.zeros(image.shape[:2], np.float32)
    angle = float(np.degrees(np.arctan2(across[1], across[0])))
    cv2.ellipse(alpha, _ipt(centre), _ipt(np.maximum([half_w, half_h], 1)), angle, 0, 360, 0.85, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.04 * scale, 0.5))
    return _blend(image, np.broadcast_to(lips * 0.4, image.shape), alpha)


def _rerender(image: np.ndarray, factor: float) -> np.ndarray:
    """Down- and up-sample: the soft look of a low-resolution generator's output."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(int(w * factor), 1), max(int(h * factor), 1)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def face_reenact(
    frames: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator | None = None,
    params: dict[str, Any] | None = None, fps: float = 25.0,
) -> FakeClip:
    """Re-animate the mouth of every frame like a lip-sync edit (same identity, new motion).

    Args:
        frames: Clip ``(T, H, W, 3) uint8`` RGB.
        keypoints: ``(T, 6, 2)`` frame pixels, smoothed over time.
        rng: Draws the parameters when ``params`` is not given (default seed 0).
        params: Parameters from :func:`draw_reenact_params` (replays a clip exactly).
        fps: Frame rate, so the mouth moves at speech rate.

    Returns:
        The FakeClip (frames ``(T, H, W, 3)``, masks ``(T, H, W)``, kind "reenact", params).
    """
    frames, keypoints = _check(frames, keypoints)
    p = dict(params) if params is not None else draw_reenact_params(rng or np.random.default_rng(0))
    opening, smile = mouth_motion(p, len(frames), fps)
    h, w = frames.shape[1:3]
    out = frames.copy()
    masks = np.empty(frames.shape[:3], np.float32)
    for t, (frame, kp) in enumerate(zip(frames, keypoints)):
        masks[t] = ellipse_mask((h, w), kp, p["mask_offset"], tuple(p["mask_axes"]), p["feather"])
        box = _roi(masks[t], pad=4)  # the warp samples a few pixels beyond the mask
        if box is None:  # face outside the frame: nothing to edit
            continue
        origin = np.array([box[1].start, box[0].start])
        warped = _mouth_warp(frame[box], kp - origin, opening[t], smile[t], p)
        out[t][box] = _blend(frame[box], _rerender(warped, p["resample"]), masks[t][box])
    return FakeClip(frames=out, masks=masks, kind=REENACT, params=p)
