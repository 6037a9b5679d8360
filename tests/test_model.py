"""DeepfakeDetector: shapes, gradients, per-clip independence, frame-order dependence, weights."""

from __future__ import annotations

import urllib.error
from dataclasses import replace

import pytest
import torch
import torchvision
from tiny import TINY_MODEL

from dfdetect.config import ModelConfig
from dfdetect.models.detector import DeepfakeDetector, PretrainedWeightsError, build_model

TINY = replace(TINY_MODEL, hidden=16)


def _clips(b: int = 4, t: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> DeepfakeDetector:
    torch.manual_seed(0)
    return build_model(TINY).eval()


def test_output_shape_and_finite(model):
    with torch.no_grad():
        out = model(_clips(3, 4))
    assert out.shape == (3,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_rejects_4d_input(model):
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model(torch.randn(2, 3, 32, 32))


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = build_model(TINY).train()
    m(_clips(2, 3)).sum().backward()
    for name, p in m.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: zero/NaN gradient"


def _batch_dependence(m: torch.nn.Module) -> float:
    """Largest change of any clip's logit when the other clips of the batch change."""
    x = _clips(4, 5)
    with torch.no_grad():
        ref = m(x)
        perm = torch.tensor([2, 0, 3, 1])
        permuted = m(x[perm])
        changed = x.clone()
        changed[0] = torch.randn_like(changed[0]) * 3
        alone = torch.cat([m(x[i:i + 1]) for i in range(4)])
    return max((permuted - ref[perm]).abs().max().item(), (m(changed)[1:] - ref[1:]).abs().max().item(),
               (alone - ref).abs().max().item())


def test_each_clip_is_scored_independently_of_the_batch(model):
    assert _batch_dependence(model) < 1e-5


def test_the_independence_check_catches_the_reference_bug():
    """An LSTM without batch_first runs across the batch: the check above must see it."""
    torch.manual_seed(0)
    buggy = build_model(TINY).eval()
    buggy.lstm.batch_first = False
    assert _batch_dependence(buggy) > 1e-3


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_output_depends_on_frame_order(pooling):
    torch.manual_seed(0)
    m = build_model(ModelConfig(**{**TINY.__dict__, "pooling": pooling})).eval()
    x = _clips(3, 6)
    with torch.no_grad():
        diff = (m(x) - m(x.flip(1))).abs()
    assert (diff > 1e-6).all(), diff


def test_bidirectional_and_layers():
    cfg = replace(TINY_MODEL, layers=2, bidirectional=True)
    m = build_model(cfg).eval()
    assert m.head.in_features == 16
    with torch.no_grad():
        assert m(_clips(2, 3)).shape == (2,)


def test_default_is_resnext50_with_2048_features_and_hidden():
    cfg = ModelConfig(pretrained="none")
    m = build_model(cfg).eval()
    assert cfg.backbone == "resnext50_32x4d" and m.feature_dim == 2048 and m.lstm.hidden_size == 2048
    assert m.lstm.batch_first
    assert m.cam_layer is m.backbone.layer4
    with torch.no_grad():
        assert m(_clips(1, 2)).shape == (1,)


def test_cam_layer_output_is_per_frame_feature_map(model):
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(_clips(2, 3, size=64))
    handle.remove()
    assert seen == [torch.Size([6, 512, 2, 2])]


def test_other_backbone_by_name():
    m = build_model(ModelConfig(backbone="mobilenet_v3_small", pretrained="none", hidden=8)).eval()
    with torch.no_grad():
        assert m(_clips(2, 3)).shape == (2,)
    assert isinstance(m.cam_layer, torch.nn.Sequential)  # .features


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        build_model(ModelConfig(backbone="resnet19", pretrained="none"))


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling"):
        build_model(ModelConfig(backbone="resnet18", pretrained="none", pooling="max"))


def test_frozen_backbone_keeps_weights_and_statistics():
    torch.manual_seed(0)
    m = build_model(TINY)
    m.freeze_backbone(True)
    m.train()
    assert not m.backbone.training and m.lstm.training
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    m(_clips(2, 3)).sum().backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.lstm.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.backbone.state_dict().items())  # BN stats too
    m.freeze_backbone(False)
    assert m.backbone.training and all(p.requires_grad for p in m.backbone.parameters())


def test_imagenet_download_failure_names_both_alternatives(monkeypatch):
    def offline(*_a, **_k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        build_model(ModelConfig(backbone="resnet18", pretrained="imagenet", hidden=8))
    msg = str(err.value)
    assert "could not be downloaded" in msg and "--pretrained PATH" in msg and "--pretrained none" in msg


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18()  # a torchvision file: backbone + ImageNet head
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    m = build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "resnet18.pth"), hidden=8))
    assert torch.equal(m.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(m.backbone.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_local_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    ref = torchvision.models.resnet18()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "w.safetensors"), hidden=8))
    assert torch.equal(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(PretrainedWeightsError, match="does not match the backbone"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "resnet34.pth")))


def test_missing_weights_file(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no such weights file"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "nope.pth")))


FRAME = ModelConfig(backbone="resnet18", pretrained="none", temporal="none", dropout=0.0)


def test_frame_level_model_scores_frames_and_averages_them():
    torch.manual_seed(0)
    m = build_model(FRAME).eval()
    assert m.lstm is None and m.head.in_features == m.feature_dim
    x = _clips(3, 4)
    with torch.no_grad():
        clip, frames = m.frame_logits(x)
        alone = m(x[:, 2:3])  # a frame on its own gets the score it has inside the clip
    assert clip.shape == (3,) and frames.shape == (3, 4)
    assert torch.allclose(clip, frames.mean(1), atol=1e-5)
    assert torch.allclose(alone, frames[:, 2], atol=1e-4)
    with torch.no_grad():  # frame order does not matter to a frame-level model
        assert torch.allclose(m(x.flip(1)), clip, atol=1e-5)


def test_frame_level_model_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = build_model(FRAME).train()
    m(_clips(2, 3)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_frozen_layers_keep_the_first_stages_fixed():
    from dfdetect.models.detector import backbone_stages

    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="resnet18", pretrained="none", temporal="none",
                                frozen_layers=2)).train()
    stages = backbone_stages(m.backbone)
    assert len(stages) == 5  # stem (conv1 + bn1), layer1..layer4
    frozen = {id(p) for s in stages[:2] for p in s.parameters()}
    for p in m.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    assert not stages[0][1].training and stages[2].training  # frozen BatchNorm stays in eval
    m.freeze_backbone(True)
    m.freeze_backbone(False)  # the warm-up ends: the frozen stages stay frozen
    assert not any(p.requires_grad for p in stages[1].parameters())
    with pytest.raises(ValueError, match="stages"):
        build_model(ModelConfig(backbone="resnet18", pretrained="none", frozen_layers=9))
