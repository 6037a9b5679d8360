"""Models: the backbone registry, DeepfakeDetector, checkpoints (one writer, one reader)."""

from dfdetect.models.checkpoint import (
    CheckpointError,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from dfdetect.models.detector import DeepfakeDetector, PretrainedWeightsError, build_model

__all__ = ["CheckpointError", "DeepfakeDetector", "PretrainedWeightsError", "build_model",
           "export_model", "load_checkpoint", "load_model", "save_checkpoint"]
