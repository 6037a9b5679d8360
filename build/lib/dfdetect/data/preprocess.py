"""**The** preprocessing of face frames for the model (the Dataset, the frame cache and prediction).

``(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32``: antialiased bilinear resize on uint8, then the
backbone's normalisation.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from dfdetect.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig


def _as_tensor(frames: np.ndarray) -> torch.Tensor:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 \
            or frames.dtype != np.uint8:
        raise ValueError("expected frames as a (T, H, W, 3) uint8 RGB array, got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}")
    return torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) view


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.resize(x, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(T, H, W, 3) uint8`` frames to ``(T, size, size, 3) uint8`` exactly as
    :func:`preprocess_clip` does (so resizing first and preprocessing later changes nothing)."""
    x = _resize(_as_tensor(frames), size)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def preprocess_clip(frames: np.ndarray, cfg: DataConfig) -> torch.Tensor:
    """The one preprocessing of face frames for the model.

    Args:
        frames: ``(T, H, W, 3) uint8`` RGB face crops (square; other shapes are stretched).
        cfg: ``size`` (S) and the backbone's ``mean``/``std`` (None, before ``fit`` resolves them
            from the backbone: ImageNet's).

    Returns:
        ``(T, 3, S, S) float32``: bilinear antialiased resize (on uint8), scaled to [0, 1],
        normalised per channel with ``cfg.mean``/``cfg.std``.
    """
    x = _resize(_as_tensor(frames), cfg.size).contiguous()  # float maths is 3x faster contiguous
    x = F.to_dtype(x, torch.float32, scale=True)
    return F.normalize(x, list(cfg.mean or IMAGENET_MEAN), list(cfg.std or IMAGENET_STD))
