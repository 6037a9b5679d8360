"""The labels CSV (``file,label[,group][,split]``) and the one definition of the classes.

label 1 = FAKE (the positive class, score = P(fake)), 0 = REAL.

The CSV needs a header. ``file`` is a video path relative to the videos folder, ``label`` is
REAL or FAKE (any case). Optional ``group`` names the original video or person a row derives
from (a fake and its source share a group, so splits never separate them; default: the file's
stem) and optional ``split`` fixes the row's set (train, val or test). The header-less two-column
form of the reference project (``video1.mp4,REAL`` on the first line) is read too, with a
warning that says how to add the header.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

import pandas as pd

from dfdetect.media.files import cannot_read, permission_denied
from dfdetect.media.find import find_videos

log = logging.getLogger(__name__)

REAL = 0
FAKE = 1
LABEL_NAMES = {REAL: "REAL", FAKE: "FAKE"}
LABEL_VALUES = {name: value for value, name in LABEL_NAMES.items()}
SPLITS = ("train", "val", "test")
COLUMNS = ("file", "label", "group", "split")
# what counts as "a video on disk" for the unlisted-videos warning (same list as extraction's)
_HEADER_HELP = "the first line must be the header 'file,label' (optionally ',group,split')"


class LabelsError(ValueError):
    """The labels CSV is malformed; the message names the file, the row and what to do."""


def label_to_int(name: str) -> int:
    """Map "REAL"/"FAKE" (any case, surrounding spaces ignored) to 0/1.

    Raises:
        LabelsError: Any other value.
    """
    key = str(name).strip().upper()
    if key not in LABEL_VALUES:
        raise LabelsError(f"unknown label {name!r}: use REAL or FAKE")
    return LABEL_VALUES[key]


def int_to_label(value: int) -> str:
    """Map 0/1 to "REAL"/"FAKE"."""
    return LABEL_NAMES[int(value)]


def _load_table(csv_path: Path) -> pd.DataFrame:
    """The CSV as strings with lower-case column names; header-less two-column files accepted."""
    if not csv_path.is_file():
        raise LabelsError(f"{csv_path}: no such labels file; check the path (on Colab: is Drive mounted?)")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         skipinitialspace=True, skip_blank_lines=False)
    except PermissionError:
        raise LabelsError(permission_denied(csv_path)) from None
    except OSError as err:
        raise LabelsError(cannot_read(csv_path, err)) from None
    except pd.errors.EmptyDataError:
        raise LabelsError(f"{csv_path}: the file is empty; {_HEADER_HELP} followed by one row per video") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LabelsError(f"{csv_path}: not a readable CSV ({err}); {_HEADER_HELP}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    first = 2  # file line of the first row: below the header
    if "file" not in df.columns and len(df.columns) == 2 and str(df.columns[1]).upper() in LABEL_VALUES:
        log.warning("%s has no header: read it as 'file,label' (its first line %r is a video). "
                    "Add the line 'file,label' at the top to silence this warning.",
                    csv_path, ",".join(df.columns))
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         header=None, names=["file", "label"], skipinitialspace=True,
                         skip_blank_lines=False)
        first = 1
    missing = [c for c in ("file", "label") if c not in df.columns]
    if missing:
        raise LabelsError(f"{csv_path}: missing column(s) {missing} (found {list(df.columns)}); "
                          f"{_HEADER_HELP}")
    # blank lines are read (then dropped) so every row keeps its true line number for errors
    df["_line"] = range(first, first + len(df))
    df = df[(df.drop(columns="_line") != "").any(axis=1)]
    if df.empty:
        raise LabelsError(f"{csv_path}: no rows below the header; add one 'file,label' line per video")
    return df


def _clean_file(csv_path: Path, line: int, name: str) -> str:
    """The row's path, "/"-separated and normalised; errors for empty or escaping paths."""
    name = name.strip().replace("\\", "/")
    if not name:
        raise LabelsError(f"{csv_path} line {line}: empty file name; give the video's path "
                          "relative to the videos folder, or delete the line")
    norm = posixpath.normpath(name)
    if posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or re.match(r"[A-Za-z]:", norm):
        raise LabelsError(f"{csv_path} line {line}: {name!r} points outside the videos folder; "
                          "use a path relative to the videos folder (no leading '/', no '..')")
    return norm


def _rows(csv_path: Path, df: pd.DataFrame) -> list[dict[str, str]]:
    rows, seen = [], {}
    for row in df.to_dict("records"):
        line = int(row["_line"])
        file = _clean_file(csv_path, line, str(row["file"]))
        if file in seen:
            raise LabelsError(f"{csv_path} lines {seen[file]} and {line}: {file!r} is listed twice; "
                              "keep one line per video")
        seen[file] = line
        try:
            label = LABEL_NAMES[label_to_int(row["label"])]
        except LabelsError as err:
            raise LabelsError(f"{csv_path} line {line} ({file}): {err}") from None
        split = str(row.get("split", "")).strip().lower()
        if split not in ("", *SPLITS):
            raise LabelsError(f"{csv_path} line {line} ({file}): unknown split {split!r}; "
                              f"use one of {', '.join(SPLITS)} or leave it empty")
        group = str(row.get("group", "")).strip() or Path(file).stem
        rows.append({"file": file, "label": label, "group": group, "split": split})
    return rows


def _check_disk(csv_path: Path, files: list[str], root: Path) -> None:
    """Raise listing every missing file; warn with the count of videos the CSV does not list."""
    if not root.is_dir():
        raise LabelsError(f"{root}: no such videos folder (for {csv_path}); check the path")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise LabelsError(
            f"{csv_path}: {len(missing)} of {len(files)} listed file(s) are not under {root}: "
            f"{', '.join(missing)}. Fix the paths (relative to the videos folder) or remove those lines."
        )
    listed = set(files)
    on_disk = [p.relative_to(root).as_posix() for p in find_videos(root)]
    unlisted = [f for f in on_disk if f not in listed]
    if unlisted:
        log.warning("%d video(s) under %s are not in %s (e.g. %s); they are ignored",
                    len(unlisted), root, csv_path, min(unlisted))


def read_labels(csv_path: str | Path, videos_root: str | Path | None = None) -> pd.DataFrame:
    """Read and validate a labels CSV.

    Args:
        csv_path: CSV with a header: ``file,label`` and optional ``group`` and ``split``.
        videos_root: Folder the ``file`` paths are relative to; when given, every listed file
            must exist and videos on disk that the CSV does not list are counted in a warning.

    Returns:
        DataFrame with columns ``file`` (str, "/"-separated, normalised), ``label``
        ("REAL"/"FAKE", upper case), ``group`` (str; the file's stem when the column is absent or
        empty) and ``split`` ("train"/"val"/"test", "" when absent), one row per CSV line.

    Raises:
        LabelsError: Missing file or column, no rows, unknown label or split, empty or duplicate
            file name, a path outside the videos folder (each naming its line), or listed files
            missing on disk (all of them named).
    """
    csv_path = Path(csv_path)
    rows = _rows(csv_path, _load_table(csv_path))
    if videos_root is not None:
        _check_disk(csv_path, [r["file"] for r in rows], Path(videos_root))
    return pd.DataFrame(rows, columns=list(COLUMNS))
