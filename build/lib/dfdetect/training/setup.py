"""What a run is built from: precision, device, the loss, the warm-up + cosine schedule, the optimiser.

Precision follows the device (:func:`select_precision`): bf16 autocast on GPUs with compute
capability >= 8 (Ampere+), fp16 with a GradScaler on older ones (T4, V100), fp32 on CPU. Colab's
``describe_device`` uses the same rule.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dfdetect.config import RunConfig
from dfdetect.models.detector import build_model


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




class BudgetClock:
    """Training seconds spent against ``TrainConfig.time_budget`` (evaluation not counted).

    ``run()`` opens a timed stretch (an epoch's training), ``pause()`` closes it; ``spent`` is
    restored from ``last.pt`` on resume.
    """

    def __init__(self, budget: float = 0.0, spent: float = 0.0):
        self.budget, self.spent, self._since = float(budget), float(spent), None

    def run(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.spent += time.perf_counter() - self._since
            self._since = None

    def seconds(self) -> float:
        """Training seconds so far, the open stretch included."""
        return self.spent + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def fraction(self) -> float:
        """Share of the budget used, in ``[0, inf)``; 0 without a budget."""
        return self.seconds() / self.budget if self.budget > 0 else 0.0

    def over(self) -> bool:
        """The budget is spent (never without one)."""
        return self.budget > 0 and self.fraction() >= 1.0


def lr_lambda(warmup_steps: int, total_steps: int, clock: BudgetClock | None = None
              ) -> Callable[[int], float]:
    """LR factor per step for LambdaLR: linear warm-up, then cosine decay to 0 at ``total_steps``,
    or earlier when ``clock`` has a time budget: progress is the larger of the step and the
    time fractions, so a time-limited run still ends its schedule at the end of its time."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if clock is not None and clock.budget > 0:
            done = max(done, clock.fraction())
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given; else this process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


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
    clock: BudgetClock = field(default_factory=BudgetClock)  # TrainConfig.time_budget


def make_loss_fn(balance: str, pos_weight: float, device: torch.device,
                 distributed: bool = False) -> nn.Module:
    """``BCEWithLogitsLoss``, weighted by ``pos_weight`` when classes are balanced by the loss.

    Under DDP there is no weighted sampler, so ``balance="sampler"`` / ``"batch"`` fall back to
    the loss.
    """
    by_loss = balance == "loss" or (balance in ("sampler", "batch") and distributed)
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight if by_loss else 1.0, device=device))


def param_groups(model: nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float
                 ) -> list[dict[str, Any]]:
    """AdamW groups: backbone at ``lr * backbone_lr_scale`` (fine-tuning pretrained weights), the
    rest at ``lr``; no weight decay on biases and normalisation weights (1-D parameters)."""
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups = []
    for part, scale in (("backbone", backbone_lr_scale), ("head", 1.0)):
        params = [p for p in model.parameters() if (id(p) in in_backbone) == (part == "backbone")]
        for decay in (True, False):
            chosen = [p for p in params if (p.dim() > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr * scale,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups


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
    optimizer = torch.optim.AdamW(param_groups(model, tc.lr, tc.backbone_lr_scale, tc.weight_decay),
                                  lr=tc.lr)
    warmup = tc.warmup_steps or max(1, round(tc.warmup_epochs * steps_per_epoch))
    clock = BudgetClock(tc.time_budget)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup, tc.epochs * steps_per_epoch, clock))
    scaler = torch.amp.GradScaler(device.type) if precision.scaler else None
    return TrainState(model, optimizer, scheduler, scaler, clock=clock)
