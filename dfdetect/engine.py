"""Training and evaluation: :func:`train_step`, :func:`train_epoch`, :func:`test`, :func:`fit`.

Read :func:`fit_datasets` top to bottom for the whole run: config.json first, then per epoch
train -> validate -> history.csv -> last.pt (+ best.pt by validation AUC) -> early stopping,
then the best checkpoint is scored on the test split (metrics.json, figures).

Precision follows the device (:func:`select_precision`): bf16 autocast on GPUs that have it
(Ampere+), fp16 with a GradScaler on older ones (T4, V100), fp32 on CPU. Under ``torchrun`` the
model runs in DistributedDataParallel, metrics are computed over every rank's samples and only
rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dfdetect.checkpoint import load_checkpoint, save_checkpoint, update_checkpoint
from dfdetect.config import RunConfig, save_json, to_dict
from dfdetect.io import atomic_write_text, remove_stale_temporaries
from dfdetect.metrics import (
    Predictions,
    binary_metrics,
    evaluate,
    fit_temperature,
    reliability,
)
from dfdetect.model import build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``dtype`` for autocast (None = fp32) and whether to scale losses."""

    dtype: torch.dtype | None = None
    scaler: bool = False


def select_precision(device: torch.device | str, amp: str = "auto") -> Precision:
    """Pick mixed precision for ``device``.

    Args:
        device: Training device.
        amp: "auto" (bf16 on compute capability >= 8.0, fp16 + GradScaler on older GPUs, fp32 on
            CPU), "bf16", "fp16" (CUDA only) or "off".

    Raises:
        ValueError: Unknown mode, or fp16 asked for off CUDA.
    """
    device = torch.device(device)
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"TrainConfig.amp must be auto, bf16, fp16 or off, not {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return Precision()
        # is_bf16_supported() is also True for emulated bf16 (slow) on T4/V100: check the hardware
        amp = "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA GPU; use 'bf16' or 'off' on this device")
    return {"off": Precision(), "bf16": Precision(torch.bfloat16),
            "fp16": Precision(torch.float16, scaler=True)}[amp]


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
    on_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader`` (items as FrameSequenceDataset returns them).

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
    dropped again, so the result is exactly the dataset's clips, in dataset order.
    """
    model.eval()
    ids, labels, logits = [], [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        frames = batch["frames"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits.append(model(frames).float().cpu())
        labels.append(batch["label"].reshape(-1).cpu())
        ids.extend(batch["video_id"])
    logits_t = torch.cat(logits) if logits else torch.zeros(0)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ids, labels_t, logits_t = _gather_ordered(loader, ids, labels_t, logits_t)
    return Predictions(np.asarray(ids, dtype=str), labels_t.numpy().astype(np.int64),
                       logits_t.double().numpy())


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


def test(model: nn.Module, loader: DataLoader, *, device: torch.device,
         amp_dtype: torch.dtype | None = None, temperature: float = 1.0,
         progress: bool = False) -> dict:
    """Evaluate: video-level metrics (mean P(fake) of each ``video_id``'s clips).

    Returns:
        :func:`dfdetect.metrics.evaluate`'s dict (accuracy, balanced_accuracy, auc, log_loss,
        balanced_log_loss, confusion_matrix, n, loss; ``clip_*`` when videos have several clips).
    """
    preds = collect_predictions(model, loader, device=device, amp_dtype=amp_dtype, progress=progress)
    return evaluate(preds, temperature)


test.__test__ = False  # the seed's public name; not a pytest test when imported into one


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """History rows (one dict per epoch) as a DataFrame, ``epoch`` first."""
    df = pd.DataFrame(rows)
    return df[["epoch"] + [c for c in df.columns if c != "epoch"]] if len(df) else df


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per step for LambdaLR: linear warm-up, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given; else this process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


LAST, BEST = "last.pt", "best.pt"


class TrainError(RuntimeError):
    """A run cannot start or continue as asked; the message says what to do."""


@dataclass
class TrainState:
    """A training run's model, optimiser, schedule and progress (what ``last.pt`` restores)."""

    model: nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # one dict per epoch (history.csv)
    best: tuple = (-math.inf, -math.inf)  # (val AUC, -val loss) of the best epoch
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one (early stopping)


def fit(manifest: str | Path, run_dir: str | Path, run_cfg: RunConfig | None = None,
        resume: bool = False, device: str | torch.device | None = None, progress: bool = True,
        on_step: Callable[[int, int], None] | None = None) -> dict:
    """Train on a manifest's train split, select on val, score the best epoch on test.

    Args:
        manifest: ``manifest.csv`` from extraction/augmentation; rows without a split are split
            by group with ``DataConfig`` fractions (:func:`dfdetect.data.split_manifest`).
        run_dir: Output folder: config.json, history.csv, last.pt, best.pt, metrics.json, PNGs.
        run_cfg: Everything else (default ``RunConfig()``).
        resume: Continue from ``RUN_DIR/last.pt`` (an interrupted epoch restarts from its start).
        device: Default: this rank's GPU under torchrun, else "cuda" if available, else "cpu".
        progress: tqdm bars (rank 0 only).
        on_step: Called as ``on_step(epoch, step)`` (1-based epoch) after every optimiser step.

    Returns:
        What ``metrics.json`` holds (best epoch, val and test metrics, temperature, ECE).
    """
    from dfdetect import data
    from dfdetect.manifest import read_manifest

    run_cfg = run_cfg if run_cfg is not None else RunConfig()
    dc = run_cfg.data
    rank, world, owns_group = _init_distributed()
    try:
        if rank > 0:
            dist.barrier()  # rank 0 builds the frame caches first; the others then open them
        df = data.split_manifest(read_manifest(manifest), dc)
        datasets = {split: data.FrameSequenceDataset(
            manifest, dc, split=split, train=split == "train", cache=dc.cache,
            cache_workers=max(1, run_cfg.train.workers)) for split in ("train", "val", "test")}
        if world > 1 and rank == 0:
            dist.barrier()
        pos_weight = data.pos_weight(df[df["split"] == "train"], dc.self_blend_prob)
        return fit_datasets(datasets, run_dir, run_cfg, resume=resume, device=device,
                            progress=progress, pos_weight=pos_weight, on_step=on_step)
    finally:
        if owns_group:
            dist.destroy_process_group()


def fit_datasets(
    datasets: Mapping[str, Dataset], run_dir: str | Path, run_cfg: RunConfig, *,
    resume: bool = False, device: str | torch.device | None = None, progress: bool = True,
    pos_weight: float = 1.0, on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """:func:`fit` on ready datasets ``{"train", "val", "test"}`` (items as FrameSequenceDataset's).

    ``pos_weight`` (REAL / FAKE clips of the train split, :func:`dfdetect.data.pos_weight`) weighs
    the loss when ``DataConfig.balance == "loss"``, and under DDP also for "sampler".
    """
    _check_datasets(datasets)
    rank, world, owns_group = _init_distributed()
    device, tc, main = default_device(device), run_cfg.train, rank == 0
    run_dir = Path(run_dir)
    _prepare_run_dir(run_dir, run_cfg, resume, main)
    precision = select_precision(device, tc.amp)
    if device.type == "cuda":  # speed over bit-exactness on GPUs
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    loaders = {s: _loader(datasets[s], run_cfg, train=False, world=world) for s in ("val", "test")}
    steps = len(_loader(datasets["train"], run_cfg, train=True, world=world))
    run = build_training(run_cfg, device, precision, steps)
    if resume and (run_dir / LAST).is_file():
        _restore(run, run_dir / LAST, run_cfg)
    loss_fn = make_loss_fn(run_cfg.data.balance, pos_weight, device, distributed=world > 1)
    try:
        for epoch in range(run.epoch, tc.epochs):
            if 0 < tc.patience <= run.stale:
                log.info("early stop: no better validation AUC for %d epochs", run.stale)
                break
            _seed(tc.seed, epoch, rank)
            run.model.freeze_backbone(epoch < tc.freeze_backbone_epochs)
            net = _wrap(run.model, device, world)  # rewrapped: frozen parameters change per phase
            train_loader = _loader(datasets["train"], run_cfg, train=True, world=world, epoch=epoch)
            hook = (lambda step, e=epoch + 1: on_step(e, step)) if on_step else None
            start = time.perf_counter()
            train = train_epoch(net, train_loader, run.optimizer, device=device, loss_fn=loss_fn,
                                scheduler=run.scheduler, scaler=run.scaler, amp_dtype=precision.dtype,
                                grad_clip=tc.grad_clip, progress=progress and main, on_step=hook)
            if world > 1:
                _broadcast_buffers(run.model)  # evaluate (on every rank) what rank 0 saves
            val = test(run.model, loaders["val"], device=device, amp_dtype=precision.dtype)
            _end_epoch(run, run_dir, run_cfg, train, val, time.perf_counter() - start, main)
        if world > 1:
            dist.barrier()  # rank 0 has written best.pt
        return _final_evaluation(run, loaders, run_dir, run_cfg, device, precision, main)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _check_datasets(datasets: Mapping[str, Dataset]) -> None:
    for split in ("train", "val"):
        if len(datasets[split]) == 0:
            raise TrainError(f"the {split} split has no usable clips: training needs train and val "
                             "videos of both classes (add videos, or adjust the split column / "
                             "DataConfig.val_fraction)")


def _init_distributed() -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; joins the torchrun group when WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _prepare_run_dir(run_dir: Path, run_cfg: RunConfig, resume: bool, main: bool) -> None:
    if (run_dir / LAST).is_file() and not resume:
        raise TrainError(f"{run_dir} already holds a run ({LAST}); pass --resume (resume=True) "
                         "to continue it, or choose a new RUN_DIR")
    if resume and not (run_dir / LAST).is_file():
        log.warning("%s: no %s to resume from; starting a new run", run_dir, LAST)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        save_json(run_cfg, run_dir / "config.json")  # before training: the run is described


def _loader(dataset: Dataset, run_cfg: RunConfig, *, train: bool, world: int,
            epoch: int = 0) -> DataLoader:
    from dfdetect.data import make_loader

    tc = run_cfg.train
    loader = make_loader(dataset, tc.batch_size, train=train, workers=tc.workers,
                         balance=run_cfg.data.balance if train else "none",
                         distributed=world > 1, seed=tc.seed + epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return loader


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed every global RNG from (seed, epoch, rank): a resumed epoch replays exactly."""
    s = (seed * 1_000_003 + epoch) * 1_009 + rank
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def make_loss_fn(balance: str, pos_weight: float, device: torch.device,
                 distributed: bool = False) -> nn.Module:
    """``BCEWithLogitsLoss``, weighted by ``pos_weight`` when classes are balanced by the loss.

    Under DDP there is no weighted sampler, so ``balance="sampler"`` falls back to the loss.
    """
    by_loss = balance == "loss" or (balance == "sampler" and distributed)
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight if by_loss else 1.0, device=device))


def build_training(run_cfg: RunConfig, device: torch.device, precision: Precision,
                   steps_per_epoch: int) -> TrainState:
    """Model (channels_last on GPU), AdamW, warm-up + cosine LambdaLR, GradScaler for fp16.

    What :func:`fit` trains with (``bench/train_speed.py`` builds the same).
    """
    tc = run_cfg.train
    torch.manual_seed(tc.seed)  # same initial weights on every rank and every resume
    model = build_model(run_cfg.model).to(device)
    if device.type == "cuda" and tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # no weight decay on biases and normalisation weights (1-D parameters)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    warmup = max(1, round(tc.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup, tc.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type) if precision.scaler else None
    return TrainState(model, optimizer, scheduler, scaler)


def _restore(run: TrainState, path: Path, run_cfg: RunConfig) -> None:
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    for part in ("face", "data", "model"):
        if saved[part] != to_dict(getattr(run_cfg, part)):
            raise TrainError(f"{path}: was trained with another {part} config; resume with "
                             f"{path.parent / 'config.json'} (or start a new RUN_DIR)")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    extra = ckpt["extra"]
    run.epoch, run.history = ckpt["epoch"], list(extra["history"])
    run.best, run.best_epoch, run.stale = tuple(extra["best"]), extra["best_epoch"], extra["stale"]
    log.info("resumed %s at epoch %d", path, run.epoch)


def _wrap(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers to every rank.

    DDP broadcasts BatchNorm statistics *before* each forward; the last training forward then
    updates them on each rank with its own batch, so the ranks leave the epoch with different
    running statistics.
    """
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def _end_epoch(run: TrainState, run_dir: Path, run_cfg: RunConfig, train: dict, val: dict,
               seconds: float, main: bool) -> None:
    """Record the epoch, update early stopping, write history.csv, last.pt and best.pt."""
    run.epoch += 1
    row = {"epoch": run.epoch, **{f"train_{k}": train[k] for k in ("loss", "accuracy", "auc")},
           **{f"val_{k}": val[k] for k in ("loss", "accuracy", "auc")},
           "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2)}
    run.history.append(row)
    key = (val["auc"] if math.isfinite(val["auc"]) else -math.inf, -val["loss"])
    improved = key > run.best  # AUC first; equal AUC (common on small sets): lower loss
    run.best, run.best_epoch, run.stale = ((key, run.epoch, 0) if improved
                                           else (run.best, run.best_epoch, run.stale + 1))
    if not main:
        return
    log.info("epoch %d/%d  train loss %.4f auc %.3f | val loss %.4f auc %.3f acc %.3f%s",
             run.epoch, run_cfg.train.epochs, train["loss"], train["auc"], val["loss"],
             val["auc"], val["accuracy"], "  *best*" if improved else "")
    atomic_write_text(run_dir / "history.csv", history_frame(run.history).to_csv(index=False))
    extra = {"history": run.history, "best": list(run.best), "best_epoch": run.best_epoch,
             "stale": run.stale}
    for name in (LAST, BEST) if improved else (LAST,):
        save_checkpoint(run_dir / name, model=run.model, run_cfg=run_cfg, epoch=run.epoch,
                        metrics={"val": val, "train": train}, optimizer=run.optimizer,
                        scheduler=run.scheduler, scaler=run.scaler, extra=extra)


def _final_evaluation(run: TrainState, loaders: Mapping[str, DataLoader], run_dir: Path,
                      run_cfg: RunConfig, device: torch.device, precision: Precision,
                      main: bool) -> dict:
    """Score best.pt: temperature fitted on val; metrics on val and test; metrics.json; figures."""
    if not (run_dir / BEST).is_file():
        raise TrainError(f"{run_dir / BEST}: missing; no epoch finished with a finite validation "
                         "loss (lower --lr, check the data) or epochs is 0")
    best = load_checkpoint(run_dir / BEST)
    run.model.load_state_dict(best["model"])
    preds = {s: collect_predictions(run.model, loader, device=device, amp_dtype=precision.dtype)
             for s, loader in loaders.items() if len(loader.dataset)}
    temperature = (fit_temperature(preds["val"].logits, preds["val"].labels)
                   if run_cfg.train.calibrate and "val" in preds else 1.0)
    result: dict[str, Any] = {"best_epoch": best["epoch"], "epochs_run": run.epoch,
                              "temperature": temperature, "val": None, "test": None}
    for split, p in preds.items():
        result[split] = evaluate(p, calibrated=temperature)
    if result["test"] is None:
        log.warning("the test split is empty: metrics.json has validation metrics only")
    result = _json_safe(result)
    if main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
        update_checkpoint(run_dir / BEST, temperature=temperature)
        split = "test" if "test" in preds else "val"
        _save_figures(run_dir, run.history, preds[split], temperature, split)
    return result


def _save_figures(run_dir: Path, history: list, preds: Predictions, temperature: float,
                  split: str) -> None:
    from dfdetect import plots

    _, labels, scores = preds.by_video()
    calibrated = preds.by_video(temperature)[2]
    matrix = binary_metrics(labels, scores)["confusion_matrix"]
    figures = {
        "curves.png": plots.training_curves(history_frame(history)),
        "confusion_matrix.png": plots.confusion_matrix_figure(matrix, f"Confusion matrix ({split})"),
        "roc.png": plots.roc_figure(labels, scores, f"ROC curve ({split})"),
        "reliability.png": plots.reliability_figure(
            {"model": reliability(labels, scores),
             f"T = {temperature:.2f}": reliability(labels, calibrated)}, f"Reliability ({split})"),
    }
    for name, fig in figures.items():
        plots.save_figure(fig, run_dir / name)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively (metrics.json stays strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
