"""Every figure dfdetect draws (faces, clips, augmentation, training, evaluation, heatmaps). Every function returns a ``matplotlib.figure.Figure``.

Figures are built with the object-oriented API (``Figure()``, not ``pyplot``), so nothing here
selects a backend, opens a window or keeps global figure state: the library works the same
headless, in tests and in notebooks (where a returned Figure displays itself).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dfdetect.augment.ops import AugmentConfig, ClipParams, apply_params
from dfdetect.augment.selfblend import self_blend
from dfdetect.config import IMAGENET_MEAN, IMAGENET_STD
from dfdetect.extraction.manifest import OK, face_video_path, read_manifest
from dfdetect.media.files import atomic_path
from dfdetect.media.video import probe, read_frames, uniform_indices, write_video

log = logging.getLogger(__name__)
_GLYPH_MISSING = "missing from font"  # matplotlib: "Glyph 20013 (...) missing from font(s) ..."


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp, dpi=dpi, format="png")  # layout="constrained" already fits the margins
    _report(caught, path)
    return path


def _report(caught: list[warnings.WarningMessage], path: Path) -> None:
    """One debug line for characters the font lacks (CJK file names in a title: drawn as boxes,
    and matplotlib would warn for each glyph on every draw); other warnings pass on."""
    glyphs = [w for w in caught if _GLYPH_MISSING in str(w.message)]
    if glyphs:
        log.debug("%s: %d title character(s) missing from the font, drawn as boxes", path, len(glyphs))
    for w in caught:
        if w not in glyphs:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


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
        curves: Name (e.g. "model", "calibrated") -> :func:`dfdetect.training.metrics.reliability` output
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
    mean = np.asarray(data_cfg.mean or IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.asarray(data_cfg.std or IMAGENET_STD, np.float32)[None, :, None, None]
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


def _frames_to_show(clip: np.ndarray, count: int) -> np.ndarray:
    return uniform_indices(len(clip), min(count, len(clip)))


def augmentation_figure(clip: np.ndarray, seed: int = 0, cfg: AugmentConfig | None = None,
                        frames: int = 4, keypoints: np.ndarray | None = None) -> Figure:
    """The same frames before and after each transform, one row per transform.

    Each row switches one transform on, at the strongest setting of its range in ``cfg``
    (printed as the row's label), and applies it to the whole clip, so the row also shows it
    is the same on every frame. With ``keypoints`` a last row shows a self-blended clip (drawn
    with ``seed``) and its mask's outline.

    Args:
        clip: ``(T, H, W, 3) uint8`` RGB face clip.
        seed: Seed of the noise pattern and of the self-blend draw.
        cfg: Parameter ranges.
        frames: Number of frames (columns) shown, evenly spaced.
        keypoints: Optional ``(T, 6, 2)`` face keypoints (crop pixels) for the self-blend row.

    Returns:
        A matplotlib ``Figure`` (not shown; display it or ``fig.savefig(...)``).
    """
    cfg = cfg or AugmentConfig()
    rng = np.random.default_rng(seed)
    singles = {  # each transform alone at the strongest setting of its range
        "flip": ClipParams(flip=True),
        f"rotate {cfg.max_angle:+.0f} deg": ClipParams(angle=cfg.max_angle),
        f"brightness x{1 + cfg.brightness:.2f}": ClipParams(brightness=1 + cfg.brightness),
        f"contrast x{1 + cfg.contrast:.2f}": ClipParams(contrast=1 + cfg.contrast),
        f"noise std {cfg.noise_std[1]:.0f}": ClipParams(noise_std=cfg.noise_std[1], noise_seed=seed),
        f"blur sigma {cfg.blur_sigma[1]:.1f}": ClipParams(blur_sigma=cfg.blur_sigma[1]),
        f"JPEG q{cfg.jpeg_quality[0]}": ClipParams(codec="jpeg", quality=cfg.jpeg_quality[0]),
        f"H.264 crf {cfg.h264_crf[1]}": ClipParams(codec="h264", quality=cfg.h264_crf[1]),
    }
    rows: list[tuple[str, np.ndarray]] = [("original", clip)]
    rows += [(name, apply_params(clip, p)) for name, p in singles.items()]
    if keypoints is not None:
        blended, mask, bp = self_blend(clip, keypoints, rng)
        rows.append((f"self-blend ({bp.mask}, ratio {bp.ratio:.2f})", blended))
    cols = _frames_to_show(clip, frames)
    fig = Figure(figsize=(1.8 * len(cols), 1.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for r, (name, frames_r) in enumerate(rows):
        for c, t in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(frames_r[t])
            if keypoints is not None and r == len(rows) - 1:
                ax.contour(mask[t], levels=[0.5 * max(float(mask[t].max()), 1e-6)], colors="yellow",
                           linewidths=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    return fig


def overlay(face: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap onto a face crop.

    Args:
        face: ``(H, W, 3) uint8`` RGB crop.
        cam: ``(h, w)`` map in ``[0, 1]``; resized to ``(H, W)`` when different.
        alpha: Weight of the heatmap colour (0 = face only); scaled by the map so cold regions
            keep the face visible.
        cmap: A matplotlib colormap name.

    Returns:
        ``(H, W, 3) uint8`` RGB image.
    """
    import cv2

    cam = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    if cam.shape != face.shape[:2]:
        cam = cv2.resize(cam, (face.shape[1], face.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = matplotlib.colormaps[cmap](cam)[..., :3] * 255.0
    a = alpha * (0.35 + 0.65 * cam)[..., None]
    return np.clip(face.astype(np.float32) * (1 - a) + colour * a, 0, 255).astype(np.uint8)


def heatmap_figure(
    faces: np.ndarray,
    cams: np.ndarray,
    scores: Sequence[float] | None = None,
    frame_indices: Sequence[int] | None = None,
    title: str = "",
    cols: int = 5,
):
    """A grid of face crops with their Grad-CAM, in frame order.

    Args:
        faces: ``(T, H, W, 3) uint8`` RGB crops.
        cams: ``(T, h, w)`` maps in ``[0, 1]``.
        scores: ``(T,)`` per-frame P(fake) printed under each frame (see
            :func:`dfdetect.inference.predictor.frame_scores`), or None.
        frame_indices: ``(T,)`` source-video frame numbers for the captions, or None.
        title: Figure title (e.g. file name, label and score).
        cols: Panels per row.

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot: nothing is shown or kept).
    """

    if len(faces) != len(cams):
        raise ValueError(f"{len(faces)} faces but {len(cams)} maps")
    n = len(faces)
    cols = max(1, min(cols, n))
    rows = max(1, int(np.ceil(n / cols)))
    fig = Figure(figsize=(2.0 * cols, 2.25 * rows + (0.4 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(overlay(faces[i], cams[i]))
        caption = f"frame {int(frame_indices[i])}" if frame_indices is not None else f"#{i}"
        if scores is not None and np.isfinite(scores[i]):
            caption += f"  P(fake) {float(scores[i]):.2f}"
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_heatmap_video(
    path: str | Path, faces: np.ndarray, cams: np.ndarray, fps: float = 4.0
) -> Path:
    """Write the overlaid frames as a short H.264 mp4 (atomically); return the path.

    Args:
        path: Output ``.mp4``.
        faces: ``(T, H, W, 3) uint8`` RGB crops (H and W even).
        cams: ``(T, h, w)`` maps in ``[0, 1]``.
        fps: Playback rate; the frames are seconds apart in the source, so a slow rate reads best.
    """

    write_video(path, (overlay(f, c) for f, c in zip(faces, cams)), fps=fps)
    return Path(path)
