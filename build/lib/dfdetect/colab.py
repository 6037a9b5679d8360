"""Colab helpers for the notebooks: where am I, where is the data, which device. A leaf module.

Nothing here runs at import. On Colab, :func:`data_root` mounts Google Drive (once) and
returns ``MyDrive/dfdetect``; elsewhere it returns the folder it is given, so the same
notebook runs headless in the test suite and interactively on Colab.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dfdetect.training.setup import select_precision

DRIVE_MOUNT = Path("/content/drive")
DRIVE_DEFAULT = DRIVE_MOUNT / "MyDrive" / "dfdetect"
LOCAL_CACHE = Path("/content/dfdetect_cache")  # Colab's local disk: fast, not Drive's quota
# Where the notebooks' install cell gets dfdetect from: one place (the badge test reads it too).
# Point it at a fork by changing the repository path; keep a released tag, not a branch.
REPOSITORY = "github.com/dfdetect/dfdetect"
RELEASE = "v0.2.0"
INSTALL_SPEC = f"dfdetect @ git+https://{REPOSITORY}@{RELEASE}"


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
        amp = "bf16" if select_precision("cuda:0").dtype == torch.bfloat16 else "fp16 + GradScaler"
        return f"GPU: {name} ({torch.cuda.device_count()} visible); mixed precision: {amp}"
    return ("No GPU: running on CPU (fp32). On Colab choose Runtime > Change runtime type > GPU; "
            "on CPU use small settings (few frames, 112 px, a small backbone).")


def cache_dir(path: str | Path | None = None) -> str:
    """Where training keeps its decoded frame cache (``DataConfig.cache_dir``).

    Args:
        path: An explicit folder; empty means Colab's local disk (``/content/dfdetect_cache``)
            on Colab, so that the ~11 MB per 300-frame video neither fills Drive nor is
            memory-mapped through Drive's FUSE mount, and the manifest's folder elsewhere.

    Returns:
        The folder as a string, or "" for the manifest's folder.
    """
    if path:
        return str(Path(path).expanduser())
    return str(LOCAL_CACHE) if in_colab() else ""
