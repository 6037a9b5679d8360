"""DeepfakeDetector: a per-frame CNN backbone, an LSTM across time (or none), one logit per clip.

The reference ResNeXt+LSTM project fed ``(B, T, F)`` features to an ``nn.LSTM`` built without
``batch_first``, so its LSTM ran across the *batch* (clips leaked into each other's
predictions) and its head did not see the clip as a sequence. Here the LSTM is
``batch_first=True``: every clip is processed on its own, in frame order
(``tests/test_model.py`` checks both properties).

With ``ModelConfig.temporal="none"`` there is no LSTM: the head scores every frame's features
and the clip logit is the mean of the frame logits (a frame-level detector, as DeepfakeBench's
image detectors and the DFDC winner; on small data sets it learns what an LSTM cannot).

Backbones come from the registry (:mod:`dfdetect.models.backbones`: torchvision and timm
models, their feature size, Grad-CAM layer and normalisation); ``resnext50_32x4d`` (2048-d
features) is the default, small ones (``resnet18``, ``efficientnet_lite0``) suit CPU runs.
"""

from __future__ import annotations

import torch
from torch import nn

from dfdetect.config import ModelConfig
from dfdetect.models.backbones import PretrainedWeightsError, build_backbone

__all__ = ["DeepfakeDetector", "PretrainedWeightsError", "build_model"]

class DeepfakeDetector(nn.Module):
    """Per-frame CNN features -> LSTM over time (or none) -> dropout -> linear: one logit per clip.

    Args:
        cfg: Architecture (backbone, pretrained weights, LSTM size, pooling, dropout);
            default ``ModelConfig()`` (ResNeXt50 with ImageNet weights, which are downloaded).

    Attributes:
        cfg: The config, stored so checkpoints can rebuild the model.
        spec: The backbone's registry entry (feature size, Grad-CAM layer, normalisation).
        backbone: ``(B*T, 3, H, W) -> (B*T, F)`` feature extractor.
        cam_layer: The backbone module whose output ``(B*T, F, h, w)`` (NCHW) Grad-CAM hooks.
        lstm: ``batch_first=True`` LSTM, ``(B, T, F) -> (B, T, D)``; None with ``temporal="none"``
            (then ``D = F``: the frames' features go straight to the head).
        head: ``(B, D) -> (B, 1)``.
        temperature: Calibration temperature (logits are divided by it before the sigmoid);
            1.0 until training fits one on validation logits; stored in checkpoints.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if cfg.pooling not in ("mean", "last"):
            raise ValueError(f"ModelConfig.pooling must be 'mean' or 'last', not {cfg.pooling!r}")
        self.cfg = cfg
        self.backbone, self.spec = build_backbone(cfg.backbone, cfg.pretrained)
        self.feature_dim = self.spec.feature_dim
        if cfg.temporal == "none":
            self.lstm, width = None, self.feature_dim
        else:
            self.lstm = nn.LSTM(self.feature_dim, cfg.hidden, num_layers=cfg.layers,
                                batch_first=True, bidirectional=cfg.bidirectional,
                                dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            width = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(width, 1)
        self.temperature = 1.0
        self.backbone_frozen = False
        self.backbone_bn_frozen = cfg.freeze_bn
        self._frozen_stages = _freeze_stages(self.backbone, cfg.frozen_layers)

    @property
    def frame_level(self) -> bool:
        """True with ``temporal="none"``: every frame has its own score and a video aggregates frames."""
        return self.cfg.temporal == "none"

    @property
    def cam_layer(self) -> nn.Module:
        """The backbone's Grad-CAM module (``layer4`` for ResNe(X)t), output ``(B*T, F, h, w)``.

        A property, not a registered child, so its weights appear once in the state dict.
        """
        return self.backbone.get_submodule(self.spec.cam_layer)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters after the backbone (LSTM and linear head): trained at ``TrainConfig.lr``."""
        lstm = [*self.lstm.parameters()] if self.lstm is not None else []
        return [*lstm, *self.head.parameters()]

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` normalised frames -> ``(B, T, D)`` LSTM outputs (or features)."""
        if x.dim() != 5:
            raise ValueError(f"expected clips of shape (B, T, C, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1)).reshape(b, t, -1)  # (B, T, F)
        if self.lstm is None:
            return feats
        seq, _ = self.lstm(feats)  # (B, T, D), each clip on its own, in frame order
        return seq

    def forward_head(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` LSTM outputs -> ``(B,)`` clip logits (mean over time, or the last step;
        frame-level models always average: the mean of their frame logits)."""
        last = self.cfg.pooling == "last" and self.lstm is not None
        pooled = seq[:, -1] if last else seq.mean(dim=1)
        return self.head(self.dropout(pooled)).squeeze(-1)

    def frame_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip and per-frame logits in one pass: ``(B, T, C, H, W) -> ((B,), (B, T))``.

        Frame ``t``'s logit is the head applied to the LSTM output at ``t`` (with ``mean``
        pooling the clip logit is the mean of the frame logits, the head being linear).
        """
        seq = self.forward_sequence(x)
        return self.forward_head(seq), self.head(self.dropout(seq)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score clips.

        Args:
            x: ``(B, T, C, H, W)`` normalised frames.

        Returns:
            ``(B,)`` logits; ``sigmoid(logit / temperature)`` is P(fake).
        """
        return self.forward_head(self.forward_sequence(x))

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or resume) training the backbone: no gradients, BatchNorm statistics fixed."""
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        for stage in self._frozen_stages:  # ModelConfig.frozen_layers stay frozen throughout
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> DeepfakeDetector:
        """Set training mode; a frozen backbone stays in eval mode (running statistics kept), and
        with ``ModelConfig.freeze_bn`` so do the backbone's BatchNorm layers (small batches)."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        elif mode and self.backbone_bn_frozen:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for stage in self._frozen_stages:
            stage.eval()
        return self


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's stages, input first: the stem, then each block group (timm ``blocks.N``,
    torchvision ``layerN``), then the rest. What ``ModelConfig.frozen_layers`` counts."""
    stem: list[nn.Module] = []
    stages: list[nn.Module] = []
    for name, child in backbone.named_children():
        if not list(child.parameters()):
            continue
        if name == "blocks" and isinstance(child, nn.Sequential):
            stages.extend(child)  # timm EfficientNet / MobileNet: one stage per block group
        elif name.startswith("layer") or stages:
            stages.append(child)
        else:
            stem.append(child)  # conv + norm before the first block group
    return ([nn.ModuleList(stem)] if stem else []) + stages


def _freeze_stages(backbone: nn.Module, count: int) -> list[nn.Module]:
    """Freeze the first ``count`` stages (no gradients, BatchNorm in eval mode); return them."""
    stages = backbone_stages(backbone)
    if count > len(stages):
        raise ValueError(f"ModelConfig.frozen_layers = {count}: the backbone has only "
                         f"{len(stages)} stages")
    for stage in stages[:count]:
        for p in stage.parameters():
            p.requires_grad_(False)
    return stages[:count]


def build_model(cfg: ModelConfig | None = None) -> DeepfakeDetector:
    """Build a :class:`DeepfakeDetector` from its config (see :class:`DeepfakeDetector`)."""
    return DeepfakeDetector(cfg)
