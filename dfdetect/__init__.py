"""dfdetect: deepfake video detection (face extraction, augmentation, ResNeXt50+LSTM, inference).

Nothing runs at import; submodules are imported on first use of a public name.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (lazy, so `import dfdetect` stays cheap)
_PUBLIC = {
    "FaceConfig": "config", "ExtractConfig": "config", "DataConfig": "config",
    "ModelConfig": "config", "TrainConfig": "config", "RunConfig": "config",
    "REAL": "labels", "FAKE": "labels", "read_labels": "labels",
    "read_manifest": "manifest", "merge_manifests": "manifest",
    "VideoError": "video", "probe": "video", "read_frames": "video", "uniform_indices": "video",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"dfdetect.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'dfdetect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
