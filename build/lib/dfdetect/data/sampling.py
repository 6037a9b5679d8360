"""Clip sampling: which frames of a face video make a clip (training, evaluation and prediction).

A :class:`ClipSampler` is handed to the Dataset, and :class:`UniformClipSampler` is also what
:class:`dfdetect.inference.Predictor` uses inside each window of a video, so training,
evaluation and inference cannot drift apart. To add a rule, subclass :class:`ClipSampler`.
"""

from __future__ import annotations

import math

import numpy as np

from dfdetect.media import video


def clip_indices(num_frames: int, length: int, train: bool = False,
                 rng: np.random.Generator | None = None, stride: int = 0) -> np.ndarray:
    """Which frames of an ``num_frames``-frame face video make a clip of ``length`` frames.

    Evaluation (``train=False``): ``length`` indices evenly spaced over the video (centres of
    equal segments), the same every time. Training: a random stride (``stride`` when > 0, else
    uniform in ``[1, num_frames // length]``) and a random start so the clip fits.

    Short videos (``num_frames < length``), train or not: every frame in order, each repeated
    about ``length / num_frames`` times (e.g. 3 frames, length 6 -> 0 0 1 1 2 2).

    Returns:
        ``(length,) int64`` non-decreasing indices in ``[0, num_frames)``.
    """
    if num_frames < length or not train:
        return video.uniform_indices(num_frames, length)
    if rng is None:
        raise ValueError("clip_indices(train=True) needs rng")
    max_stride = max(1, (num_frames - 1) // max(length - 1, 1))
    step = min(stride, max_stride) if stride > 0 else int(rng.integers(1, max(1, num_frames // length) + 1))
    step = min(step, max_stride)
    start = int(rng.integers(0, num_frames - (length - 1) * step))
    return start + step * np.arange(length, dtype=np.int64)


class ClipSampler:
    """Chooses the frames of one clip: ``sampler(num_frames, length, rng) -> (length,) int64``.

    Subclasses implement :meth:`__call__`. Every sampler handles short videos the same way
    (``num_frames < length``): every frame in order, each repeated about ``length / num_frames``
    times, so a 3-frame video gives ``0 0 1 1 2 2`` for a 6-frame clip in training, evaluation and
    prediction alike.
    """

    random: bool = False  # True when the clip depends on ``rng``

    def __call__(self, num_frames: int, length: int, rng: np.random.Generator | None = None
                 ) -> np.ndarray:
        raise NotImplementedError


class UniformClipSampler(ClipSampler):
    """Evaluation and prediction: ``length`` frames evenly spaced (segment centres), always the same."""

    def __call__(self, num_frames: int, length: int, rng: np.random.Generator | None = None
                 ) -> np.ndarray:
        return clip_indices(num_frames, length, train=False)


class RandomClipSampler(ClipSampler):
    """Training: a random start and stride (``stride`` frames when > 0, else random) that fit.

    Args:
        stride: Fixed stride in frames; 0 draws one in ``[1, num_frames // length]`` per clip.
    """

    random = True

    def __init__(self, stride: int = 0):
        self.stride = stride

    def __call__(self, num_frames: int, length: int, rng: np.random.Generator | None = None
                 ) -> np.ndarray:
        return clip_indices(num_frames, length, train=True, rng=rng, stride=self.stride)

    def __repr__(self) -> str:
        return f"RandomClipSampler(stride={self.stride})"


def clip_sampler(train: bool, stride: int = 0) -> ClipSampler:
    """The default sampler: random (with ``stride``) for training, uniform otherwise."""
    return RandomClipSampler(stride) if train else UniformClipSampler()


def clip_windows(read: int, clips: int) -> list[range]:
    """Split ``read`` sampled positions into ``clips`` consecutive, near-equal windows."""
    edges = [math.floor(j * read / clips) for j in range(clips + 1)]
    return [range(edges[j], edges[j + 1]) for j in range(clips)]
