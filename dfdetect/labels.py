"""The labels CSV (``file,label[,group][,split]``) and the one definition of the classes.

label 1 = FAKE (the positive class, score = P(fake)), 0 = REAL.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REAL = 0
FAKE = 1
LABEL_NAMES = {REAL: "REAL", FAKE: "FAKE"}
LABEL_VALUES = {name: value for value, name in LABEL_NAMES.items()}


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


def read_labels(csv_path: str | Path, videos_root: str | Path | None = None) -> pd.DataFrame:
    """Read and validate a labels CSV.

    Args:
        csv_path: CSV with a header: ``file,label`` and optional ``group`` and ``split``.
        videos_root: Folder the ``file`` paths are relative to (checks they exist when given).

    Returns:
        DataFrame with columns ``file`` (str, as written), ``label`` ("REAL"/"FAKE", upper case),
        ``group`` (str; the file's stem when the column is absent or empty) and ``split``
        (str, "" when absent).

    Raises:
        LabelsError: A column is missing or a label is not REAL/FAKE (the row is named).
    """
    csv_path = Path(csv_path)
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("file", "label") if c not in df.columns]
    if missing:
        raise LabelsError(f"{csv_path}: missing column(s) {missing}; the header must be 'file,label'")
    rows = []
    for i, row in enumerate(df.itertuples(index=False), start=2):
        try:
            label = LABEL_NAMES[label_to_int(row.label)]
        except LabelsError as err:
            raise LabelsError(f"{csv_path} line {i}: {err}") from None
        group = str(getattr(row, "group", "") or "").strip() or Path(row.file).stem
        rows.append({"file": row.file.strip(), "label": label, "group": group,
                     "split": str(getattr(row, "split", "") or "").strip().lower()})
    return pd.DataFrame(rows, columns=["file", "label", "group", "split"])
