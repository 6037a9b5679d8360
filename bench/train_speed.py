"""Training throughput in frames/s: a seed-style loop vs dfdetect's fit step vs the model alone.

* (a) **seed-style**: the reference project's loop: fp32, no channels_last, batch 4, Adam, a
  ``loss.item()`` and an accuracy on the host every step, over the real FrameSequenceDataset and
  DataLoader decoding each clip from its face video (as the reference did); face videos made
  from the real portraits in dfdetect/demo/sample.
* (b) **fit step**: :func:`dfdetect.training.epoch.train_epoch` (what ``fit`` runs per epoch) with what
  ``fit`` builds (:func:`~dfdetect.training.epoch.build_training`: AdamW + schedule, grad clipping, mixed
  precision from the device, channels_last on GPU) over the same videos through the Dataset as
  ``fit`` opens it (``DataConfig.cache``: frames decoded once into a memory-mapped cache, built
  before timing as ``fit`` builds it before epoch 1), at the bench's batch size (64 on a GPU).
* (c) **model only**: :func:`dfdetect.training.epoch.train_step` on random tensors already on the device,
  same settings as (b): the ceiling for (b).
* (d) **data loading only**: the Dataset/DataLoader iterated without a model, from the frame
  cache (as in (b)) and decoding per clip (as in (a)): the other ceiling for (b).

Targets (on a GPU): (b) >= 4x (a), and (b) >= 90% of (c). On a CPU every mode is fp32, so the
ratios say little; the defaults there are small (resnet18, LSTM 256, T=8, 2 timed steps) so it
finishes in about a minute.
Frames/s = clips x frames per clip / seconds, timed after warm-up steps, with CUDA synchronised.

Usage: ``python bench/train_speed.py [--backbone resnext50_32x4d] [--steps 20] [--batch 64] ...``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Subset

from dfdetect import data
from dfdetect import training as engine
from dfdetect.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from dfdetect.demo import synth
from dfdetect.extraction import manifest
from dfdetect.media import video
from dfdetect.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg", "camera.png")
FACE_SIZE = 224  # face videos as extraction writes them (FaceConfig.size)
VIDEO_FRAMES = 48  # frames per face video (training picks T of them at a random offset)


def make_face_videos(root: Path, rows: int) -> Path:
    """``rows`` manifest rows over 12 real-face videos (6 portraits x 2 camera paths, half FAKE)."""
    (root / "faces").mkdir(parents=True, exist_ok=True)
    files = []
    for k, name in enumerate(PORTRAITS * 2):
        clip = synth.animate(synth.load_rgb(ROOT / "dfdetect" / "demo" / "sample" / name), VIDEO_FRAMES,
                             (FACE_SIZE, FACE_SIZE), synth.CameraPath(phase=1.3 * k))
        rel = f"faces/v{k}.mp4"
        video.write_video(root / rel, clip, fps=25)
        files.append(rel)
    table = [{"video_id": f"c{i}", "file": f"c{i}.mp4", "label": "FAKE" if i % 2 else "REAL",
              "group": f"g{i}", "split": "train", "face_video": files[i % len(files)],
              "frames_read": VIDEO_FRAMES, "frames_with_face": VIDEO_FRAMES, "status": "ok",
              "source": "extract"} for i in range(rows)]
    manifest.write_manifest(pd.DataFrame(table), root / "manifest.csv")
    return root / "manifest.csv"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_style(run_cfg: RunConfig, dataset, device: torch.device, batch: int, steps: int,
               warmup: int, workers: int) -> float:
    """(a) The reference loop: fp32, Adam, host sync every step. Returns frames/s."""
    torch.manual_seed(0)
    model = build_model(run_cfg.model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loader = data.make_loader(Subset(dataset, range((warmup + steps) * batch)), batch, train=True,
                              workers=workers, balance="none")
    correct = seen = 0
    for i, item in enumerate(loader):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = item["frames"].to(device), item["label"].to(device).float()
        out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = loss.item()  # the reference logs every step's loss and accuracy on the host
        correct += int(((out > 0).float() == y).sum().item())
        seen += len(y)
    _sync(device)
    return steps * batch * run_cfg.data.frames / (time.perf_counter() - start)


def fit_step(run_cfg: RunConfig, dataset, device: torch.device, steps: int, warmup: int) -> float:
    """(b) ``train_epoch`` as ``fit`` runs it, on the real loader. Returns frames/s."""
    tc, precision = run_cfg.train, engine.select_precision(device, run_cfg.train.amp)
    state = engine.build_training(run_cfg, device, precision, steps_per_epoch=steps)
    loss_fn = engine.make_loss_fn("none", 1.0, device)

    def epoch(n: int, offset: int) -> None:
        subset = Subset(dataset, range(offset, offset + n * tc.batch_size))
        loader = data.make_loader(subset, tc.batch_size, train=True, workers=tc.workers,
                                  balance="none", seed=offset)
        engine.train_epoch(state.model, loader, state.optimizer, device=device, loss_fn=loss_fn,
                           scheduler=state.scheduler, scaler=state.scaler,
                           amp_dtype=precision.dtype, grad_clip=tc.grad_clip)

    epoch(warmup, 0)
    _sync(device)
    start = time.perf_counter()
    epoch(steps, warmup * tc.batch_size)  # includes starting the loader's workers, as fit does
    _sync(device)
    return steps * tc.batch_size * run_cfg.data.frames / (time.perf_counter() - start)


def loader_only(run_cfg: RunConfig, dataset, batch: int, steps: int, warmup: int) -> float:
    """(d) The Dataset/DataLoader alone (decode, resize, normalise): the input ceiling. Frames/s."""
    loader = data.make_loader(Subset(dataset, range((warmup + steps) * batch)), batch, train=True,
                              workers=run_cfg.train.workers, balance="none")
    for i, _ in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
    return steps * batch * run_cfg.data.frames / (time.perf_counter() - start)


def model_only(run_cfg: RunConfig, device: torch.device, steps: int, warmup: int) -> float:
    """(c) ``train_step`` on random tensors already on the device. Returns frames/s."""
    tc, dc = run_cfg.train, run_cfg.data
    precision = engine.select_precision(device, tc.amp)
    state = engine.build_training(run_cfg, device, precision, steps_per_epoch=steps)
    loss_fn = engine.make_loss_fn("none", 1.0, device)
    x = torch.randn(tc.batch_size, dc.frames, 3, dc.size, dc.size, device=device)
    y = (torch.arange(tc.batch_size, device=device) % 2).float()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        engine.train_step(state.model, x, y, state.optimizer, loss_fn=loss_fn, scaler=state.scaler,
                          amp_dtype=precision.dtype, grad_clip=tc.grad_clip, scheduler=state.scheduler)
    _sync(device)
    return steps * tc.batch_size * dc.frames / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnext50_32x4d" if gpu else "resnet18")
    p.add_argument("--hidden", type=int, default=2048 if gpu else 256, help="LSTM hidden size")
    p.add_argument("--frames", type=int, default=20 if gpu else 8, help="T")
    p.add_argument("--size", type=int, default=112, help="frame side, pixels")
    p.add_argument("--batch", type=int, default=64 if gpu else 4, help="(b) and (c) batch")
    p.add_argument("--seed-batch", type=int, default=4, help="(a) batch (the reference's)")
    p.add_argument("--steps", type=int, default=20 if gpu else 2, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3 if gpu else 1, help="untimed steps first")
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1) if gpu else 2)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    return p.parse_args()


def main() -> None:
    a = parse_args()
    device = engine.default_device()
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as fit does
    run_cfg = RunConfig(
        data=DataConfig(frames=a.frames, size=a.size, balance="none"),
        model=ModelConfig(backbone=a.backbone, pretrained="none", hidden=a.hidden),
        train=TrainConfig(batch_size=a.batch, amp=a.amp, workers=a.workers),
    )
    precision = engine.select_precision(device, a.amp)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} threads")
    print(f"model: {a.backbone} + LSTM {a.hidden}, T={a.frames}, {a.size} px; fit step: "
          f"{precision.dtype or 'fp32'}, channels_last={device.type == 'cuda'}, batch {a.batch}, "
          f"{a.workers} workers; {a.steps} timed steps after {a.warmup}")
    rows = (a.warmup + a.steps) * max(a.batch, a.seed_batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_face_videos(Path(tmp), rows)
        decoding = data.FrameSequenceDataset(path, run_cfg.data, split="train", train=True)
        cached = data.FrameSequenceDataset(path, run_cfg.data, split="train", train=True,
                                           cache=run_cfg.data.cache, cache_workers=a.workers)
        results = {
            f"(a) seed-style loop, fp32, batch {a.seed_batch}": seed_style(
                run_cfg, decoding, device, a.seed_batch, a.steps, a.warmup, a.workers),
            f"(b) dfdetect fit step, batch {a.batch}": fit_step(run_cfg, cached, device, a.steps, a.warmup),
            f"(c) model only, synthetic, batch {a.batch}": model_only(run_cfg, device, a.steps, a.warmup),
            f"(d) data loading only, frame cache, batch {a.batch}": loader_only(
                run_cfg, cached, a.batch, a.steps, a.warmup),
            f"(d) data loading only, decoding, batch {a.batch}": loader_only(
                run_cfg, decoding, a.batch, a.steps, a.warmup),
        }
    for label, fps in results.items():
        print(f"{label:<44} {fps:10.1f} frames/s")
    a_, b_, c_, *_ = results.values()
    print(f"(b)/(a) = {b_ / a_:.2f}x (target >= 4x); (b)/(c) = {100 * b_ / c_:.0f}% (target >= 90%)"
          + ("" if device.type == "cuda" else "  [CPU: every mode is fp32; targets are for a GPU]"))


if __name__ == "__main__":
    main()
