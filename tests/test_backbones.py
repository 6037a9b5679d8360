"""The backbone registry: every entry builds, runs, trains and exposes an NCHW Grad-CAM layer;
the offline ImageNet weights are mapped right; fine-tuning them beats training from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from face_fixtures import SAMPLE
from tiny import TINY_MODEL
from torch import nn

from dfdetect.config import ModelConfig
from dfdetect.demo import synth
from dfdetect.inference import GradCamError, grad_cam
from dfdetect.models import build_model
from dfdetect.models.backbones import (
    BackboneSpec,
    PretrainedWeightsError,
    backbone_spec,
    build_backbone,
    list_backbones,
    map_lite0_state_dict,
    register_backbone,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HEAVY = {"efficientnet_b7", "efficientnet_b4", "xception", "resnext50_32x4d", "resnet50"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in list_backbones()])
def test_every_registered_backbone_builds_runs_learns_and_has_an_nchw_cam_layer(name):
    spec = backbone_spec(name)
    model = build_model(ModelConfig(backbone=name, pretrained="none", hidden=8))
    x = torch.randn(2, 2, 3, 64, 64)
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model.eval()  # deterministic: dropout off, BatchNorm running statistics
    logits = model(x)
    handle.remove()
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert len(seen[0]) == 4 and seen[0][1] == spec.cam_dim, f"{name}: cam layer is not NCHW"
    clip_logits, frame_logits = model.frame_logits(x)
    assert frame_logits.shape == (2, 2)
    torch.testing.assert_close(clip_logits, logits)
    if model.cfg.pooling == "mean":  # linear head: the clip logit is the mean of the frame logits
        torch.testing.assert_close(frame_logits.mean(1), logits, atol=1e-5, rtol=1e-4)
    model.train()
    model(x).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"


def test_grad_cam_refuses_a_layer_that_is_not_nchw():
    """A Swin-like NHWC stage would give wrong maps with no error; the declared C catches it."""
    model = build_model(TINY_MODEL).eval()
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, out: out.permute(0, 2, 3, 1))
    try:
        with pytest.raises(GradCamError, match="not NCHW"):
            grad_cam(model, torch.randn(1, 2, 3, 64, 64))
    finally:
        handle.remove()


def test_registry_refuses_duplicates_unknown_names_and_missing_offline_weights():
    with pytest.raises(ValueError, match="registered already"):
        register_backbone(BackboneSpec("resnet18", "torchvision", 512, "layer4", "fc."))
    with pytest.raises(ValueError, match="registered: "):
        backbone_spec("resnet1000")
    with pytest.raises(PretrainedWeightsError, match="no offline weights"):
        build_backbone("resnet18", "offline")


def _grace_hopper(size: int = 224) -> torch.Tensor:
    import cv2

    img = cv2.resize(synth.load_rgb(SAMPLE / "grace_hopper.jpg"), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
    return ((x - 0.5) / 0.5)[None]  # the weights' normalisation: mean = std = 0.5


def test_offline_lite0_weights_map_onto_timm_and_classify_imagenet():
    """Grace Hopper in uniform: ImageNet class 652 "military uniform" (0.33 with these weights)."""
    import timm

    from dfdetect.models.backbones import lite0_imagenet_state_dict, offline_lite0_file

    src = torch.load(offline_lite0_file(), map_location="cpu", weights_only=True)
    assert len(src) == 296
    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()  # with its classifier
    state = map_lite0_state_dict(src, net.state_dict())
    net.load_state_dict(state, strict=False)
    with torch.no_grad():
        p = net(_grace_hopper()).softmax(1)[0]
    assert int(p.argmax()) == 652 and float(p.max()) > 0.25
    # the feature extractor dfdetect builds carries the same tensors
    features, spec = build_backbone("efficientnet_lite0", "offline")
    mapped = lite0_imagenet_state_dict(features)
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    for k, v in mapped.items():
        torch.testing.assert_close(features.state_dict()[k], v)
    # a mis-ordered state dict (a BatchNorm's weight and bias: same shape) is caught, not loaded
    keys = list(src)
    assert keys[1].endswith("weight") and keys[2].endswith("bias")
    with pytest.raises(ValueError, match="does not pair"):
        map_lite0_state_dict({k: src[k] for k in [keys[0], keys[2], keys[1], *keys[3:]]},
                             net.state_dict())


def _blob_task(n: int, seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Real faces; FAKE = a faint blurred colour blob pasted in (a blending artefact to find)."""
    import cv2

    rng = np.random.default_rng(seed)
    faces = [cv2.resize(synth.load_rgb(SAMPLE / f), (size, size)) for f in
             ("obama.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.png", "obama2.jpg")]
    xs, ys = [], []
    for i in range(n):
        img = faces[rng.integers(len(faces))].astype(np.float32)
        img = np.roll(img, rng.integers(-4, 5, 2), axis=(0, 1))
        y = i % 2
        if y:
            mask = np.zeros((size, size), np.float32)
            c = rng.integers(size // 4, 3 * size // 4, 2)
            cv2.circle(mask, (int(c[0]), int(c[1])), size // 6, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), 3)[..., None]
            img = img * (1 - 0.6 * mask) + 0.6 * mask * rng.uniform(0, 255, 3)
        xs.append((torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 255 - 0.5) / 0.5)
        ys.append(y)
    return torch.stack(xs)[:, None], torch.tensor(ys, dtype=torch.float32)  # (N, T=1, 3, S, S)


def _val_auc(pretrained: str, steps: int = 60) -> float:
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=pretrained, hidden=16,
                                    dropout=0.0, freeze_bn=True))
    x, y = _blob_task(64, seed=1)
    xv, yv = _blob_task(48, seed=2)
    opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": 3e-4},
                             {"params": model.head_parameters(), "lr": 1e-3}])
    loss_fn = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scores = model(xv).numpy()
    return float(roc_auc_score(yv.numpy(), scores))


@pytest.mark.slow
def test_fine_tuning_offline_weights_beats_scratch_in_the_same_steps():
    pretrained, scratch = _val_auc("offline"), _val_auc("none")
    assert pretrained >= scratch + 0.2 and pretrained >= 0.7, (pretrained, scratch)  # seen: 0.76 vs 0.40
