"""dfdetect: deepfake video detection (face extraction, augmentation, ResNeXt50+LSTM, inference).

The public API, one subpackage per notebook stage (imports flow in this order, never back):
``media`` -> ``extraction`` (01) -> ``augment`` (02) -> ``data`` -> ``models`` -> ``training``
(03) -> ``inference`` (04). ``demo`` is the offline demo, fenced off from the core. Importing
dfdetect has no side effects: no environment, ``sys.path`` or logging changes, and the face detector (LiteRT) is
loaded only when a :class:`FaceCropper` is made.
"""

__version__ = "0.2.0"

from dfdetect.augment import augment_clip, augment_manifest, self_blend
from dfdetect.config import (
    DataConfig,
    ExtractConfig,
    FaceConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from dfdetect.data.dataset import FrameSequenceDataset
from dfdetect.data.loaders import make_loader
from dfdetect.data.preprocess import preprocess_clip
from dfdetect.data.splits import split_manifest
from dfdetect.extraction import (
    FaceBox,
    FaceCropper,
    create_face_videos,
    merge_manifests,
    process_videos,
    read_manifest,
)
from dfdetect.inference import VideoPrediction, predict, predict_folder
from dfdetect.labels import FAKE, REAL, read_labels
from dfdetect.media import VideoError, probe, read_frames
from dfdetect.models import (
    DeepfakeDetector,
    build_model,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from dfdetect.training import evaluate, fit, train_epoch

__all__ = [
    "FAKE",
    "REAL",
    "DataConfig",
    "DeepfakeDetector",
    "ExtractConfig",
    "FaceBox",
    "FaceConfig",
    "FaceCropper",
    "FrameSequenceDataset",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "VideoError",
    "VideoPrediction",
    "augment_clip",
    "augment_manifest",
    "build_model",
    "create_face_videos",
    "evaluate",
    "export_model",
    "fit",
    "load_checkpoint",
    "load_model",
    "make_loader",
    "merge_manifests",
    "predict",
    "predict_folder",
    "preprocess_clip",
    "probe",
    "process_videos",
    "read_frames",
    "read_labels",
    "read_manifest",
    "save_checkpoint",
    "self_blend",
    "split_manifest",
    "train_epoch",
]
