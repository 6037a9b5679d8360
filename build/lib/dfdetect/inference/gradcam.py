"""Grad-CAM through the LSTM (the maths; the figures are in :mod:`dfdetect.viz`).

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
from collections.abc import Iterator
from dataclasses import dataclass

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
def _capture(layer: nn.Module, store: list[torch.Tensor], channels: int | None = None
             ) -> Iterator[None]:
    """Replace ``layer``'s output by a detached leaf that requires grad and remember it.

    Back-propagation then stops at the block we explain: nothing below it is differentiated
    and no parameter ``.grad`` is touched, which keeps Grad-CAM about one forward's cost.
    ``channels``: the C the registry declares for the layer; another size means the layout is not
    NCHW (e.g. a Swin stage's NHWC), which would give wrong maps, so it is an error.
    """

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise GradCamError(
                f"cam_layer {type(_module).__name__} returned {type(output).__name__} "
                f"{getattr(output, 'shape', '')}; Grad-CAM needs a (B*T, C, h, w) tensor"
            )
        if channels is not None and output.shape[1] != channels:
            raise GradCamError(
                f"cam_layer {type(_module).__name__} returned {tuple(output.shape)}: not NCHW with "
                f"the {channels} channels its backbone declares; Grad-CAM would be wrong")
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
    spec = getattr(model, "spec", None) if layer is None else None  # the registry's declared C
    channels = getattr(spec, "cam_dim", None)
    with (_eval_mode(model), _capture(_cam_layer(model, layer), store, channels), no_cudnn,
          torch.enable_grad()):
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
