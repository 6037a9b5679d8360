"""A whole training run: :func:`fit` (from a manifest) and :func:`fit_datasets`.

Read :func:`fit_datasets` top to bottom for the whole run: config.json first, then per epoch
train -> validate -> history.csv -> last.pt (+ best.pt by validation AUC) -> early stopping,
then the best checkpoint is scored on the test split (metrics.json, figures). The per-epoch
mechanics are in :mod:`dfdetect.training.epoch`, what a run is built from in
:mod:`dfdetect.training.setup`.

Under ``torchrun`` the model runs in DistributedDataParallel, metrics are computed over every
rank's samples and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dfdetect import viz as plots
from dfdetect.config import RunConfig, save_json, to_dict
from dfdetect.data import dataset as data
from dfdetect.data.loaders import make_loader
from dfdetect.extraction.manifest import read_manifest
from dfdetect.media.files import atomic_write_text, remove_stale_temporaries
from dfdetect.models.backbones import resolve_run_config
from dfdetect.models.checkpoint import load_checkpoint, save_checkpoint, update_checkpoint
from dfdetect.training.epoch import collect_predictions, evaluate, history_frame, train_epoch
from dfdetect.training.metrics import (
    Predictions,
    binary_metrics,
    fit_temperature,
    reliability,
    video_metrics,
)
from dfdetect.training.setup import (
    Precision,
    TrainState,
    build_training,
    default_device,
    make_loss_fn,
    select_precision,
)

log = logging.getLogger(__name__)


LAST, BEST = "last.pt", "best.pt"


class TrainError(RuntimeError):
    """A run cannot start or continue as asked; the message says what to do."""


def fit(manifest: str | Path, run_dir: str | Path, run_cfg: RunConfig | None = None,
        resume: bool = False, device: str | torch.device | None = None, progress: bool = True,
        on_step: Callable[[int, int], None] | None = None) -> dict:
    """Train on a manifest's train split, select on val, score the best epoch on test.

    Args:
        manifest: ``manifest.csv`` from extraction/augmentation; rows without a split are split
            by group with ``DataConfig`` fractions (:func:`dfdetect.data.dataset.split_manifest`).
        run_dir: Output folder: config.json, splits.csv, history.csv, last.pt, best.pt,
            metrics.json, scores_<split>.csv (per-video P(fake)), PNGs.
        run_cfg: Everything else (default ``RunConfig()``).
        resume: Continue from ``RUN_DIR/last.pt`` (an interrupted epoch restarts from its start).
        device: Default: this rank's GPU under torchrun, else "cuda" if available, else "cpu".
        progress: tqdm bars (rank 0 only).
        on_step: Called as ``on_step(epoch, step)`` (1-based epoch) after every optimiser step.

    Returns:
        What ``metrics.json`` holds (best epoch, val and test metrics, temperature, ECE).
    """

    run_cfg = resolve_run_config(run_cfg if run_cfg is not None else RunConfig())
    dc = run_cfg.data
    rank, world, owns_group = _init_distributed()
    try:
        if rank > 0:
            dist.barrier()  # rank 0 builds the frame caches first; the others then open them
        df = data.split_manifest(read_manifest(manifest), dc)
        if rank == 0:  # which video went where: for the report, prediction and audits
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            cols = ["video_id", "file", "label", "group", "split", "source", "status"]
            atomic_write_text(Path(run_dir) / "splits.csv", df[cols].to_csv(index=False))
        datasets = {split: data.FrameSequenceDataset(
            manifest, dc, split=split, train=split == "train",
            cache=(dc.cache_dir or True) if dc.cache else False, augment_cfg=run_cfg.augment,
            blend_cfg=run_cfg.self_blend, cache_workers=max(1, run_cfg.train.workers))
            for split in ("train", "val", "test")}
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

    ``pos_weight`` (REAL / FAKE clips of the train split, :func:`dfdetect.data.dataset.pos_weight`) weighs
    the loss when ``DataConfig.balance == "loss"``, and under DDP also for "sampler".
    """
    _check_datasets(datasets)
    run_cfg = resolve_run_config(run_cfg)
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
    loss_fn = _finite_loss(make_loss_fn(run_cfg.data.balance, pos_weight, device,
                                        distributed=world > 1), run, tc)
    try:
        for epoch in range(run.epoch, tc.epochs):
            if 0 < tc.patience <= run.stale:
                log.info("early stop: no better validation AUC for %d epochs", run.stale)
                break
            if run.clock.over():
                log.info("time budget of %.0f s spent after %d epochs", tc.time_budget, run.epoch)
                break
            _seed(tc.seed, epoch, rank)
            run.model.freeze_backbone(epoch < tc.freeze_backbone_epochs)
            net = _wrap(run.model, device, world)  # rewrapped: frozen parameters change per phase
            train_loader = _loader(datasets["train"], run_cfg, train=True, world=world, epoch=epoch)
            hook = (lambda step, e=epoch + 1: on_step(e, step)) if on_step else None
            start = time.perf_counter()
            run.clock.run()
            train = train_epoch(net, train_loader, run.optimizer, device=device, loss_fn=loss_fn,
                                scheduler=run.scheduler, scaler=run.scaler, amp_dtype=precision.dtype,
                                grad_clip=tc.grad_clip, progress=progress and main, on_step=hook,
                                stop=_budget_stop(run, world))
            run.clock.pause()
            if world > 1:
                _broadcast_buffers(run.model)  # evaluate (on every rank) what rank 0 saves
            val = evaluate(run.model, loaders["val"], device=device, amp_dtype=precision.dtype,
                           rule=run_cfg.data.aggregate)
            _end_epoch(run, run_dir, run_cfg, train, val, time.perf_counter() - start, main)
        if world > 1:
            dist.barrier()  # rank 0 has written best.pt
        return _final_evaluation(run, loaders, run_dir, run_cfg, device, precision, main)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _budget_stop(run: TrainState, world: int) -> Callable[[], bool] | None:
    """Stop an epoch when the time budget is spent (rank 0 decides for every rank under DDP)."""
    if run.clock.budget <= 0:
        return None

    def stop() -> bool:
        over = torch.tensor([float(run.clock.over())])
        if world > 1:
            dist.broadcast(over, src=0)
        return bool(over.item())

    return stop


def _finite_loss(loss_fn: Callable, run: TrainState, tc: Any) -> Callable:
    """``loss_fn`` that stops the run at the first NaN / infinite loss (nothing after it is
    worth computing; last.pt keeps the last finished epoch). One host sync per step."""
    steps = [0]

    def checked(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(logits, labels)
        steps[0] += 1
        if not torch.isfinite(loss.detach()).item():
            raise TrainError(
                f"epoch {run.epoch + 1}, step {steps[0]}: the training loss is {loss.item()} "
                f"(the model diverged); retrain with a lower --lr (now {tc.lr:g}) or --amp off "
                f"(now {tc.amp!r})")
        return loss

    return checked


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

    tc = run_cfg.train
    samples = tc.steps_per_epoch * tc.batch_size if train and world == 1 else 0
    loader = make_loader(dataset, tc.batch_size, train=train, workers=tc.workers,
                         balance=run_cfg.data.balance if train else "none",
                         distributed=world > 1, seed=tc.seed + epoch, num_samples=samples)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return loader


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Seed every global RNG from (seed, epoch, rank): a resumed epoch replays exactly."""
    s = (seed * 1_000_003 + epoch) * 1_009 + rank
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)

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
    run.clock.spent = float(extra.get("train_seconds", 0.0))
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
             "stale": run.stale, "train_seconds": run.clock.spent}
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
    rule = run_cfg.data.aggregate
    for split, p in preds.items():
        result[split] = video_metrics(p, calibrated=temperature, rule=rule)
    if result["test"] is None:
        log.warning("the test split is empty: metrics.json has validation metrics only")
    result = _json_safe(result)
    if main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
        update_checkpoint(run_dir / BEST, temperature=temperature)
        split = "test" if "test" in preds else "val"
        _save_figures(run_dir, run.history, preds[split], temperature, split, rule)
        for name, p in preds.items():  # per-video scores, for pooled curves across runs
            ids, labels, scores = p.by_video(1.0, rule)
            table = pd.DataFrame({"video_id": ids, "label": labels, "score": scores})
            atomic_write_text(run_dir / f"scores_{name}.csv", table.to_csv(index=False))
    return result


def _save_figures(run_dir: Path, history: list, preds: Predictions, temperature: float,
                  split: str, rule: str = "mean") -> None:

    _, labels, scores = preds.by_video(1.0, rule)
    calibrated = preds.by_video(temperature, rule)[2]
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
