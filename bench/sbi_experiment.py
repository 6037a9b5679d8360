"""Self-blended pseudo-fakes vs one manipulation's fakes, tested on another manipulation (issue 7).

What it measures: whether a detector trained on REAL clips with self-blending only (no FAKE clip
seen) detects a manipulation it never saw better or worse than one trained on REAL + FAKE clips
of a single manipulation. Both are tested on held-out people's REAL clips and FAKE clips made by
the *other* manipulation (cross-manipulation, the number of interest); the AUC on held-out fakes
of the *training* manipulation is printed for context.

Protocol (CPU-sized, every choice fixed before seeing a result):

* Data: the offline demo set (:func:`dfdetect.demo.dataset.build_demo_dataset`, 6 people, FAKEs by
  "swap" and "reenact"), faces extracted once (:func:`dfdetect.extraction.pipeline.process_videos`) and
  shared by every run. Work folder ``bench/out/sbi/`` (git-ignored); a rerun reuses the clips
  and face videos and retrains.
* Folds: the 6 groups (people) are shuffled (seed 0) into 3 folds of 2; fold k holds out its
  groups as test and trains on the other 4 (group-disjoint), training seed k. There is no
  validation group (6 people are too few): each run's "val" split is its own training clips
  scored without augmentation, a training-fit monitor only; the model scored is the last
  epoch's (``last.pt``), not one chosen on any held-out data.
* Run "supervised": REAL + FAKE clips of one manipulation (default swap) of the train groups.
* Run "self-blend": the same REAL clips only; on the fly, each REAL training clip becomes a
  self-blended FAKE with probability ``--blend-prob`` (``DataConfig.self_blend_prob``, 0.5,
  one fresh blend per draw). Its fit monitor uses offline self-blended copies of the training
  REAL clips (:func:`dfdetect.augment.copies.augment_manifest`, one per clip), never trained on.
* Same backbone (ResNet-18 from scratch + LSTM), T, size, batch, learning rate and seeds for both.
  The self-blend run has fewer clips per epoch (REAL only), so its epochs are scaled to give
  both runs the same number of optimisation steps (printed).
* Scores: video-level AUC (one uniformly sampled clip per video) through the library
  (``engine.collect_predictions``, ``metrics.binary_metrics``); per fold, mean +- std over
  folds, and pooled over folds (each held-out video scored by the one model that did not see
  its person; mixes three models' calibrations).
* Outputs: ``OUT/runs/<manipulation>-f<fold>/<run>/`` keeps fit's config.json, history.csv,
  metrics.json (fit's own best-epoch numbers, not the ones printed here) and figures; the
  checkpoints are deleted after scoring (~140 MB each).

Run: ``.venv/bin/python bench/sbi_experiment.py`` (5.5-7.5 minutes on 2 shared cores; the first
run also builds the demo set and extracts faces, under 1 minute). ``--reverse`` also runs the
opposite direction (train on reenact, test on swap; about 11 minutes in all); ``--quick`` is a
smoke run (shorter clips, 1 fold, 2 epochs) whose numbers mean nothing. Results repeat exactly
for the same arguments and ``--threads`` (another thread count changes the floating-point sums).
Results: docs/BENCHMARKS.md, "Self-blended pseudo-fakes (issue 7)".
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dfdetect import data
from dfdetect import training as engine
from dfdetect.augment.copies import augment_manifest
from dfdetect.config import (
    DataConfig,
    ExtractConfig,
    FaceConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from dfdetect.demo.dataset import NONE, build_demo_dataset
from dfdetect.demo.fakes import MANIPULATIONS
from dfdetect.extraction.manifest import read_manifest, write_manifest
from dfdetect.extraction.pipeline import process_videos, video_id_for
from dfdetect.models import checkpoint
from dfdetect.training import metrics

ROOT = Path(__file__).resolve().parents[1]
FACE_CFG = FaceConfig(size=128)  # face crops kept small on CPU (the model sees --size px)
QUICK_SPEC = {"frames": 24, "size": (224, 224)}  # --quick: a smaller demo set


@dataclass(frozen=True)
class Fold:
    """One held-out split: its index (also the training seed) and the test groups."""

    index: int
    test_groups: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    """One trained run scored on its fold's held-out videos."""

    fold: int
    run: str
    train_real: int
    train_fake: int
    steps: int
    epochs: int
    fit_auc: float  # last epoch, own training clips (fakes or self-blended copies) scored in eval mode
    videos: pd.DataFrame  # held-out videos: video_id, label, manipulation, score
    seconds: float


# --------------------------------------------------------------------------- data


def prepare_data(out: Path, quick: bool, workers: int) -> tuple[Path, pd.DataFrame]:
    """Build the demo set and extract its faces (both resumable).

    Returns:
        The extraction manifest's path and a table ``video_id, label, group, manipulation``.
    """
    t = time.perf_counter()
    demo = build_demo_dataset(out / "data", seed=0, progress=False, **(QUICK_SPEC if quick else {}))
    process_videos(demo.videos, out / "faces", labels_csv=demo.labels_csv, face_cfg=FACE_CFG,
                   extract_cfg=ExtractConfig(), workers=workers, progress=False)
    manifest = out / "faces" / "manifest.csv"
    df = read_manifest(manifest)
    manip = {video_id_for(f): m for f, m in zip(demo.table["file"], demo.table["manipulation"])}
    df["manipulation"] = df["video_id"].map(manip)
    bad = df[df["status"] != "ok"]
    if len(bad):
        print(f"warning: {len(bad)} clip(s) without a usable face video are left out: "
              f"{bad['video_id'].tolist()}")
    print(f"data: {len(df)} clips, {df['group'].nunique()} groups, ready in "
          f"{time.perf_counter() - t:.0f} s (built/extracted now or reused)")
    return manifest, df[df["status"] == "ok"][["video_id", "label", "group", "manipulation"]]


def make_folds(groups: list[str], n_folds: int, seed: int = 0) -> list[Fold]:
    """Shuffle the groups (``seed``) and cut them into ``n_folds`` held-out sets."""
    order = np.random.default_rng(seed).permutation(sorted(groups))
    return [Fold(k, tuple(sorted(part))) for k, part in enumerate(np.array_split(order, n_folds))]


def write_manifests(manifest: Path, table: pd.DataFrame, fold: Fold, manip: str,
                    tag: str) -> dict[str, Path]:
    """The fold's manifests beside the extraction manifest (so face paths stay valid).

    Returns:
        ``supervised``: train REAL + ``manip`` FAKEs, and every test row; ``selfblend``: train
        REAL and every test row; ``monitor``: train REAL (self-blended copies added later).
    """
    df = read_manifest(manifest)
    info = table.set_index("video_id")
    df = df[df["video_id"].isin(info.index)].copy()
    is_test = df["group"].isin(fold.test_groups).to_numpy()
    kind = info.loc[df["video_id"], "manipulation"].to_numpy()
    df["split"] = np.where(is_test, "test", "train")
    keep = {"supervised": is_test | np.isin(kind, [NONE, manip]),
            "selfblend": is_test | (kind == NONE), "monitor": ~is_test & (kind == NONE)}
    paths = {}
    for name, rows in keep.items():
        paths[name] = manifest.parent / f"manifest.sbi-{tag}-{name}.csv"
        write_manifest(df[rows], paths[name])
    return paths


# --------------------------------------------------------------------------- training


def run_config(args: argparse.Namespace, seed: int, epochs: int, blend_prob: float) -> RunConfig:
    """The settings both runs share; only ``epochs`` and ``self_blend_prob`` differ."""
    return RunConfig(
        face=FACE_CFG,
        data=DataConfig(frames=args.frames, size=args.size, self_blend_prob=blend_prob,
                        balance="sampler", seed=seed),
        model=ModelConfig(backbone="resnet18", pretrained="none", hidden=128),
        train=TrainConfig(epochs=epochs, batch_size=args.batch, lr=args.lr, patience=0,
                          workers=0, seed=seed, calibrate=False),
    )


def steps_per_epoch(dataset: data.FrameSequenceDataset, cfg: RunConfig) -> int:
    """Optimisation steps of one epoch, as fit's loader gives them."""
    return len(data.make_loader(dataset, cfg.train.batch_size, train=True, balance=cfg.data.balance))


def train_and_score(name: str, fold: Fold, cfg: RunConfig, train_manifest: Path,
                    monitor_manifest: Path, test_manifest: Path, run_dir: Path) -> RunResult:
    """Train one run with :func:`engine.fit_datasets` and score its last epoch on the test rows."""
    t = time.perf_counter()
    train = data.FrameSequenceDataset(train_manifest, cfg.data, split="train", train=True)
    datasets = {"train": train,
                "val": data.FrameSequenceDataset(monitor_manifest, cfg.data, split="train"),
                "test": data.FrameSequenceDataset(test_manifest, cfg.data, split="test")}
    rows = read_manifest(train_manifest)
    shutil.rmtree(run_dir, ignore_errors=True)  # every run trains from scratch
    engine.fit_datasets(datasets, run_dir, cfg, device="cpu", progress=False,
                        pos_weight=data.pos_weight(rows[rows["split"] == "train"],
                                                   cfg.data.self_blend_prob))
    model, _ = checkpoint.load_model(run_dir / engine.LAST)
    loader = data.make_loader(datasets["test"], cfg.train.batch_size, train=False)
    ids, labels, scores = engine.collect_predictions(model, loader, device=torch.device("cpu")).by_video()
    history = pd.read_csv(run_dir / "history.csv")
    for ckpt in run_dir.glob("*.pt"):  # ~140 MB each (optimizer state); config, history, plots stay
        ckpt.unlink()
    return RunResult(
        fold=fold.index, run=name, train_real=int((train.labels == 0).sum()),
        train_fake=int((train.labels == 1).sum()), steps=steps_per_epoch(train, cfg) * cfg.train.epochs,
        epochs=cfg.train.epochs, fit_auc=float(history["val_auc"].iloc[-1]),
        videos=pd.DataFrame({"video_id": ids, "label": labels, "score": scores}),
        seconds=time.perf_counter() - t)


def run_fold(args: argparse.Namespace, manifest: Path, table: pd.DataFrame, fold: Fold,
             manip: str) -> list[RunResult]:
    """Both runs of one fold and training direction."""
    tag = f"{manip}-f{fold.index}"
    paths = write_manifests(manifest, table, fold, manip, tag)
    augment_manifest(paths["monitor"], per_video=1, self_blend=True, seed=0, progress=False)
    sup_cfg = run_config(args, fold.index, args.epochs, 0.0)
    sbi_cfg = run_config(args, fold.index, args.epochs, args.blend_prob)
    sup_steps = steps_per_epoch(data.FrameSequenceDataset(paths["supervised"], sup_cfg.data, "train"),
                                sup_cfg)
    sbi_steps = steps_per_epoch(data.FrameSequenceDataset(paths["selfblend"], sbi_cfg.data, "train"),
                                sbi_cfg)
    sbi_cfg = run_config(args, fold.index, max(1, round(args.epochs * sup_steps / sbi_steps)),
                         args.blend_prob)
    runs = args.out / "runs" / tag
    results = [
        train_and_score(f"supervised ({manip})", fold, sup_cfg, paths["supervised"],
                        paths["supervised"], paths["supervised"], runs / "supervised"),
        train_and_score("self-blend", fold, sbi_cfg, paths["selfblend"], paths["monitor"],
                        paths["selfblend"], runs / "selfblend"),
    ]
    info = table.set_index("video_id")["manipulation"]
    for r in results:
        r.videos["manipulation"] = r.videos["video_id"].map(info).to_numpy()
        print(format_row(r, manip), flush=True)
    return results


# --------------------------------------------------------------------------- reporting


def auc(videos: pd.DataFrame, manip: str) -> tuple[float, int, int]:
    """Video AUC of REAL vs ``manip`` FAKE videos: ``(auc, n_real, n_fake)`` (NaN if a class is absent)."""
    rows = videos[videos["manipulation"].isin([NONE, manip])]
    m = metrics.binary_metrics(rows["label"].to_numpy(), rows["score"].to_numpy())
    return m["auc"], int((rows["label"] == 0).sum()), int(m["n_fake"])


def format_row(r: RunResult, manip: str) -> str:
    """One table line: fold, run, training clips and steps, test counts, AUCs, time."""
    other = next(m for m in MANIPULATIONS if m != manip)
    cross, n_real, n_cross = auc(r.videos, other)
    same, _, n_same = auc(r.videos, manip)
    fake = f"{r.train_fake}" if r.train_fake else "0+sbi"
    return (f"{r.fold:>4}  {r.run:<20} {r.train_real:>4}/{fake:<5} {r.epochs:>3}/{r.steps:<4} "
            f"{n_real:>3}/{n_cross:<2}/{n_same:<2}  {r.fit_auc:>6.3f} {cross:>7.3f} {same:>7.3f} "
            f"{r.seconds:>6.0f}")


HEADER = ("fold  run                  train R/F    ep/steps  test R/X/S  fit AUC  AUC-X   AUC-S  "
          "time s")


def summarise(results: list[RunResult], manip: str) -> None:
    """Mean +- std over folds and the pooled AUC of every run name."""
    other = next(m for m in MANIPULATIONS if m != manip)
    print(f"\nsummary, trained on {manip}; X = cross-manipulation ({other}), S = same ({manip}):")
    for name in dict.fromkeys(r.run for r in results):
        mine = [r for r in results if r.run == name]
        cross = np.array([auc(r.videos, other)[0] for r in mine])
        same = np.array([auc(r.videos, manip)[0] for r in mine])
        pooled = pd.concat([r.videos for r in mine])
        px, n_real, n_fake = auc(pooled, other)
        ps, _, n_same = auc(pooled, manip)
        print(f"  {name:<20} AUC-X {np.nanmean(cross):.3f} +- {np.nanstd(cross):.3f} "
              f"(folds {', '.join(f'{v:.2f}' for v in cross)}; pooled {px:.3f} over "
              f"{n_real} REAL / {n_fake} FAKE)   AUC-S {np.nanmean(same):.3f} +- "
              f"{np.nanstd(same):.3f} (pooled {ps:.3f}, {n_same} FAKE)")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sbi", help="work folder")
    p.add_argument("--quick", action="store_true", help="smoke run: small clips, 1 fold, 2 epochs")
    p.add_argument("--reverse", action="store_true", help="also train on reenact, test on swap")
    p.add_argument("--folds", type=int, default=3, help="held-out folds of groups (6 groups)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the supervised run")
    p.add_argument("--frames", type=int, default=8, help="T, frames per clip")
    p.add_argument("--size", type=int, default=64, help="S, frame side fed to the model")
    p.add_argument("--batch", type=int, default=4, help="clips per step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (from scratch)")
    p.add_argument("--blend-prob", type=float, default=0.5, help="DataConfig.self_blend_prob")
    p.add_argument("--workers", type=int, default=2, help="face-extraction processes")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    args.run_folds = args.folds
    if args.quick:  # the groups are still cut into --folds folds; only the first one is run
        args.out, args.run_folds, args.epochs = args.out.with_name(args.out.name + "-quick"), 1, 2
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # one intra-op thread: on a shared 2-core machine two threads made a training step ~5x
    # slower (contention), see docs/BENCHMARKS.md "Data loading"; the runs are small anyway
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"sbi_experiment: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; args {vars(args)}")
    manifest, table = prepare_data(args.out, args.quick, args.workers)
    folds = make_folds(sorted(table["group"].unique()), args.folds)
    print("folds (held-out groups): " + "; ".join(f"{f.index}: {', '.join(f.test_groups)}" for f in folds))
    for manip in MANIPULATIONS[: 2 if args.reverse else 1]:
        print(f"\ntrain on {manip}; R/F = REAL/FAKE training clips (0+sbi: self-blended on the fly), "
              f"test R/X/S = REAL / cross-manipulation FAKE / same-manipulation FAKE videos")
        print(HEADER)
        results = [r for fold in folds[:args.run_folds]
                   for r in run_fold(args, manifest, table, fold, manip)]
        summarise(results, manip)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
