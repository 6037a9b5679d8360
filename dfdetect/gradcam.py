"""Grad-CAM through the LSTM, and the figures that show it on the face crops.

The reference project drew a class-activation map of the *last* frame's backbone features
with the final linear layer's weights, which ignores the LSTM: the LSTM, not a linear map, turns
the frames' features into the logit, so that map explains nothing about the model's decision.
Here the FAKE logit of the whole clip is back-propagated, through the head and the LSTM, to
the output of the backbone's last convolutional block (``model.cam_layer``) for **every**
frame (Selvaraju et al., 2017): frame ``t`` gets channel weights ``w_tc = mean_hw dlogit /
dA_tchw`` and the map ``relu(sum_c w_tc A_tc)``, so a frame that did not move the logit gets
no heat.

Maps are scaled by the clip's maximum (one scale for all frames of a clip, so frames can be
compared) and resized to the face crop (see :func:`upsample` for the registration caveat). A clip whose map is zero everywhere has no region that
pushes it towards FAKE (typical of a confident REAL clip); that is reported, not rescaled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class GradCamError(RuntimeError):
    """Grad-CAM cannot be computed for this model (the message says what the model must provide)."""


@dataclass(frozen=True)
class CamResult:
    """Grad-CAM of a batch of clips.

    Attributes:
        cams: ``(B, T, H, W) float32`` in ``[0, 1]``, each clip scaled by its own maximum.
        peak: ``(B,) float32`` that maximum before scaling (0 = no region pushes towards FAKE).
        logits: ``(B,) float32`` the FAKE logits the maps explain.
        cells: ``(B, T, h, w) float32`` the maps at the block's own resolution, unscaled.
    """

    cams: np.ndarray
    peak: np.ndarray
    logits: np.ndarray
    cells: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        """``(B,) float32`` P(fake) of each clip."""
        return (1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))).astype(np.float32)


def _cam_layer(model: nn.Module, layer: nn.Module | None) -> nn.Module:
    layer = layer if layer is not None else getattr(model, "cam_layer", None)
    if not isinstance(layer, nn.Module):
        raise GradCamError(
            f"{type(model).__name__} has no `cam_layer` module; pass layer=<the backbone's last "
            "convolutional block> (its output must be (B*T, C, h, w))"
        )
    return layer


@contextlib.contextmanager
def _capture(layer: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Replace ``layer``'s output by a detached leaf that requires grad and remember it.

    Back-propagation then stops at the block we explain: nothing below it is differentiated
    and no parameter ``.grad`` is touched, which keeps Grad-CAM about one forward's cost.
    """

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise GradCamError(
                f"cam_layer {type(_module).__name__} returned {type(output).__name__} "
                f"{getattr(output, 'shape', '')}; Grad-CAM needs a (B*T, C, h, w) tensor"
            )
        leaf = output.detach().requires_grad_(True)
        store.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def grad_cam(
    model: nn.Module,
    clips: torch.Tensor,
    size: tuple[int, int] | None = None,
    layer: nn.Module | None = None,
) -> CamResult:
    """Grad-CAM of the FAKE logit for each frame of each clip, computed through the LSTM.

    Args:
        model: A clip classifier ``(B, T, C, H, W) -> (B,)`` logits with a ``cam_layer``
            attribute (or pass ``layer``) whose output is ``(B*T, C', h, w)``. Evaluated in
            eval mode; its training flag is restored afterwards.
        clips: ``(B, T, C, H, W)`` or one clip ``(T, C, H, W)``, preprocessed like training input,
            on the model's device.
        size: ``(H', W')`` of the returned maps (e.g. the face crop's); default the input's.
        layer: The block to explain, overriding ``model.cam_layer``.

    Returns:
        :class:`CamResult` with ``cams (B, T, H', W')``; clips in a batch do not interact
        (eval mode), so a batch gives the same maps as one clip at a time.

    Raises:
        GradCamError: The model has no usable ``cam_layer``.
    """
    if clips.dim() == 4:
        clips = clips.unsqueeze(0)
    if clips.dim() != 5:
        raise ValueError(f"clips must be (B, T, C, H, W) or (T, C, H, W), got {tuple(clips.shape)}")
    b, t = clips.shape[:2]
    size = size or tuple(clips.shape[-2:])
    store: list[torch.Tensor] = []
    # cuDNN's LSTM refuses backward in eval mode; the native kernel gives the same numbers
    no_cudnn = torch.backends.cudnn.flags(enabled=False) if clips.is_cuda else contextlib.nullcontext()
    with _eval_mode(model), _capture(_cam_layer(model, layer), store), no_cudnn, torch.enable_grad():
        logits = model(clips).reshape(-1)
        if not store:
            raise GradCamError("cam_layer was not called by the model's forward; check `cam_layer`")
        acts = store[-1]
        (grads,) = torch.autograd.grad(logits.sum(), acts)  # clips are independent in eval mode
    acts = acts.detach().float().reshape(b, t, *acts.shape[1:])
    grads = grads.float().reshape(b, t, *grads.shape[1:])
    weights = grads.mean(dim=(-2, -1), keepdim=True)  # (B, T, C', 1, 1)
    cells = F.relu((weights * acts).sum(dim=2))  # (B, T, h, w)
    cam = upsample(cells, size)
    peak = cam.flatten(1).amax(dim=1)
    cam = cam / peak.clamp_min(1e-12).view(b, 1, 1, 1)
    return CamResult(
        cams=cam.cpu().numpy().astype(np.float32),
        peak=peak.cpu().numpy().astype(np.float32),
        logits=logits.detach().float().cpu().numpy(),
        cells=cells.cpu().numpy().astype(np.float32),
    )


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, T, h, w)`` maps to ``(B, T, *size)`` (bilinear, cell ``i`` of ``h`` covering
    rows ``[i * H / h, (i + 1) * H / h)``: the usual Grad-CAM registration).

    Caveat: in ResNe(X)ts a layer4 cell's receptive field is centred nearer the top-left of its
    block (about pixel ``32 * i`` at 224 px input) than the block's middle, so the heat may sit
    up to half a cell (16 px of a 224 px input) lower-right of the evidence.
    """
    b, t, h, w = cam.shape
    out = F.interpolate(cam.reshape(b * t, 1, h, w), size=size, mode="bilinear", align_corners=False)
    return out.reshape(b, t, *size).clamp_min(0)


# --------------------------------------------------------------------------- figures


def overlay(face: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap onto a face crop.

    Args:
        face: ``(H, W, 3) uint8`` RGB crop.
        cam: ``(h, w)`` map in ``[0, 1]``; resized to ``(H, W)`` when different.
        alpha: Weight of the heatmap colour (0 = face only); scaled by the map so cold regions
            keep the face visible.
        cmap: A matplotlib colormap name.

    Returns:
        ``(H, W, 3) uint8`` RGB image.
    """
    import cv2
    import matplotlib

    cam = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    if cam.shape != face.shape[:2]:
        cam = cv2.resize(cam, (face.shape[1], face.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = matplotlib.colormaps[cmap](cam)[..., :3] * 255.0
    a = alpha * (0.35 + 0.65 * cam)[..., None]
    return np.clip(face.astype(np.float32) * (1 - a) + colour * a, 0, 255).astype(np.uint8)


def heatmap_figure(
    faces: np.ndarray,
    cams: np.ndarray,
    scores: Sequence[float] | None = None,
    frame_indices: Sequence[int] | None = None,
    title: str = "",
    cols: int = 5,
):
    """A grid of face crops with their Grad-CAM, in frame order.

    Args:
        faces: ``(T, H, W, 3) uint8`` RGB crops.
        cams: ``(T, h, w)`` maps in ``[0, 1]``.
        scores: ``(T,)`` per-frame P(fake) printed under each frame (see
            :func:`dfdetect.predict.frame_scores`), or None.
        frame_indices: ``(T,)`` source-video frame numbers for the captions, or None.
        title: Figure title (e.g. file name, label and score).
        cols: Panels per row.

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot: nothing is shown or kept).
    """
    from matplotlib.figure import Figure

    if len(faces) != len(cams):
        raise ValueError(f"{len(faces)} faces but {len(cams)} maps")
    n = len(faces)
    cols = max(1, min(cols, n))
    rows = max(1, int(np.ceil(n / cols)))
    fig = Figure(figsize=(2.0 * cols, 2.25 * rows + (0.4 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(overlay(faces[i], cams[i]))
        caption = f"frame {int(frame_indices[i])}" if frame_indices is not None else f"#{i}"
        if scores is not None and np.isfinite(scores[i]):
            caption += f"  P(fake) {float(scores[i]):.2f}"
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_heatmap_video(
    path: str | Path, faces: np.ndarray, cams: np.ndarray, fps: float = 4.0
) -> Path:
    """Write the overlaid frames as a short H.264 mp4 (atomically); return the path.

    Args:
        path: Output ``.mp4``.
        faces: ``(T, H, W, 3) uint8`` RGB crops (H and W even).
        cams: ``(T, h, w)`` maps in ``[0, 1]``.
        fps: Playback rate; the frames are seconds apart in the source, so a slow rate reads best.
    """
    from dfdetect.video import write_video

    write_video(path, (overlay(f, c) for f, c in zip(faces, cams)), fps=fps)
    return Path(path)
