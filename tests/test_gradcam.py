"""Grad-CAM through the LSTM (dfdetect.inference.gradcam): maths, shapes, side effects, figures.

The planted-patch test (a trained model puts the heat on the patch) is in test_predict.py,
where the same trained model also checks predict end to end.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from tiny import TINY_MODEL
from torch import nn

from dfdetect.config import ModelConfig
from dfdetect.inference.gradcam import GradCamError, grad_cam, upsample
from dfdetect.media import video
from dfdetect.models.detector import build_model
from dfdetect.viz import heatmap_figure, overlay, save_figure, write_heatmap_video

PX = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18", pretrained="none", hidden=8, dropout=0.0,
                                   pooling="last"))


@pytest.fixture(scope="module")
def clips():
    torch.manual_seed(1)
    return torch.randn(2, 3, 3, PX, PX)


def reference_cam(model: nn.Module, clip: torch.Tensor) -> np.ndarray:
    """Plain Grad-CAM: full backward through the whole model, gradient kept on layer4's output."""
    kept = {}

    def hook(_m, _i, out):
        out.retain_grad()
        kept["a"] = out

    model.eval()
    handle = model.cam_layer.register_forward_hook(hook)
    try:
        model(clip.unsqueeze(0)).sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    a, g = kept["a"].detach(), kept["a"].grad
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))  # (T, h, w)
    return cam.numpy()


def test_maps_shape_range_and_logits(model, clips):
    res = grad_cam(model, clips, size=(96, 80))
    assert res.cams.shape == (2, 3, 96, 80) and res.cams.dtype == np.float32
    assert np.isfinite(res.cams).all() and res.cams.min() >= 0 and res.cams.max() <= 1 + 1e-6
    assert res.peak.shape == (2,) and (res.peak > 0).all()
    assert np.allclose(res.cams.reshape(2, -1).max(1), 1.0, atol=1e-5)  # one scale per clip
    with torch.no_grad():
        expected = model.eval()(clips).numpy()
    assert np.allclose(res.logits, expected, atol=1e-5)
    assert np.allclose(res.scores, 1 / (1 + np.exp(-expected)), atol=1e-6)
    assert grad_cam(model, clips[0]).cams.shape == (1, 3, PX, PX)  # one clip, input size


def test_equals_full_backward_through_the_lstm(model, clips):
    """Stopping back-propagation at the hooked block changes nothing: the maps are those of a
    full backward pass, for every frame (pooling="last": early frames reach the logit only
    through the LSTM, so a last-frame CAM would leave them empty)."""
    ref = reference_cam(model, clips[0])  # (T, 2, 2)
    res = grad_cam(model, clips[0])
    assert np.allclose(res.cells[0], ref, rtol=1e-4, atol=1e-7)
    assert res.peak[0] == pytest.approx(ref.max(), rel=1e-4)  # the resize keeps the cell values
    frames_with_heat = (ref.reshape(len(ref), -1).max(1) > 0).sum()
    assert frames_with_heat >= 2  # not only the last frame


def test_upsample_keeps_each_cell_on_its_block():
    cells = torch.zeros(1, 1, 3, 3)
    cells[0, 0, 1, 2] = 1.0  # middle row, right column
    up = upsample(cells, (96, 128))[0, 0].numpy()  # e.g. a non-square target
    assert up.shape == (96, 128)
    assert np.unravel_index(up.argmax(), up.shape) in {(47, 106), (48, 106), (47, 107), (48, 107)}
    assert up[32:64, 85:128].mean() > 4 * up[:, :43].mean()
    assert up[:, :43].max() == 0


def test_batch_equals_one_clip_at_a_time(model, clips):
    both = grad_cam(model, clips)
    for i in range(len(clips)):
        one = grad_cam(model, clips[i])
        assert np.allclose(both.cams[i], one.cams[0], atol=1e-5)
        assert np.allclose(both.logits[i], one.logits[0], atol=1e-5)


def test_no_side_effects_on_the_model(model, clips):
    model.train()
    try:
        grad_cam(model, clips)
        assert model.training and all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert not model.cam_layer._forward_hooks  # hook removed
    finally:
        model.eval()


def test_no_evidence_gives_zero_maps_not_nan(clips):
    torch.manual_seed(0)
    m = build_model(TINY_MODEL)
    with torch.no_grad():
        m.head.weight.zero_()  # the logit no longer depends on the frames
    res = grad_cam(m, clips)
    assert np.isfinite(res.cams).all() and (res.cams == 0).all() and (res.peak == 0).all()


def test_model_without_cam_layer_is_a_named_error(clips):
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x):
            return self.lin(x.mean(dim=(1, 3, 4))).squeeze(-1)

    with pytest.raises(GradCamError, match="cam_layer"):
        grad_cam(Plain(), clips)
    with pytest.raises(ValueError, match="clips must be"):
        grad_cam(Plain(), clips[0, 0])


def test_overlay_puts_colour_where_the_map_is_hot():
    face = np.full((64, 64, 3), 128, np.uint8)
    cam = np.zeros((16, 16), np.float32)
    cam[:8, :8] = 1.0  # top-left quarter hot (resized to the face)
    out = overlay(face, cam)
    assert out.shape == face.shape and out.dtype == np.uint8
    hot, cold = out[4:28, 4:28].astype(int).mean((0, 1)), out[40:, 40:].astype(int).mean((0, 1))
    assert hot[0] - hot[2] > 40  # jet: hot is red...
    assert cold[2] - cold[0] > 10  # ...cold is blue, and fainter
    assert np.abs(hot - 128).sum() > 2 * np.abs(cold - 128).sum()


def test_figure_png_and_video(tmp_path):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    cams = rng.random((6, 64, 64)).astype(np.float32)
    fig = heatmap_figure(faces, cams, scores=np.linspace(0.1, 0.9, 6), frame_indices=range(10, 70, 10),
                         title="clip.mp4: FAKE", cols=4)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6
    assert images[0].get_title() == "frame 10  P(fake) 0.10"
    assert images[5].get_title() == "frame 60  P(fake) 0.90"
    png = save_figure(fig, tmp_path / "h" / "clip.png")
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 200
    mp4 = write_heatmap_video(tmp_path / "h" / "clip.mp4", faces, cams)
    info = video.probe(mp4)
    assert (info.frames, info.width, info.height) == (6, 64, 64)
    with pytest.raises(ValueError, match="6 faces but 5 maps"):
        heatmap_figure(faces, cams[:5])
