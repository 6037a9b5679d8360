"""The one video finder: which files under a folder are videos (extraction, labels, predict)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dfdetect.media.files import TMP_MARK

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video_name(name: str) -> bool:
    """True for a file name with a video suffix that is neither hidden nor one of our temporaries."""
    return (Path(name).suffix.lower() in VIDEO_SUFFIXES and not name.startswith(".")
            and TMP_MARK not in name)


def find_videos(root: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Every video under ``root``, recursively, sorted by relative path.

    One rule for every stage: files with a :data:`VIDEO_SUFFIXES` suffix; hidden files and
    folders (``.name``) and dfdetect's own temporaries (``.tmp-``) are skipped; symbolic links
    are followed once (a folder link loop is not entered twice, with a warning naming it). A
    video-named link that cannot be followed (a loop, or a dangling link) is returned, so that
    the stage reading it reports it by name instead of skipping it silently.

    Args:
        root: The videos folder.
        exclude: A folder whose contents are skipped (e.g. an output folder inside ``root``).

    Returns:
        Paths under ``root`` (not resolved).
    """
    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    found, seen = [], set()
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or a folder linked twice
            log.warning("%s: skipped, a symbolic link back to %s (already searched)", dirpath, real)
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if skip is not None and Path(real).is_relative_to(skip):
            dirnames[:] = []
            continue
        for name in names:
            path = Path(dirpath, name)
            if is_video_name(name) and (path.is_file() or path.is_symlink()):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
