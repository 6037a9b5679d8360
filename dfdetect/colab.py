"""Colab helpers for the notebooks: where am I, where is the data, which device. A leaf module.

Nothing here runs at import. On Colab, :func:`data_root` mounts Google Drive (once) and
returns ``MyDrive/dfdetect``; elsewhere it returns the folder it is given, so the same
notebook runs headless in the test suite and interactively on Colab.
"""

from __future__ import annotations

import sys
from pathlib import Path

DRIVE_MOUNT = Path("/content/drive")
DRIVE_DEFAULT = DRIVE_MOUNT / "MyDrive" / "dfdetect"


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def data_root(path: str | Path | None = None, *, mount: bool = True) -> Path:
    """The folder every notebook path is relative to, created if missing.

    Args:
        path: An explicit folder; empty/None means ``MyDrive/dfdetect`` on Colab (Drive is
            mounted first) and the current directory elsewhere.
        mount: Mount Google Drive when on Colab and a Drive path is used.

    Raises:
        FileNotFoundError: A Drive path was asked for outside Colab.
    """
    if path:
        root = Path(path).expanduser()
    elif in_colab():
        root = DRIVE_DEFAULT
    else:
        root = Path.cwd()
    if str(root).startswith(str(DRIVE_MOUNT)):
        if not in_colab():
            raise FileNotFoundError(f"{root} is a Google Drive path: run this notebook on Colab or pass a local folder")
        if mount and not (DRIVE_MOUNT / "MyDrive").is_dir():
            from google.colab import drive  # only exists on Colab

            drive.mount(str(DRIVE_MOUNT))
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def resolve(root: str | Path, path: str | Path) -> Path:
    """``path`` if absolute, else ``root / path``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def describe_device() -> str:
    """One line saying which accelerator torch sees and what mixed precision training will use."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = torch.cuda.is_bf16_supported()
        amp = "bf16" if bf16 else "fp16 + GradScaler"
        return f"GPU: {name} ({torch.cuda.device_count()} visible); mixed precision: {amp}"
    return ("No GPU: running on CPU (fp32). On Colab choose Runtime > Change runtime type > GPU; "
            "on CPU use small settings (few frames, 112 px, a small backbone).")
