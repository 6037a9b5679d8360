"""Synthetic videos made from real face photos: tests, benchmarks and the offline demo.

A still portrait becomes a short video by a smooth virtual camera (pan, zoom, slight roll)
and a slow lighting change, so face detection, tracking and the LSTM see real faces with
real-looking motion. Nothing here is used to train a model on real user data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraPath:
    """A smooth camera motion over a clip; every value is the amplitude of a slow sinusoid.

    Attributes:
        pan: Horizontal and vertical shift, as a fraction of the output size.
        zoom: Relative zoom amplitude (0.1 = +-10%).
        roll: In-plane rotation amplitude, degrees.
        light: Brightness gain amplitude (0.15 = +-15%).
        cycles: Number of slow oscillations over the clip.
        phase: Phase offset, radians (vary it to get different clips from one photo).
    """

    pan: float = 0.04
    zoom: float = 0.06
    roll: float = 3.0
    light: float = 0.15
    cycles: float = 1.0
    phase: float = 0.0


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB ``(H, W, 3) uint8`` array (grey images are expanded).

    Raises:
        FileNotFoundError: The file is missing or not an image.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: missing or not an image file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def camera_frame(
    image: np.ndarray, t: float, out_size: tuple[int, int], path: CameraPath = CameraPath(),
    center: tuple[float, float] | None = None, scale: float = 1.0,
) -> np.ndarray:
    """Render one frame of a virtual camera looking at ``image``.

    Args:
        image: ``(H, W, 3) uint8`` RGB photo.
        t: Time in ``[0, 1]`` through the clip.
        out_size: Output ``(width, height)``.
        path: The camera motion.
        center: Point of ``image`` (x, y pixels) the camera centres on; default the image centre.
        scale: Base magnification of ``image`` into the output.

    Returns:
        ``(height, width, 3) uint8`` RGB frame.
    """
    w, h = out_size
    ang = 2 * np.pi * path.cycles * t + path.phase
    cx, cy = center if center is not None else (image.shape[1] / 2, image.shape[0] / 2)
    s = scale * (1 + path.zoom * np.sin(ang))
    m = cv2.getRotationMatrix2D((cx, cy), path.roll * np.sin(ang * 0.7), s)
    m[0, 2] += w / 2 - cx + path.pan * w * np.sin(ang)
    m[1, 2] += h / 2 - cy + path.pan * h * np.cos(ang * 0.8)
    frame = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    gain = 1 + path.light * np.sin(ang * 0.5)
    return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def animate(
    image: np.ndarray, frames: int, out_size: tuple[int, int] = (320, 320),
    path: CameraPath = CameraPath(), scale: float | None = None,
) -> np.ndarray:
    """Animate a portrait into a clip.

    Args:
        image: ``(H, W, 3) uint8`` RGB photo.
        frames: Number of frames N.
        out_size: Output ``(width, height)``.
        path: The camera motion.
        scale: Magnification; default fits the photo's shorter side to the output's.

    Returns:
        ``(N, height, width, 3) uint8`` RGB frames.
    """
    if scale is None:
        scale = min(out_size) / min(image.shape[:2])
    ts = np.linspace(0, 1, frames, endpoint=False)
    return np.stack([camera_frame(image, t, out_size, path, scale=scale) for t in ts])


def paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """Copy ``image`` onto ``canvas`` with its top-left corner at ``(x, y)``, clipped to the canvas.

    Returns:
        A new array the shape of ``canvas``.
    """
    out = canvas.copy()
    h, w = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0 - y:y1 - y, x0 - x:x1 - x]
    return out
