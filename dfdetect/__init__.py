"""dfdetect: deepfake video detection (face extraction, augmentation, ResNeXt50+LSTM, inference).

Nothing runs at import; submodules are imported on first use of a public name.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (lazy, so `import dfdetect` stays cheap)
_PUBLIC = {
    **dict.fromkeys(["FaceConfig", "ExtractConfig", "DataConfig", "ModelConfig", "TrainConfig",
                     "RunConfig"], "config"),
    **dict.fromkeys(["REAL", "FAKE", "read_labels"], "labels"),
    **dict.fromkeys(["read_manifest", "merge_manifests"], "manifest"),
    **dict.fromkeys(["VideoError", "probe", "read_frames", "uniform_indices"], "video"),
    **dict.fromkeys(["FaceBox", "FaceCropper"], "faces"),
    **dict.fromkeys(["process_videos", "create_face_videos"], "extract"),
    **dict.fromkeys(["augment_clip", "augmentation_figure"], "augment"),
    "augment_manifest": "augment_copies",
    "self_blend": "selfblend",
    **dict.fromkeys(["FrameSequenceDataset", "split_manifest", "make_loader", "preprocess_clip"], "data"),
    **dict.fromkeys(["DeepfakeDetector", "build_model"], "model"),
    **dict.fromkeys(["train_epoch", "test", "fit"], "engine"),
    **dict.fromkeys(["save_checkpoint", "load_checkpoint", "load_model", "export_model"], "checkpoint"),
    **dict.fromkeys(["predict", "predict_folder", "VideoPrediction"], "predict"),
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"dfdetect.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'dfdetect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
