"""Configuration: one frozen dataclass per concern, every field defaulted and commented.

Every number that changes results lives here. Configs load strictly: an unknown key is an
error that names it, so a typo in a notebook parameter or a checkpoint from a newer version
never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dfdetect.media.files import atomic_write_text

T = TypeVar("T")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A configuration dictionary has an unknown key or a value of the wrong kind."""


def _check(cfg: Any, rules: dict[str, tuple[Any, str]]) -> None:
    """Raise ConfigError naming the first field of ``cfg`` whose value breaks its rule.

    ``rules``: field -> (predicate on the value, what a valid value is).
    """
    for name, (ok, expected) in rules.items():
        value = getattr(cfg, name)
        try:
            valid = bool(ok(value))
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(f"{type(cfg).__name__}.{name} = {value!r}: must be {expected}")


def _int_at_least(low: int) -> Any:
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low


def _fraction(v: Any) -> bool:
    return isinstance(v, numbers.Real) and 0.0 <= v <= 1.0


@dataclass(frozen=True)
class FaceConfig:
    """How faces are found and cropped (extraction and prediction use the same one)."""

    model: str = "full"  # "full" (full-range BlazeFace, video frames) or "short" (close-ups only)
    min_score: float = 0.5  # detector confidence below which a box is ignored
    margin: float = 0.3  # extra border around the box, as a fraction of its side (DFDC winner: 0.3)
    size: int = 224  # side of the square face crop written to face videos, pixels
    max_gap: int = 5  # longest run of frames without a detection bridged by interpolation
    detect_every: int = 1  # run the detector on every k-th frame, track in between
    track_iou: float = 0.3  # IoU above which a detection continues a track
    keep_track: str = "largest"  # which track is the video's face: "largest" or "most_confident"
    all_tracks: bool = False  # also write every other track as its own face video
    min_track_frames: int = 8  # shortest track written when all_tracks is on

    def __post_init__(self) -> None:
        _check(self, {
            "model": (lambda v: v in ("full", "short"), "'full' or 'short'"),
            "min_score": (_fraction, "a score in [0, 1]"),
            "margin": (lambda v: 0 <= v < float("inf"), "a fraction >= 0 of the box side"),
            "size": (lambda v: _int_at_least(2)(v) and v % 2 == 0,
                     "a positive even number of pixels (H.264 needs it)"),
            "max_gap": (_int_at_least(0), "an integer >= 0 (frames)"),
            "detect_every": (_int_at_least(1), "an integer >= 1 (1 = detect on every frame)"),
            "track_iou": (_fraction, "an overlap in [0, 1]"),
            "keep_track": (lambda v: v in ("largest", "most_confident"), "'largest' or 'most_confident'"),
            "min_track_frames": (_int_at_least(1), "an integer >= 1 (frames)"),
        })


@dataclass(frozen=True)
class ExtractConfig:
    """Which frames of each source video are read during extraction."""

    sampling: str = "all"  # "all": every frame up to max_frames; "uniform": num_frames evenly spaced
    max_frames: int = 0  # with sampling="all": stop after this many frames (0 = no limit)
    num_frames: int = 32  # with sampling="uniform": frames taken evenly across the video
    min_face_frames: int = 4  # fewer frames with a face -> "no_face"; fewer frames at all -> "too_short"
    crf: int = 18  # H.264 quality of face videos (lower = better; 18 is visually lossless)

    def __post_init__(self) -> None:
        _check(self, {
            "sampling": (lambda v: v in ("all", "uniform"), "'all' or 'uniform'"),
            "max_frames": (_int_at_least(0), "an integer >= 0 (0 = no limit)"),
            "num_frames": (_int_at_least(1), "an integer >= 1 (frames taken evenly)"),
            "min_face_frames": (_int_at_least(1), "an integer >= 1 (frames)"),
            "crf": (lambda v: _int_at_least(0)(v) and v <= 51, "an integer in [0, 51]"),
        })


@dataclass(frozen=True)
class DataConfig:
    """What the model sees: clip length, size and normalisation."""

    frames: int = 20  # T, frames per clip (evaluation and prediction)
    train_frames: int = 0  # frames per training clip; 0 = ``frames`` (frame-level models: 2-4)
    size: int = 112  # H = W of the frames fed to the model (112-224)
    mean: tuple[float, float, float] | None = None  # normalisation; None = the backbone's weights'
    std: tuple[float, float, float] | None = None  # (filled in by fit, stored in the checkpoint)
    train_stride: int = 0  # training clip stride in frames; 0 = random stride that fits the video
    cache: bool = True  # decode each face video once into a uint8 memmap: 5x faster (False: decode)
    cache_dir: str = ""  # folder of that cache; "" = MANIFEST_DIR/cache (Colab: use the local disk)
    augment: bool = False  # clip-consistent on-the-fly augmentation of training clips
    self_blend_prob: float = 0.0  # chance a REAL training clip is turned into a self-blended FAKE
    val_fraction: float = 0.15  # of groups, when the manifest has no split column
    test_fraction: float = 0.15  # of groups, likewise
    aggregate: str = "mean"  # video score from frame/clip scores (dfdetect.data.aggregation.AGGREGATES)
    balance: str = "sampler"  # class imbalance: "sampler", "batch" (every batch half FAKE), "loss", "none"
    seed: int = 0  # split and sampling seed

    def __post_init__(self) -> None:
        _check(self, {
            "frames": (_int_at_least(1), "an integer >= 1 (frames per clip)"),
            "train_frames": (_int_at_least(0), "an integer >= 0 (0 = frames)"),
            "size": (_int_at_least(16), "an integer >= 16 (pixels)"),
            "mean": (lambda v: v is None or len(v) == 3, "None (the backbone's) or 3 numbers (R, G, B)"),
            "std": (lambda v: v is None or (len(v) == 3 and min(v) > 0),
                    "None (the backbone's) or 3 positive numbers (R, G, B)"),
            "train_stride": (_int_at_least(0), "an integer >= 0 (0 = random stride)"),
            "self_blend_prob": (_fraction, "a probability in [0, 1]"),
            "val_fraction": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
            "test_fraction": (lambda v: 0 <= v < 1 and v + self.val_fraction < 1,
                              "a fraction in [0, 1) with val_fraction + test_fraction < 1"),
            "aggregate": (lambda v: v in ("mean", "logit_mean", "median", "max", "confident"),
                          "'mean', 'logit_mean', 'median', 'max' or 'confident'"),
            "balance": (lambda v: v in ("sampler", "batch", "loss", "none"),
                        "'sampler', 'batch', 'loss' or 'none'"),
        })


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the clip-consistent augmentations (each transform is on with its probability)."""

    flip_prob: float = 0.5  # horizontal flip
    rotate_prob: float = 0.5  # in-plane rotation ...
    max_angle: float = 10.0  # ... uniform in [-max_angle, max_angle] degrees
    brightness_prob: float = 0.5  # brightness gain ...
    brightness: float = 0.2  # ... uniform in [1 - b, 1 + b]
    contrast_prob: float = 0.5  # contrast around the clip's mean grey ...
    contrast: float = 0.2  # ... factor uniform in [1 - c, 1 + c]
    blur_prob: float = 0.3  # Gaussian blur ...
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # ... sigma range, pixels of a 224-px face
    noise_prob: float = 0.3  # Gaussian noise ...
    noise_std: tuple[float, float] = (2.0, 8.0)  # ... std range, in 0-255 intensity units
    shift_prob: float = 0.0  # translation of the whole clip (crop jitter of the face box) ...
    shift: float = 0.05  # ... up to this fraction of the side in x and y (edges replicated)
    compress_prob: float = 0.5  # re-compression, JPEG or H.264 with equal chance ...
    jpeg_quality: tuple[int, int] = (30, 90)  # ... JPEG quality range
    h264_crf: tuple[int, int] = (23, 40)  # ... H.264 CRF range (higher = worse)


@dataclass(frozen=True)
class SelfBlendConfig:
    """Ranges of the self-blending parameters (sizes as fractions of the face's size)."""

    mask: str = "random"  # "hull" (keypoints, extended to brow and chin), "ellipse" or "random"
    mask_scale: tuple[float, float] = (0.85, 1.1)  # mask size about its centre
    morph: float = 0.06  # erode (-) / dilate (+) the mask by up to this fraction
    mask_blur: tuple[float, float] = (0.02, 0.08)  # Gaussian sigma of the mask edge, fraction
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # blend ratio drawn from these
    brightness: float = 0.1  # source colour jitter: gain in [1 - b, 1 + b] ...
    contrast: float = 0.1  # ... contrast factor in [1 - c, 1 + c] ...
    saturation: float = 0.1  # ... saturation factor in [1 - s, 1 + s] ...
    channel: float = 0.05  # ... and per-channel (R, G, B) gains in [1 - g, 1 + g] (colour cast)
    sharpness: tuple[float, float] = (0.3, 2.0)  # source sharpness factor (<1 blurs, >1 sharpens)
    max_shift: float = 0.03  # source shift, up to this fraction in x and y
    scale: float = 0.04  # source scale in [1 - s, 1 + s]


@dataclass(frozen=True)
class ModelConfig:
    """DeepfakeDetector architecture."""

    backbone: str = "resnext50_32x4d"  # a registered name (dfdetect.models.backbones.list_backbones())
    pretrained: str = "imagenet"  # "imagenet" (download), "offline" (efficientnet_lite0), "none", a path
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics fixed (small batches)
    temporal: str = "lstm"  # "lstm" over the frames, or "none": a logit per frame, clip = their mean
    frozen_layers: int = 0  # first N stages of the backbone kept frozen (stem = 1; 0 = none)
    hidden: int = 2048  # LSTM hidden size
    layers: int = 1  # LSTM layers
    bidirectional: bool = False  # LSTM direction
    dropout: float = 0.4  # before the linear head
    pooling: str = "mean"  # clip summary fed to the head: "mean" of LSTM outputs over time, or "last"

    def __post_init__(self) -> None:
        _check(self, {
            "backbone": (lambda v: isinstance(v, str) and v != "", "a registered backbone name"),
            "pretrained": (lambda v: isinstance(v, str) and v != "",
                           "'imagenet', 'offline', 'none' or a weights file path"),
            "hidden": (_int_at_least(1), "an integer >= 1"),
            "layers": (_int_at_least(1), "an integer >= 1"),
            "dropout": (lambda v: 0 <= v < 1, "a probability in [0, 1)"),
            "pooling": (lambda v: v in ("mean", "last"), "'mean' or 'last'"),
            "temporal": (lambda v: v in ("lstm", "none"), "'lstm' or 'none' (frame-level)"),
            "frozen_layers": (_int_at_least(0), "an integer >= 0"),
        })


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation."""

    epochs: int = 20  # maximum epochs
    batch_size: int = 8  # clips per step (per process under DDP)
    lr: float = 1e-4  # AdamW peak learning rate of the LSTM and head
    backbone_lr_scale: float = 1.0  # backbone's learning rate = lr * this (fine-tuning: 0.1)
    weight_decay: float = 1e-3  # AdamW weight decay
    warmup_epochs: float = 0.5  # linear warm-up, then cosine decay
    warmup_steps: int = 0  # > 0: the warm-up in optimiser steps instead (overrides warmup_epochs)
    steps_per_epoch: int = 0  # > 0: an epoch is this many batches drawn from train (0 = one pass)
    time_budget: float = 0.0  # > 0: stop training after this many seconds (the schedule follows it)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    amp: str = "auto"  # "auto" (bf16 / fp16+scaler / fp32 from the device), "bf16", "fp16", "off"
    channels_last: bool = True  # on GPU only
    freeze_backbone_epochs: int = 0  # backbone frozen for the first N epochs
    patience: int = 5  # early stopping on validation AUC (0 = off)
    workers: int = 2  # DataLoader workers
    seed: int = 0  # model init and sampling seed
    calibrate: bool = True  # fit a temperature on validation logits after training (ECE before/after)

    def __post_init__(self) -> None:
        _check(self, {
            "epochs": (_int_at_least(0), "an integer >= 0"),
            "batch_size": (_int_at_least(1), "an integer >= 1"),
            # 0 is allowed (a frozen run, used in tests); the CLI's --lr asks for > 0
            "lr": (lambda v: 0 <= v < float("inf"), "a finite learning rate >= 0"),
            "backbone_lr_scale": (lambda v: 0 <= v < float("inf"), ">= 0 (0 = a frozen backbone)"),
            "weight_decay": (lambda v: 0 <= v < float("inf"), ">= 0"),
            "warmup_epochs": (lambda v: 0 <= v < float("inf"), ">= 0 (epochs)"),
            "warmup_steps": (_int_at_least(0), "an integer >= 0 (steps)"),
            "steps_per_epoch": (_int_at_least(0), "an integer >= 0 (0 = one pass over train)"),
            "time_budget": (lambda v: 0 <= v < float("inf"), ">= 0 seconds (0 = no limit)"),
            "grad_clip": (lambda v: 0 <= v < float("inf"), ">= 0 (0 = off)"),
            "amp": (lambda v: v in ("auto", "bf16", "fp16", "off"), "'auto', 'bf16', 'fp16' or 'off'"),
            "freeze_backbone_epochs": (_int_at_least(0), "an integer >= 0"),
            "patience": (_int_at_least(0), "an integer >= 0 (0 = off)"),
            "workers": (_int_at_least(0), "an integer >= 0"),
        })


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; written to RUN_DIR/config.json and into checkpoints."""

    face: FaceConfig = field(default_factory=FaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # with DataConfig.augment
    self_blend: SelfBlendConfig = field(default_factory=SelfBlendConfig)  # DataConfig.self_blend_prob
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a config dataclass (nested) to plain Python types (lists, not tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build config ``cls`` from a (possibly partial) dict, strictly.

    Args:
        cls: A config dataclass type, e.g. ``RunConfig``.
        data: Field values; missing fields keep their defaults; nested configs as dicts.

    Raises:
        ConfigError: A key is not a field of ``cls`` (the message names it and lists the valid ones).
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if default is not None and dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(default, value)  # nested config given as a dict
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def replace(cfg: T, **changes: Any) -> T:
    """Return ``cfg`` with fields changed, strictly (unknown names raise ConfigError)."""
    merged = to_dict(cfg)
    merged.update({k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in changes.items()})
    return from_dict(type(cfg), merged)


def save_json(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as indented JSON, atomically (temporary file, then rename)."""

    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2) + "\n")


def load_json(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_json`, strictly."""
    return from_dict(cls, json.loads(Path(path).read_text()))
