"""Atomic file writes: a reader never sees a half-written file.

Everything dfdetect produces (face videos, manifests, checkpoints, reports) is written to a
temporary name in the destination folder and renamed into place with :func:`os.replace`,
which is atomic on POSIX and Windows file systems (Google Drive's FUSE mount included).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"  # temporary files carry this in their name; never read as outputs
# Every process pool and DataLoader with workers starts its children with this method. Never
# "fork": once PyAV/FFmpeg or LiteRT have started threads in the parent (decoding one clip is
# enough), a forked child can deadlock on a lock held by a thread that does not exist in it
# (seen with PyAV 19 / FFmpeg slice threads on Python 3.13: training hung at "cache: 0%").
MP_START_METHOD = "spawn"


def mp_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for every worker process dfdetect starts (see MP_START_METHOD)."""
    return multiprocessing.get_context(MP_START_METHOD)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the suffix (so writers that look at it, like video muxers, work)
    and is removed if the block raises.

    Example:
        >>> with atomic_path("out/face.mp4") as tmp:  # doctest: +SKIP
        ...     write_video(tmp, frames)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_MARK}{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files left in ``folder`` (not recursive) by a killed run; return the count."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(TMP_MARK)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def permission_denied(path: str | Path) -> str:
    """The one-line message for a file the user may not read (the file is fine: never re-encode)."""
    return (f"{path}: permission denied reading it; fix its permissions (chmod a+r) or copy it "
            "somewhere readable")


def cannot_read(path: str | Path, err: OSError) -> str:
    """The one-line message for any other OS error reading ``path`` (a disk or mount problem)."""
    return (f"{path}: cannot be read ({err.strerror or err}); check the disk or mount "
            "(on Colab: is Drive mounted?)")
