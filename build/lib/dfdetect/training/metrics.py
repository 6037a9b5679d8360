"""Evaluation metrics (scikit-learn), video-level aggregation and temperature scaling.

Scores are P(fake) (label 1 = FAKE). A video's score aggregates its frames' (frame-level
models) or clips' P(fake) by the rule of :mod:`dfdetect.data.aggregation` (mean by default),
grouped by the ``video_id`` the dataset returns (never parsed from paths).

As DeepfakeBench reports them: AUC, average precision (AP), equal error rate (EER) and
accuracy at the threshold, at the frame level (``frame_*``) and at the video level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import metrics as skm

from dfdetect.data.aggregation import aggregate

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] in log losses (as the DFDC did, 1e-15)


@dataclass(frozen=True)
class Predictions:
    """Clip-level outputs of a model over a dataset.

    Attributes:
        video_ids: ``(N,)`` video id of each clip.
        labels: ``(N,)`` int64, 1 = FAKE.
        logits: ``(N,)`` float64 raw model outputs; P(fake) = sigmoid(logit / temperature).
        frame_logits: ``(N, T)`` float64 per-frame logits of frame-level models (then videos
            aggregate frames, not clips), or None.
    """

    video_ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    frame_logits: np.ndarray | None = None

    def probs(self, temperature: float = 1.0) -> np.ndarray:
        """``(N,)`` P(fake) per clip."""
        return 1.0 / (1.0 + np.exp(-self.logits / temperature))

    def frame_probs(self, temperature: float = 1.0) -> np.ndarray:
        """``(N, T)`` P(fake) per frame (``(N, 1)``, the clips', without frame logits)."""
        if self.frame_logits is None:
            return self.probs(temperature)[:, None]
        return 1.0 / (1.0 + np.exp(-np.asarray(self.frame_logits) / temperature))

    def by_video(self, temperature: float = 1.0, rule: str = "mean"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Aggregate per video: ``(video_ids (V,), labels (V,), P(fake) (V,))``, sorted by id.

        Args:
            temperature: Divides the logits.
            rule: Aggregation rule (:mod:`dfdetect.data.aggregation`), over the frame scores of
                a video when there are frame logits, else over its clip scores.

        Raises:
            ValueError: Clips of one video carry different labels.
        """
        ids, inverse = np.unique(self.video_ids.astype(str), return_inverse=True)
        per = self.frame_probs(temperature) if self.frame_logits is not None \
            else self.probs(temperature)[:, None]
        scores = np.array([aggregate(per[inverse == v].reshape(-1), rule)
                           for v in range(len(ids))], dtype=np.float64)
        labels = np.zeros(len(ids), dtype=np.int64)
        labels[inverse] = self.labels
        if not np.array_equal(labels[inverse], self.labels):
            raise ValueError("clips of the same video_id have different labels; check the manifest")
        return ids, labels, scores

    @property
    def several_clips_per_video(self) -> bool:
        """Whether some video has more than one clip (then clip-level metrics are reported too)."""
        return len(np.unique(self.video_ids.astype(str))) < len(self.video_ids)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Classification metrics of P(fake) scores.

    Args:
        labels: ``(N,)`` 0/1 (1 = FAKE).
        scores: ``(N,)`` P(fake) in ``[0, 1]``.
        threshold: Score at or above which a sample is called FAKE.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``auc``, ``ap`` (average precision, FAKE the
        positive class), ``eer`` (equal error rate; these three NaN when one class is absent),
        ``log_loss``, ``balanced_log_loss`` (the DFDC's: mean of the per-class log losses),
        ``confusion_matrix`` ``[[TN, FP], [FN, TP]]`` (rows = true REAL, FAKE), ``threshold``,
        ``std`` (of the scores: 0 for a constant model), ``n`` and ``n_fake``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    pred = (scores >= threshold).astype(np.int64)
    both = len(np.unique(labels)) == 2
    per_class = [-np.mean(np.log(scores[labels == 1])) if (labels == 1).any() else math.nan,
                 -np.mean(np.log(1 - scores[labels == 0])) if (labels == 0).any() else math.nan]
    return {
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, pred)) if both else math.nan,
        "auc": float(skm.roc_auc_score(labels, scores)) if both else math.nan,
        "ap": float(skm.average_precision_score(labels, scores)) if both else math.nan,
        "eer": equal_error_rate(labels, scores) if both else math.nan,
        "log_loss": float(skm.log_loss(labels, scores, labels=[0, 1])),
        "balanced_log_loss": float(np.mean(per_class)) if both else math.nan,
        "confusion_matrix": skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist(),
        "threshold": float(threshold),
        "std": float(np.std(scores)) if len(scores) else math.nan,
        "n": len(labels),
        "n_fake": int(labels.sum()),
    }


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER: the error rate where the false-positive and false-negative rates are equal.

    As DeepfakeBench computes it: on the ROC curve, the FPR at the point where
    ``FNR = 1 - TPR`` is closest to the FPR (``labels (N,)`` 0/1, ``scores (N,)`` P(fake)).
    """
    fpr, tpr, _ = skm.roc_curve(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def video_metrics(preds: Predictions, temperature: float = 1.0, calibrated: float | None = None,
                  rule: str = "mean") -> dict:
    """Video-level metrics of clip predictions.

    Args:
        preds: Clip logits, labels and video ids.
        temperature: Applied to the logits before everything else.
        calibrated: A fitted temperature: adds ``ece_calibrated`` and ``log_loss_calibrated``.
        rule: Video aggregation rule (:mod:`dfdetect.data.aggregation`).

    Returns:
        :func:`binary_metrics` of the videos' aggregated P(fake), plus ``loss`` (mean binary
        cross-entropy of the clip logits: what training minimises), ``ece`` (video level),
        ``clip_*`` metrics when some video has several clips and ``frame_*`` ones (every frame
        a sample, DeepfakeBench's frame level) when there are frame logits.
    """
    _, labels, scores = preds.by_video(temperature, rule)
    out = binary_metrics(labels, scores)
    out["loss"] = clip_loss(preds)
    out["ece"] = expected_calibration_error(labels, scores)
    if calibrated is not None:
        scaled = preds.by_video(calibrated, rule)[2]
        out["ece_calibrated"] = expected_calibration_error(labels, scaled)
        out["log_loss_calibrated"] = binary_metrics(labels, scaled)["log_loss"]
    if preds.several_clips_per_video:
        clip = binary_metrics(preds.labels, preds.probs(temperature))
        out.update({f"clip_{k}": v for k, v in clip.items()})
    if preds.frame_logits is not None:
        probs = preds.frame_probs(temperature)
        frame = binary_metrics(np.repeat(preds.labels, probs.shape[1]), probs.reshape(-1))
        out.update({f"frame_{k}": frame[k] for k in ("auc", "ap", "eer", "accuracy", "n")})
    return out


def clip_loss(preds: Predictions) -> float:
    """Mean binary cross-entropy of the clip logits (unweighted)."""
    if len(preds.logits) == 0:
        return math.nan
    logits = torch.as_tensor(preds.logits, dtype=torch.float64)
    labels = torch.as_tensor(preds.labels, dtype=torch.float64)
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    """Reliability-diagram data and expected calibration error over equal-width bins of P(fake).

    Returns:
        ``edges (bins + 1,)``, ``confidence (bins,)`` mean P(fake) per bin, ``frequency (bins,)``
        fraction FAKE per bin, ``count (bins,)`` (empty bins: NaN confidence/frequency) and
        ``ece``: count-weighted mean of ``|frequency - confidence|`` (NaN with no samples).
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=probs, minlength=bins) / count
        frequency = np.bincount(idx, weights=labels, minlength=bins) / count
    filled = count > 0
    gap = np.abs(frequency[filled] - confidence[filled])
    ece = float(np.sum(gap * count[filled]) / count.sum()) if filled.any() else math.nan
    return {"edges": edges, "confidence": confidence, "frequency": frequency, "count": count,
            "ece": ece}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of P(fake) ``probs (N,)`` against 0/1 ``labels (N,)`` (see :func:`reliability`)."""
    return reliability(labels, probs, bins)["ece"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """Temperature T > 0 minimising the log loss of ``sigmoid(logits / T)`` (Guo et al., 2017).

    Args:
        logits: ``(N,)`` clip logits on the validation split.
        labels: ``(N,)`` 0/1.

    Returns:
        T (1.0 when fewer than two classes are present: nothing to calibrate against).
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays > 0
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and 1e-3 < t < 1e3 else 1.0
