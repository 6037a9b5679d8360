"""Folder mode: score every video of a folder (or a list) into ``predictions.csv``.

:func:`predict_folder` runs :class:`dfdetect.inference.predictor.Predictor` on each video, one CSV row per
video (:data:`CSV_COLUMNS`) even when some fail, and optionally saves Grad-CAM grids per video.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dfdetect.inference.predictor import ERROR, VideoPrediction, resolve_predictor
from dfdetect.media.files import atomic_write_text
from dfdetect.media.find import VIDEO_SUFFIXES, find_videos
from dfdetect.viz import save_figure, write_heatmap_video

log = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.csv"
HEATMAPS_NAME = "heatmaps"
PREVIOUS_NAME = "previous"  # OUT/previous/<time>/: earlier runs moved aside by a rerun
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


class OutputError(ValueError):
    """The output folder cannot take the results; the message names it and says what to do."""


def _check_out(out: Path) -> None:
    """Fail before any model is loaded when ``out`` cannot hold the results."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder; --out needs a folder (it will hold "
                          f"{PREDICTIONS_NAME} and {HEATMAPS_NAME}/): choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{out}: cannot write there ({err.strerror or err}); choose another "
                          "--out folder or fix its permissions") from None


def _move_earlier_run(out: Path) -> Path | None:
    """Move an earlier run's ``predictions.csv`` and ``heatmaps/`` to ``OUT/previous/<time>/``.

    A rerun into the same folder is common (after fixing a video, or a notebook cell run
    twice), so it is not refused; but the earlier results are never replaced or mixed with the
    new ones (stale heatmaps of videos no longer scored): they are kept, whole, beside them.

    Raises:
        FileExistsError: ``predictions.csv`` exists but dfdetect did not write it.
    """
    csv_path = out / PREDICTIONS_NAME
    if not csv_path.exists():
        return None
    header = csv_path.read_text(errors="replace").split("\n", 1)[0].strip()
    if header != ",".join(CSV_COLUMNS):
        raise FileExistsError(f"{csv_path}: exists and is not a dfdetect predictions file; "
                              "choose another --out folder or move that file")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(csv_path.stat().st_mtime))
    dest, k = out / PREVIOUS_NAME / stamp, 1
    while dest.exists():
        k += 1
        dest = out / PREVIOUS_NAME / f"{stamp}-{k}"
    dest.mkdir(parents=True)
    for name in (PREDICTIONS_NAME, HEATMAPS_NAME):
        if (out / name).exists():
            os.replace(out / name, dest / name)
    log.warning("%s: the earlier run's %s and %s/ were moved to %s", out, PREDICTIONS_NAME,
                HEATMAPS_NAME, dest)
    return dest


def heatmap_name(name: str) -> str:
    """``heatmaps/<name>.png``: the video's relative path, suffix kept, folders mirrored.

    One file per video and the mapping is injective: ``clip.mp4`` and ``clip.mov`` give
    ``clip.mp4.png`` and ``clip.mov.png``; ``sub/x.mp4`` and ``sub__x.mp4`` give
    ``sub/x.mp4.png`` and ``sub__x.mp4.png``.
    """
    return f"{HEATMAPS_NAME}/{name}.png"


def _save_heatmap(res: VideoPrediction, out_dir: Path, rel: str, video: bool) -> str:

    title = f"{res.file}: {res.label} P(fake)={res.score:.3f} (track {res.track})"
    png = save_figure(res.heatmap.figure(title=title), out_dir / rel)
    if video:
        write_heatmap_video(png.with_suffix(".mp4"), res.heatmap.faces, res.heatmap.cams)
    return png.relative_to(out_dir).as_posix()


def _unique(rel: str, used: set[str]) -> str:
    """``rel``, or ``<stem>~<k>.png`` when a list of files repeats a name (same file name in two folders)."""
    k, candidate = 1, rel
    while candidate in used:
        k += 1
        candidate = f"{rel.removesuffix('.png')}~{k}.png"
    used.add(candidate)
    return candidate


def _write_rows(csv_path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    try:
        atomic_write_text(csv_path, pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(index=False))
    except OSError as err:
        kept = f"the {len(rows) - 1} earlier row(s) are kept" if csv_path.exists() else "nothing was kept"
        hint = ("the disk is full: free space or choose another --out folder"
                if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check the --out folder")
        raise OSError(err.errno, f"cannot write it ({err.strerror or err}); {kept}; {hint}",
                      str(csv_path)) from None


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
            ``heatmaps/<name>.png`` go (:func:`heatmap_name`); None writes nothing. Checked
            before the model loads. An earlier run's results there are moved to
            ``OUT/previous/<time>/`` (:func:`_move_earlier_run`); another file named
            ``predictions.csv`` is an error.
        heatmaps: Save a Grad-CAM grid per scored video (needs ``out_dir``).
        heatmap_video: Also save it as ``heatmaps/<name>.mp4``.
        progress: Show a progress bar.
        device: Where to load the model.
        on_result: Called with each result as soon as it is ready (the CLI prints it).
        **options: Passed to :meth:`Predictor.predict` (threshold, clips, aggregate, ...).

    Returns:
        ``pd.DataFrame`` with :data:`CSV_COLUMNS`, one row per video, in order.

    Raises:
        OutputError: ``out_dir`` is a file or not writable (before anything is loaded).
        OSError: Writing the results failed (e.g. a full disk): the run stops, since nothing
            more could be saved; the rows written before are in ``predictions.csv``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = Path(out_dir) if out_dir is not None else None
    if (heatmaps or heatmap_video) and out is None:
        raise ValueError("heatmaps need an output folder: pass out_dir (--out DIR)")
    if out is not None:
        _check_out(out)
    items = list_videos(videos, exclude=out)
    if out is not None:
        _move_earlier_run(out)
    predictor, owned = resolve_predictor(checkpoint, None, device)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    try:
        for path, name in tqdm(items, desc="predict", unit="video", disable=not progress):
            try:
                res = predictor.predict(path, heatmaps=heatmaps or heatmap_video, name=name, **options)
            except Exception as err:  # one bad video must not stop the folder
                log.warning("%s: %s: %s", path, type(err).__name__, err, exc_info=log.isEnabledFor(10))
                res = VideoPrediction(file=name, label=ERROR, message=f"{type(err).__name__}: {err}")
            if out is not None and res.heatmap is not None:
                try:
                    res.heatmap_file = _save_heatmap(res, out, _unique(heatmap_name(name), used),
                                                     heatmap_video)
                except OSError:
                    raise  # the disk's, not the video's: stop (rows so far are saved)
                except Exception as err:  # a drawing failure costs the heatmap, not the verdict
                    log.warning("%s: heatmap not saved: %s: %s", path, type(err).__name__, err,
                                exc_info=log.isEnabledFor(10))
                    res.message = "; ".join(filter(None, [res.message, f"heatmap not saved: {err}"]))
            rows.append(_csv_row(res))
            if on_result is not None:
                on_result(res)
            if out is not None:
                _write_rows(out / PREDICTIONS_NAME, rows)
    finally:
        if owned:
            predictor.close()
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))
