"""Folder mode: score every video of a folder (or a list) into ``predictions.csv``.

:func:`predict_folder` runs :class:`dfdetect.inference.predictor.Predictor` on each video, one CSV row per
video (:data:`CSV_COLUMNS`) even when some fail, and optionally saves Grad-CAM grids per video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dfdetect.inference.predictor import ERROR, VideoPrediction, resolve_predictor
from dfdetect.media.files import atomic_write_text
from dfdetect.media.find import VIDEO_SUFFIXES, find_videos
from dfdetect.viz import save_figure, write_heatmap_video

# folder-mode log lines keep the logger name they had before the split from predict.py
log = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.csv"
CSV_COLUMNS = ("file", "label", "score", "confidence", "frames_used", "frames_read", "video_frames",
               "faces", "track", "clip_scores", "aggregate", "threshold", "message", "heatmap_file",
               "seconds")


def list_videos(source: str | Path | list, exclude: str | Path | None = None) -> list[tuple[Path, str]]:
    """``(path, name)`` of the videos to score, sorted; ``name`` is relative to a folder source.

    Args:
        source: A video file, a folder (searched with :func:`dfdetect.media.find.find_videos`) or a list of files.
        exclude: A folder whose contents are skipped (the output folder, so reruns do not
            score their own heatmap videos).

    Raises:
        FileNotFoundError: A missing path, or a folder without videos.
    """
    if isinstance(source, (list, tuple)):
        return [(Path(p), Path(p).name) for p in source]
    source = Path(source)
    if source.is_file():
        return [(source, source.name)]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder; check the path")
    found = [(p, p.relative_to(source).as_posix()) for p in find_videos(source, exclude)]
    if not found:
        raise FileNotFoundError(f"{source}: no videos ({', '.join(VIDEO_SUFFIXES)}) in this folder")
    return found


def _csv_row(res: VideoPrediction) -> dict[str, Any]:
    import json

    row = {k: v for k, v in res.to_dict().items() if k in CSV_COLUMNS}
    row["clip_scores"] = json.dumps(row["clip_scores"])
    return row


def _check_replaceable(csv_path: Path) -> None:
    """Refuse to overwrite a ``predictions.csv`` that dfdetect did not write."""
    if not csv_path.exists():
        return
    header = csv_path.read_text(errors="replace").split("\n", 1)[0].strip()
    if header != ",".join(CSV_COLUMNS):
        raise FileExistsError(f"{csv_path}: exists and is not a dfdetect predictions file; "
                              "choose another --out folder or move that file")
    log.info("%s: replacing the predictions of an earlier run", csv_path)


def _save_heatmap(res: VideoPrediction, out_dir: Path, name: str, video: bool) -> str:

    stem = name.rsplit(".", 1)[0].replace("/", "__")
    title = f"{name}: {res.label} P(fake)={res.score:.3f} (track {res.track})"
    png = save_figure(res.heatmap.figure(title=title), out_dir / "heatmaps" / f"{stem}.png")
    if video:
        write_heatmap_video(png.with_suffix(".mp4"), res.heatmap.faces, res.heatmap.cams)
    return png.relative_to(out_dir).as_posix()


def predict_folder(
    videos: str | Path | list, checkpoint: Any, out_dir: str | Path | None = None, *,
    heatmaps: bool = False, heatmap_video: bool = False, progress: bool = True,
    device: str | torch.device | None = None,
    on_result: Callable[[VideoPrediction], None] | None = None, **options: Any,
) -> Any:
    """Score every video of a folder (or a list), one row each, even when some fail.

    Args:
        videos: A folder (recursive), a video file or a list of files (see :func:`list_videos`).
        checkpoint: A checkpoint / export path, or a :class:`Predictor`.
        out_dir: Where ``predictions.csv`` (rewritten after every video, atomically) and
            ``heatmaps/<name>.png`` go; None writes nothing. A ``predictions.csv`` from an
            earlier run is replaced; any other file of that name is an error.
        heatmaps: Save a Grad-CAM grid per scored video (needs ``out_dir``).
        heatmap_video: Also save it as ``heatmaps/<name>.mp4``.
        progress: Show a progress bar.
        device: Where to load the model.
        on_result: Called with each result as soon as it is ready (the CLI prints it).
        **options: Passed to :meth:`Predictor.predict` (threshold, clips, aggregate, ...).

    Returns:
        ``pd.DataFrame`` with :data:`CSV_COLUMNS`, one row per video, in order.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = Path(out_dir) if out_dir is not None else None
    if (heatmaps or heatmap_video) and out is None:
        raise ValueError("heatmaps need an output folder: pass out_dir (--out DIR)")
    items = list_videos(videos, exclude=out)
    if out is not None:
        _check_replaceable(out / PREDICTIONS_NAME)
    predictor, owned = resolve_predictor(checkpoint, None, device)
    rows: list[dict[str, Any]] = []
    try:
        for path, name in tqdm(items, desc="predict", unit="video", disable=not progress):
            try:
                res = predictor.predict(path, heatmaps=heatmaps or heatmap_video, name=name, **options)
                if out is not None and res.heatmap is not None:
                    res.heatmap_file = _save_heatmap(res, out, name, heatmap_video)
            except Exception as err:  # one bad video must not stop the folder
                log.warning("%s: %s: %s", path, type(err).__name__, err, exc_info=log.isEnabledFor(10))
                res = VideoPrediction(file=name, label=ERROR, message=f"{type(err).__name__}: {err}")
            rows.append(_csv_row(res))
            if on_result is not None:
                on_result(res)
            if out is not None:
                atomic_write_text(out / PREDICTIONS_NAME,
                                  pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(index=False))
    finally:
        if owned:
            predictor.close()
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))
