"""Training and evaluation figures. Every function returns a ``matplotlib.figure.Figure``.

Figures are built with the object-oriented API (``Figure()``, not ``pyplot``), so nothing here
selects a backend, opens a window or keeps global figure state: the library works the same
headless, in tests and in notebooks (where a returned Figure displays itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dfdetect.io import atomic_path


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")  # layout="constrained" already fits the margins
    return path


def training_curves(history: pd.DataFrame) -> Figure:
    """Loss, accuracy and AUC per epoch, train vs val.

    Args:
        history: One row per epoch with ``epoch`` and ``train_``/``val_`` + ``loss``,
            ``accuracy``, ``auc`` columns (``RUN_DIR/history.csv``).
    """
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, name in zip(axes, ("loss", "accuracy", "auc")):
        for split, style in (("train", "-o"), ("val", "-s")):
            col = f"{split}_{name}"
            if col in history:
                ax.plot(history["epoch"], history[col], style, label=split, markersize=4)
        ax.set(xlabel="epoch", title=name if name != "auc" else "ROC AUC")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix_figure(matrix: list | np.ndarray, title: str = "Confusion matrix") -> Figure:
    """Heatmap of a ``(2, 2)`` confusion matrix ``[[TN, FP], [FN, TP]]`` (rows = true class)."""
    import seaborn as sns  # imported here: seaborn pulls in pyplot, which the library avoids

    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    names = ["REAL", "FAKE"]
    sns.heatmap(np.asarray(matrix), annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=names, yticklabels=names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def roc_figure(labels: np.ndarray, scores: np.ndarray, title: str = "ROC curve") -> Figure:
    """ROC curve of P(fake) ``scores (N,)`` against 0/1 ``labels (N,)``, with its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(4.2, 4), layout="constrained")
    ax = fig.subplots()
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, scores):.3f}")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return fig


def reliability_figure(curves: Mapping[str, Mapping], title: str = "Reliability") -> Figure:
    """Reliability diagram: fraction FAKE vs mean P(fake) per bin, one curve per entry.

    Args:
        curves: Name (e.g. "model", "calibrated") -> :func:`dfdetect.metrics.reliability` output
            (``confidence``, ``frequency``, ``count`` per bin and ``ece``).
        title: Axes title.
    """
    fig = Figure(figsize=(4.2, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for (name, r), style in zip(curves.items(), ("-o", "-s", "-^", "-v")):
        ok = np.asarray(r["count"]) > 0
        ax.plot(np.asarray(r["confidence"])[ok], np.asarray(r["frequency"])[ok], style,
                label=f"{name} (ECE {r['ece']:.3f})")
    ax.set(xlabel="mean predicted P(fake)", ylabel="fraction FAKE", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return fig


def clip_figure(item: Mapping, data_cfg, columns: int = 10) -> Figure:
    """The frames of one clip as the model sees them (normalisation undone): look before training.

    Args:
        item: A dataset item: ``frames (T, 3, S, S)`` normalised float, ``label``, ``video_id``.
        data_cfg: The :class:`~dfdetect.config.DataConfig` that normalised it (``mean``, ``std``).
        columns: Frames per row.
    """
    frames = np.asarray(item["frames"], dtype=np.float32)
    mean = np.asarray(data_cfg.mean, np.float32)[None, :, None, None]
    std = np.asarray(data_cfg.std, np.float32)[None, :, None, None]
    rgb = np.clip((frames * std + mean).transpose(0, 2, 3, 1), 0, 1)  # (T, S, S, 3)
    t = len(rgb)
    cols, rows = min(columns, t), -(-t // min(columns, t))
    fig = Figure(figsize=(1.3 * cols, 1.4 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < t:
            ax.imshow(rgb[i])
            ax.set_title(str(i), fontsize=8)
    label = {0: "REAL", 1: "FAKE"}.get(int(item["label"]), str(item["label"]))
    fig.suptitle(f"{item['video_id']}: {label}, {t} frames of {rgb.shape[1]} px")
    return fig


def face_grid(manifest: str | Path, count: int = 12, columns: int = 6) -> Figure:
    """The middle frame of ``count`` usable face videos of a manifest, titled id + label.

    Labels take turns (REAL, FAKE, REAL, ...) in manifest order, so both classes are on show.
    """
    from dfdetect.manifest import OK, face_video_path, read_manifest
    from dfdetect.video import probe, read_frames

    df = read_manifest(manifest)
    ok = df[df["status"] == OK]
    turn = ok.groupby("label", sort=False).cumcount()  # 0 for each label's first row, 1 for its second...
    rows = ok.assign(_turn=turn.values).sort_values(["_turn", "label"], kind="stable").head(count)
    n = max(len(rows), 1)
    cols = min(columns, n)
    fig = Figure(figsize=(2 * cols, 2.2 * -(-n // cols)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(-(-n // cols), cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (_, row) in zip(axes, rows.iterrows()):
        path = face_video_path(manifest, row)
        ax.imshow(read_frames(path, [probe(path).frames // 2])[0])
        ax.set_title(f"{row['video_id']}\n{row['label'] or 'unlabelled'}", fontsize=8)
    if rows.empty:
        axes[0].text(0.5, 0.5, f"no usable face video in {manifest}", ha="center")
    return fig
