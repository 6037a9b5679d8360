"""DeepfakeDetector: a per-frame CNN backbone, an LSTM across time, one logit per clip.

The reference ResNeXt+LSTM project fed ``(B, T, F)`` features to an ``nn.LSTM`` built without
``batch_first``, so its LSTM ran across the *batch* (clips leaked into each other's
predictions) and its head did not see the clip as a sequence. Here the LSTM is
``batch_first=True``: every clip is processed on its own, in frame order
(``tests/test_model.py`` checks both properties).

Backbones are torchvision classification models used as feature extractors (their
classifier replaced by ``nn.Identity``); ``resnext50_32x4d`` (2048-d features) is the
default, smaller ones (``resnet18``, ``mobilenet_v3_small``...) are for quick CPU experiments.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from dfdetect.config import ModelConfig

log = logging.getLogger(__name__)

HEAD_NAMES = ("fc", "classifier")  # where torchvision classifiers keep their final layer
CAM_LAYER_NAMES = ("layer4", "trunk_output", "features")  # last conv stage, by model family


class PretrainedWeightsError(RuntimeError):
    """Backbone weights were asked for and cannot be obtained; the message names the alternatives."""


def _head_linear(net: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """Find the final ``nn.Linear`` of a torchvision classifier: ``(parent, attribute, layer)``."""
    for name in HEAD_NAMES:
        head = getattr(net, name, None)
        if isinstance(head, nn.Linear):
            return net, name, head
        if isinstance(head, nn.Sequential):
            linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if linears:
                return head, str(linears[-1]), head[linears[-1]]
    raise ValueError(
        f"backbone {type(net).__name__} has no final Linear in {HEAD_NAMES}; use a torchvision "
        "ResNet/ResNeXt, RegNet, EfficientNet, MobileNet, ConvNeXt or DenseNet"
    )


def _cam_layer_name(net: nn.Module) -> str:
    for name in CAM_LAYER_NAMES:
        if isinstance(getattr(net, name, None), nn.Module):
            return name
    raise ValueError(f"backbone {type(net).__name__} has none of {CAM_LAYER_NAMES} for Grad-CAM")


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Download (or take from the torch hub cache) torchvision's default ImageNet weights."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
    except Exception as err:  # URLError, socket errors, HTTP errors, hash mismatch
        raise PretrainedWeightsError(
            f"ImageNet weights for backbone {name!r} could not be downloaded from {weights.url} "
            f"({type(err).__name__}: {err}). Either download that file elsewhere and pass it with "
            "--weights PATH (ModelConfig.pretrained=PATH), or train from scratch with "
            "--no-pretrained (ModelConfig.pretrained='none')."
        ) from err


def _file_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """Read a local weights file (.pth/.pt state dict, or .safetensors) without unpickling code."""
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: no such weights file for backbone {name!r}; check the path, or use "
            "--no-pretrained to train from scratch"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedWeightsError(
            f"{path}: cannot be read as a weights file ({type(err).__name__}: {err}); pass "
            f"torchvision's {name!r} ImageNet .pth file or a .safetensors file"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def _load_backbone_weights(net: nn.Module, state: dict, head_prefix: str, source: str) -> None:
    """Load ``state`` into ``net`` ignoring the classification head; other mismatches are errors."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = {k for k in net.state_dict() if not k.startswith(head_prefix)}
    given = {k for k in state if not k.startswith(head_prefix)}
    if own != given:
        missing, unexpected = sorted(own - given)[:5], sorted(given - own)[:5]
        raise PretrainedWeightsError(
            f"{source}: does not match the backbone (missing {missing}, unexpected {unexpected}); "
            "pass weights of the same torchvision architecture as ModelConfig.backbone"
        )
    net.load_state_dict({k: state[k] for k in given}, strict=False)


def build_backbone(cfg: ModelConfig) -> tuple[nn.Module, int, str]:
    """Build the per-frame feature extractor.

    Args:
        cfg: Model config; ``backbone`` is a torchvision classification model name and
            ``pretrained`` is "imagenet", "none" or a path to a weights file.

    Returns:
        ``(backbone, feature_dim, cam_name)``: backbone maps ``(N, 3, H, W) -> (N, feature_dim)``;
        ``backbone.<cam_name>`` is its last convolutional stage, output ``(N, C', h, w)``.

    Raises:
        ValueError: Unknown backbone name or one without a recognisable classifier.
        PretrainedWeightsError: ImageNet weights cannot be downloaded, or the weights file is
            missing, unreadable or of another architecture. There is no silent fallback.
    """
    names = torchvision.models.list_models(module=torchvision.models)
    if cfg.backbone not in names:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose a torchvision model, e.g. "
                         "resnext50_32x4d (default), resnet18, efficientnet_b0, mobilenet_v3_small")
    net = torchvision.models.get_model(cfg.backbone, weights=None)
    parent, attr, linear = _head_linear(net)
    head_prefix = next(n for n in HEAD_NAMES if hasattr(net, n)) + "."
    if cfg.pretrained == "imagenet":
        state, source = _imagenet_state_dict(cfg.backbone), f"ImageNet weights of {cfg.backbone}"
        _load_backbone_weights(net, state, head_prefix, source)
    elif cfg.pretrained not in ("none", ""):
        path = Path(cfg.pretrained).expanduser()
        _load_backbone_weights(net, _file_state_dict(path, cfg.backbone), head_prefix, str(path))
        log.info("backbone %s initialised from %s", cfg.backbone, path)
    setattr(parent, attr, nn.Identity())
    return net, linear.in_features, _cam_layer_name(net)


class DeepfakeDetector(nn.Module):
    """Per-frame CNN features -> LSTM over time -> dropout -> linear: one logit per clip.

    Args:
        cfg: Architecture (backbone, pretrained weights, LSTM size, pooling, dropout);
            default ``ModelConfig()`` (ResNeXt50 with ImageNet weights, which are downloaded).

    Attributes:
        cfg: The config, stored so checkpoints can rebuild the model.
        backbone: ``(B*T, 3, H, W) -> (B*T, F)`` feature extractor.
        cam_layer: The backbone module whose output ``(B*T, C', h, w)`` Grad-CAM hooks.
        lstm: ``batch_first=True`` LSTM, ``(B, T, F) -> (B, T, D)``.
        head: ``(B, D) -> (B, 1)``.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if cfg.pooling not in ("mean", "last"):
            raise ValueError(f"ModelConfig.pooling must be 'mean' or 'last', not {cfg.pooling!r}")
        self.cfg = cfg
        self.backbone, self.feature_dim, self._cam_name = build_backbone(cfg)
        self.lstm = nn.LSTM(self.feature_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            bidirectional=cfg.bidirectional,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden * (2 if cfg.bidirectional else 1), 1)
        self.backbone_frozen = False

    @property
    def cam_layer(self) -> nn.Module:
        """The backbone's last convolutional stage (``layer4`` for ResNe(X)t), output ``(B*T, C', h, w)``.

        A property, not a registered child, so its weights appear once in the state dict.
        """
        return getattr(self.backbone, self._cam_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score clips.

        Args:
            x: ``(B, T, C, H, W)`` normalised frames.

        Returns:
            ``(B,)`` logits; ``sigmoid(logit)`` is P(fake).
        """
        if x.dim() != 5:
            raise ValueError(f"expected clips of shape (B, T, C, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1)).reshape(b, t, -1)  # (B, T, F)
        seq, _ = self.lstm(feats)  # (B, T, D), each clip on its own, in frame order
        pooled = seq.mean(dim=1) if self.cfg.pooling == "mean" else seq[:, -1]
        return self.head(self.dropout(pooled)).squeeze(-1)

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or resume) training the backbone: no gradients, BatchNorm statistics fixed."""
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> DeepfakeDetector:
        """Set training mode; a frozen backbone stays in eval mode (running statistics kept)."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


def build_model(cfg: ModelConfig | None = None) -> DeepfakeDetector:
    """Build a :class:`DeepfakeDetector` from its config (see :class:`DeepfakeDetector`)."""
    return DeepfakeDetector(cfg)
