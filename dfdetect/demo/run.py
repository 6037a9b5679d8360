"""The offline demo: the whole pipeline on a small data set built from the shipped real faces.

``python -m dfdetect demo OUT`` (``make demo``) runs, each step reusing what an earlier run
finished: build the demo videos -> extract faces -> balance REAL by augmentation -> train
from scratch on CPU -> predict the held-out test videos from their raw files (with
heatmaps) -> ``OUT/report.md``. It shows that the pipeline works end to end; with ~40 short
clips and no pretrained weights it says nothing about real-world accuracy, and the report
says so.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfdetect.augment.copies import augment_manifest
from dfdetect.config import (
    DataConfig,
    ExtractConfig,
    FaceConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from dfdetect.demo.dataset import build_demo_dataset
from dfdetect.extraction.pipeline import process_videos
from dfdetect.inference.folder import predict_folder
from dfdetect.media.files import atomic_write_text
from dfdetect.training.fit import fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run (small enough for ~10 minutes on 2 CPU cores)."""

    seed: int = 0  # every random choice: data, augmentation, splits, initialisation
    clip_frames: int = 48  # frames per demo clip
    face: FaceConfig = field(default_factory=lambda: FaceConfig(size=128))  # crops kept small on CPU
    extract: ExtractConfig = field(default_factory=ExtractConfig)  # every frame of each clip
    run: RunConfig = field(default_factory=lambda: RunConfig(
        face=FaceConfig(size=128),
        data=DataConfig(frames=8, size=112, val_fraction=0.2, test_fraction=0.25),
        model=ModelConfig(pretrained="none"),  # no internet: ResNeXt50 from scratch
        train=TrainConfig(epochs=4, batch_size=4, lr=3e-4, workers=0, patience=0),
    ))
    workers: int = 2  # extraction processes


def _step(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def run_demo(out_dir: str | Path = "demo_out", cfg: DemoConfig | None = None,
             progress: bool = True) -> Path:
    """Run the demo end to end and write ``OUT/report.md``; return its path.

    Args:
        out_dir: Output folder (``data/``, ``faces/``, ``run/``, ``predictions/``, ``report.md``).
        cfg: Demo settings (default :class:`DemoConfig`).
        progress: Show progress bars.
    """

    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    timings: dict[str, float] = {}

    t = _step("1/5 building the demo data set from the shipped faces")
    demo = build_demo_dataset(out / "data", seed=cfg.seed, progress=progress, frames=cfg.clip_frames)
    timings["data"] = time.perf_counter() - t

    t = _step("2/5 extracting faces")
    process_videos(demo.videos, out / "faces", labels_csv=demo.labels_csv, face_cfg=cfg.face,
                   extract_cfg=cfg.extract, workers=cfg.workers, progress=progress)
    timings["extract"] = time.perf_counter() - t

    t = _step("3/5 balancing REAL with clip-consistent augmented copies")
    manifest = out / "faces" / "manifest.csv"
    augment_manifest(manifest, ratio=1.0, seed=cfg.seed, progress=progress)
    timings["augment"] = time.perf_counter() - t

    t = _step("4/5 training ResNeXt50 + LSTM from scratch on CPU")
    run_dir = out / "run"
    metrics = fit(manifest, run_dir, cfg.run, resume=(run_dir / "last.pt").exists(), progress=progress)
    timings["train"] = time.perf_counter() - t

    t = _step("5/5 predicting the held-out test videos from their raw files")
    test_files = _test_videos(run_dir, demo.videos)
    preds = predict_folder(test_files, run_dir / "best.pt", out / "predictions", heatmaps=True,
                           progress=progress)
    timings["predict"] = time.perf_counter() - t

    report = write_report(out, demo.table, metrics, preds, timings)
    print(f"\nreport: {report.resolve()}")
    return report


def _test_videos(run_dir: Path, videos: Path) -> list[Path]:
    """Raw video files of the test split's extracted (not augmented) rows."""
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str, keep_default_na=False)
    rows = splits[(splits["split"] == "test") & (splits["source"] == "extract")]
    return [videos / f for f in sorted(set(rows["file"]))]


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _metric_rows(metrics: dict) -> pd.DataFrame:
    rows = []
    for split in ("val", "test"):
        m = metrics.get(split) or {}
        rows.append({"split": split, **{k: (round(v, 3) if isinstance(v, float) else v)
                                        for k, v in m.items() if k in _SHOWN}})
    return pd.DataFrame(rows)


_SHOWN = ("n", "accuracy", "balanced_accuracy", "auc", "log_loss", "balanced_log_loss")


def write_report(out: Path, data: pd.DataFrame, metrics: dict, preds: pd.DataFrame,
                 timings: dict[str, float]) -> Path:
    """Write ``OUT/report.md`` (figures linked by relative path); return its path."""

    counts = data.groupby(["label", "manipulation"]).size().reset_index(name="clips")
    shown = preds[["file", "label", "score", "confidence", "frames_used", "faces"]].copy()
    shown["score"] = shown["score"].map(lambda s: "" if pd.isna(s) else f"{float(s):.3f}")
    shown["confidence"] = shown["confidence"].map(lambda s: "" if pd.isna(s) else f"{float(s):.3f}")
    truth = dict(zip(data["file"], data["label"]))
    shown.insert(1, "true", [truth.get(Path(f).name, "?") for f in shown["file"]])
    heat = [f"![{Path(f).name}](predictions/{f})" for f in preds.get("heatmap_file", []) if f]
    total = sum(timings.values())
    text = f"""# dfdetect demo report

**What this shows:** the pipeline runs end to end offline (face extraction, augmentation,
training, evaluation, prediction from raw video, heatmaps). **What it does not show:** real-world
accuracy. The data set is {len(data)} short synthetic clips made from {data['group'].nunique()} real
people (animated photos and one real video; FAKE = face swaps and mouth re-enactments), and the
ResNeXt50 + LSTM is trained from scratch for a few CPU epochs with no pretrained weights on ~20
training clips: expect near-chance metrics and nearly the same score for every video (the model
has not learned the manipulations). Train on a real data set with ImageNet weights on a GPU for a
detector.

## Data
{_table(counts)}

## Metrics (video level, best epoch by validation AUC)
{_table(_metric_rows(metrics))}

Best epoch: {metrics.get('best_epoch', '?')}. Full numbers: `run/metrics.json`; per epoch: `run/history.csv`.

![training curves](run/curves.png)
![confusion matrix](run/confusion_matrix.png)
![ROC](run/roc.png)
![reliability](run/reliability.png)

## Predictions on the held-out test videos (from the raw files)
{_table(shown)}

## Grad-CAM heatmaps
{chr(10).join(heat) if heat else "(none)"}

## Time
{_table(pd.DataFrame([{k: f"{v:.0f} s" for k, v in {**timings, "total": total}.items()}]))}
"""
    path = out / "report.md"
    atomic_write_text(path, text)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    return path
