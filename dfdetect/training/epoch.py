"""One epoch: :func:`train_step`, :func:`train_epoch` and :func:`evaluate` (everything passed in).

What a run is built from (precision, loss, schedule, optimiser) is in
:mod:`dfdetect.training.setup`; the whole run (:func:`dfdetect.training.fit.fit`) in
:mod:`dfdetect.training.fit`. Under ``torchrun`` metrics are computed over every rank's samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dfdetect.training.metrics import Predictions, binary_metrics, video_metrics


def _to_device(batch: Mapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    frames = batch["frames"].to(device, non_blocking=True)
    return frames, batch["label"].to(device, non_blocking=True).float()


def train_step(
    model: nn.Module, frames: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
    *, loss_fn: Callable, scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None, grad_clip: float = 0.0, scheduler: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (the step :func:`fit` runs and ``bench/train_speed.py`` times).

    Args:
        model: ``(B, T, C, H, W) -> (B,)`` logits, in train mode.
        frames: ``(B, T, C, H, W)`` on the model's device.
        labels: ``(B,)`` float 0/1.
        optimizer, scheduler: Stepped once (the scheduler per step, as warm-up + cosine needs).
        loss_fn: ``(logits (B,), labels (B,)) -> scalar``.
        scaler: GradScaler for fp16.
        amp_dtype: Autocast dtype, None for fp32.
        grad_clip: Max global gradient norm (0 = off).

    Returns:
        ``(loss (), logits (B,))`` detached, still on the device (no host sync here).
    """
    with torch.autocast(frames.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(frames)
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
    else:
        loss.backward()
    if grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits.detach()


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor over ranks (rank-major); itself outside DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor.cpu()
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def train_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *, device: torch.device,
    loss_fn: Callable, scheduler: Any = None, scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None, grad_clip: float = 0.0, progress: bool = False,
    on_step: Callable[[int], None] | None = None, stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader`` (items as FrameSequenceDataset returns them), or until
    ``stop()`` says so after a step (a time budget).

    Returns:
        Clip-level ``loss`` (mean), ``accuracy``, ``auc`` and ``n`` over every rank's clips.
    """
    model.train()
    losses, logits, labels = [], [], []
    bar = tqdm(loader, desc="train", leave=False, disable=not progress)
    for step, batch in enumerate(bar):
        frames, y = _to_device(batch, device)
        loss, out = train_step(model, frames, y, optimizer, loss_fn=loss_fn, scaler=scaler,
                               amp_dtype=amp_dtype, grad_clip=grad_clip, scheduler=scheduler)
        losses.append(loss * len(y))
        logits.append(out.float())
        labels.append(y)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")  # a host sync every 10 steps only
        if on_step is not None:
            on_step(step)
        if stop is not None and stop():
            break
    if not labels:
        raise ValueError("the training loader is empty; check the train split of the manifest")
    logits_all, labels_all = _gather(torch.cat(logits)), _gather(torch.cat(labels))
    loss_sum = _gather(torch.stack(losses).sum().reshape(1)).sum()
    scores = torch.sigmoid(logits_all).numpy()
    m = binary_metrics(labels_all.numpy().astype(np.int64), scores)
    return {"loss": float(loss_sum) / len(labels_all), "accuracy": m["accuracy"], "auc": m["auc"],
            "n": len(labels_all)}


@torch.no_grad()
def collect_predictions(
    model: nn.Module, loader: DataLoader, *, device: torch.device,
    amp_dtype: torch.dtype | None = None, progress: bool = False,
) -> Predictions:
    """Score every clip of ``loader`` (eval mode), over all ranks under DDP.

    With a non-shuffling DistributedSampler, the clips it repeats to even out the ranks are
    dropped again, so the result is exactly the dataset's clips, in dataset order. Frame-level
    models (no LSTM) also give their ``(N, T)`` frame logits (videos then aggregate frames).
    """
    model.eval()
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the detector
    per_frame = getattr(inner, "frame_level", False)
    ids, labels, logits, frames_out = [], [], [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        frames = batch["frames"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if per_frame:
                clip, frame = inner.frame_logits(frames)
                frames_out.append(frame.float().cpu())
            else:
                clip = model(frames)
            logits.append(clip.float().cpu())
        labels.append(batch["label"].reshape(-1).cpu())
        ids.extend(batch["video_id"])
    logits_t = torch.cat(logits) if logits else torch.zeros(0)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    frame_t = torch.cat(frames_out) if frames_out else None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if frame_t is not None:  # gathered as one (N, 1 + T) tensor: the clip logit first
            both = torch.cat([logits_t[:, None], frame_t], 1)
            ids, labels_t, both = _gather_ordered(loader, ids, labels_t, both)
            logits_t, frame_t = both[:, 0], both[:, 1:]
        else:
            ids, labels_t, logits_t = _gather_ordered(loader, ids, labels_t, logits_t)
    return Predictions(np.asarray(ids, dtype=str), labels_t.numpy().astype(np.int64),
                       logits_t.double().numpy(),
                       frame_t.double().numpy() if frame_t is not None else None)


def _gather_ordered(loader: DataLoader, ids: list, labels: torch.Tensor, logits: torch.Tensor):
    world = dist.get_world_size()
    parts: list = [None] * world
    dist.all_gather_object(parts, (ids, labels, logits))
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.DistributedSampler) and not sampler.shuffle:
        # rank r holds dataset items r, r + W, r + 2W...; the padding is at the very end
        n = len(loader.dataset)
        order = [(i * world + r, r, i) for r in range(world) for i in range(len(parts[r][0]))]
        keep = sorted(o for o in order if o[0] < n)
        pick = [(r, i) for _, r, i in keep]
    else:
        pick = [(r, i) for r in range(world) for i in range(len(parts[r][0]))]
    ids = [parts[r][0][i] for r, i in pick]
    labels = torch.stack([parts[r][1][i] for r, i in pick]) if pick else labels[:0]
    logits = torch.stack([parts[r][2][i] for r, i in pick]) if pick else logits[:0]
    return ids, labels, logits


def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device,
             amp_dtype: torch.dtype | None = None, temperature: float = 1.0,
             progress: bool = False, rule: str = "mean") -> dict:
    """Evaluate: video-level metrics (each ``video_id``'s scores aggregated by ``rule``).

    Returns:
        :func:`dfdetect.training.metrics.video_metrics`'s dict (accuracy, balanced_accuracy, auc, log_loss,
        balanced_log_loss, confusion_matrix, n, loss; ``clip_*`` when videos have several clips).
    """
    preds = collect_predictions(model, loader, device=device, amp_dtype=amp_dtype, progress=progress)
    return video_metrics(preds, temperature, rule=rule)




def history_frame(rows: list[dict]) -> pd.DataFrame:
    """History rows (one dict per epoch) as a DataFrame, ``epoch`` first."""
    df = pd.DataFrame(rows)
    return df[["epoch"] + [c for c in df.columns if c != "epoch"]] if len(df) else df


