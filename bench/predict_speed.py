"""Inference speed: seconds per 10 s 1080p H.264 video on CPU, ``predict`` vs a seed-style pipeline.

The video is the real talking-head clip in dfdetect/demo/sample (640x360) upscaled to 1920x1080, its first
10 s (240 frames at 23.976 fps), H.264 crf 23, x264's default keyframe interval (cached in
bench/out/). The model is the DEFAULT architecture (ResNeXt50_32x4d + LSTM(2048), T = 20,
112 px) with random weights (speed does not depend on them), saved as a checkpoint and loaded
once; the face detector is loaded once too.

* **predict**: ``Predictor.predict`` with default settings (T frames sampled evenly over the
  whole video, faces detected on those frames only, one batch through the model).
* **seed-style**: decode every frame, detect faces on every frame, crop, feed the first T
  frames with a face to the model (what the reference notebook does, with our detector).

Each pipeline runs ``--repeat`` times after one warm-up and the fastest run is kept (other work
on a shared machine only ever slows a run down). Prints wall seconds per video, the stage
breakdown of ``predict`` and the ratio. Target on 2 CPU cores: predict <= 3 s per video.
Usage: ``python bench/predict_speed.py [--repeat N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dfdetect.config import ModelConfig, RunConfig
from dfdetect.data.preprocess import preprocess_clip
from dfdetect.inference.predictor import Predictor
from dfdetect.media import video
from dfdetect.models.checkpoint import save_checkpoint
from dfdetect.models.detector import build_model

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "dfdetect" / "demo" / "sample" / "WolfgangLanger_Pexels.mp4"
OUT = ROOT / "bench" / "out"
SECONDS = 10
TARGET_S = 3.0


def make_video(path: Path) -> Path:
    """The first SECONDS of the real sample video, upscaled to 1920x1080 (cached)."""
    if path.is_file():
        return path
    info = video.probe(SOURCE)
    n = round(SECONDS * info.fps)
    with video.VideoWriter(path, fps=info.fps, crf=23) as writer:
        for _, frame in video.iter_frames(SOURCE, max_frames=n):
            writer.write(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_CUBIC))
    return path


def seed_style(path: Path, predictor: Predictor) -> dict[str, float]:
    """Decode and detect every frame, then score the first T face crops."""
    t0 = time.perf_counter()
    cropper, cfg = predictor.cropper, predictor.cfg
    faces, decode, detect = [], 0.0, 0.0
    frames = video.iter_frames(path)
    while True:
        t = time.perf_counter()
        item = next(frames, None)
        decode += time.perf_counter() - t
        if item is None:
            break
        t = time.perf_counter()
        boxes = cropper.detect(item[1])
        if boxes:
            faces.append(cropper.crop(item[1], boxes[0]))
        detect += time.perf_counter() - t
    t = time.perf_counter()
    clip = preprocess_clip(np.stack(faces[:cfg.data.frames]), cfg.data).unsqueeze(0)
    with torch.inference_mode():
        predictor.model(clip.to(predictor.device))
    model = time.perf_counter() - t
    return {"total": time.perf_counter() - t0, "decode": decode, "detect+crop": detect,
            "model": model, "frames": float(len(faces))}


def best_of(fn, repeat: int) -> dict[str, float]:
    fn()  # warm-up: first-call allocations, lazy imports
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r["total"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per pipeline (fastest kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    clip = make_video(OUT / "predict_speed_1080p.mp4")
    info = video.probe(clip)
    print(f"video: {info.width}x{info.height}, {info.frames} frames, {info.duration:.1f} s; "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg = RunConfig(model=ModelConfig(pretrained="none"))
        torch.manual_seed(0)
        ckpt = save_checkpoint(Path(tmp) / "random.pt", model=build_model(run_cfg.model),
                               run_cfg=run_cfg, epoch=0, metrics={})
        t = time.perf_counter()
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
        _ = predictor.cropper
        print(f"model + detector loaded once in {time.perf_counter() - t:.1f} s "
              f"({run_cfg.model.backbone} + LSTM({run_cfg.model.hidden}), "
              f"T={run_cfg.data.frames}, {run_cfg.data.size} px)")
        with predictor:
            ours = best_of(lambda: predictor.predict(clip).timings, a.repeat)
            seed = best_of(lambda: seed_style(clip, predictor), a.repeat)
    stages = ", ".join(f"{k} {v:.2f}" for k, v in ours.items() if k != "total")
    print(f"predict    : {ours['total']:.2f} s/video  ({stages})")
    seed_stages = ", ".join(f"{k} {v:.2f}" for k, v in seed.items() if k not in ("total", "frames"))
    print(f"seed-style : {seed['total']:.2f} s/video  ({seed_stages}; {int(seed['frames'])} frames "
          "with a face)")
    verdict = "meets" if ours["total"] <= TARGET_S else "MISSES"
    print(f"speed-up {seed['total'] / ours['total']:.1f}x; predict {verdict} the {TARGET_S:.0f} s "
          "target")


if __name__ == "__main__":
    main()
