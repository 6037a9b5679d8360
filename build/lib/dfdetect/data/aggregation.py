"""Video aggregation: how the scores of a video's frames (or clips) make the video's score.

One named rule (``DataConfig.aggregate``) used by evaluation
(:meth:`dfdetect.training.metrics.Predictions.by_video`) and by prediction
(:class:`dfdetect.inference.predictor.Predictor`), so both report the same number:

* ``"mean"`` (default): mean of P(fake).
* ``"logit_mean"``: sigmoid of the mean logit (a geometric-mean-like vote; one confident frame
  weighs more than under ``"mean"``).
* ``"median"``: median of P(fake).
* ``"max"``: the most suspicious score (higher recall, more false alarms).
* ``"confident"``: the DFDC winner's (Seferbekov) confident strategy: when more than
  ``n / 2.5`` scores are above 0.8 (and more than 11 of 32, scaled to ``n``), the mean of those;
  else when more than 90% are below 0.2, the mean of those; else the mean of all.

Frame-level models (``ModelConfig.temporal="none"``) are aggregated over every frame score of
the video; LSTM models over their clip scores (their frame scores are running LSTM outputs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EPS = 1e-6  # P(fake) is clipped to [EPS, 1 - EPS] before taking logits


def _logit_mean(p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1 - EPS)
    return float(1.0 / (1.0 + np.exp(-np.mean(np.log(q / (1 - q))))))


def confident(p: np.ndarray, high: float = 0.8, low: float = 0.2) -> float:
    """The DFDC winner's confident strategy on ``(n,)`` P(fake) (see the module docstring)."""
    n = len(p)
    fakes = p > high
    if fakes.sum() > n / 2.5 and fakes.sum() > 11 * n / 32:
        return float(np.mean(p[fakes]))
    reals = p < low
    if reals.sum() > 0.9 * n:
        return float(np.mean(p[reals]))
    return float(np.mean(p))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda p: float(np.mean(p)),
    "logit_mean": _logit_mean,
    "median": lambda p: float(np.median(p)),
    "max": lambda p: float(np.max(p)),
    "confident": confident,
}


def aggregate(scores: np.ndarray, rule: str = "mean") -> float:
    """One video's score from its scores.

    Args:
        scores: ``(n,)`` P(fake) of the video's frames (frame-level models) or clips, n >= 1.
        rule: A key of :data:`AGGREGATES`.

    Returns:
        The video's P(fake).

    Raises:
        ValueError: Unknown rule, or no scores.
    """
    if rule not in AGGREGATES:
        raise ValueError(f"aggregate={rule!r}: use one of {', '.join(AGGREGATES)}")
    p = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(p) == 0:
        raise ValueError("aggregate: a video needs at least one score")
    return AGGREGATES[rule](p)
