"""Data loading speed: clips/s and frames/s per worker, T=20 clips at 112 and 224 px, from face mp4s.

Builds face videos as extraction writes them (224x224 H.264, crf 18; default 300 frames = 10 s
at 30 fps, DFDC's length) from the real portraits in dfdetect/demo/sample, then times
FrameSequenceDataset through make_loader (training clips: random offset and stride, no
augmentation, batch 8), two ways:

* ``decode``: every clip decodes its face video (up to the clip's last frame);
* ``cache``: frames decoded once into a uint8 memory-mapped file (``cache=True``).

Each setting runs in a fresh process pinned to ``workers`` CPU cores (so "per worker" is "per
core"), twice, keeping the faster run (other work on a shared machine only slows a run down).
``frames/CPU-s`` divides the frames by the CPU time the workers used: what one core delivers
when it is not shared, independent of the machine's load.
Target (training issue): >= 800 frames/s per core at 112 px.

Usage: ``python bench/data_speed.py [--quick] [--frames 300] [--workers 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "data_speed"
PORTRAITS = ("grace_hopper.jpg", "obama.jpg", "astronaut.png", "obama2.jpg", "biden.jpg", "camera.png")
T = 20


def build(out: Path, videos: int, frames: int) -> Path:
    """Face videos (animated portrait crops) + manifest under ``out``; reused when present."""
    import pandas as pd

    from dfdetect.demo import synth
    from dfdetect.extraction import manifest
    from dfdetect.media import video

    path = out / manifest.MANIFEST_NAME
    if path.is_file() and len(manifest.read_manifest(path)) == videos:
        return path
    (out / "faces").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(videos):
        name = PORTRAITS[i % len(PORTRAITS)]
        img = synth.load_rgb(ROOT / "dfdetect" / "demo" / "sample" / name)
        s = min(img.shape[:2])
        img = img[:s, (img.shape[1] - s) // 2:(img.shape[1] + s) // 2]  # square, face-centred enough
        clip = synth.animate(img, frames, (224, 224), synth.CameraPath(phase=i, cycles=2))
        video.write_video(out / "faces" / f"v{i}.mp4", clip, fps=30, crf=18)
        rows.append({"video_id": f"v{i}", "file": f"v{i}.mp4", "label": "REAL" if i % 2 else "FAKE",
                     "group": f"v{i}", "split": "train", "face_video": f"faces/v{i}.mp4",
                     "frames_read": frames, "frames_with_face": frames, "status": "ok",
                     "source": "extract"})
    manifest.write_manifest(pd.DataFrame(rows), path)
    return path


def child(spec: dict) -> dict:
    """One timed setting, in this (pinned) process: wall-clock rate and workers' CPU time."""
    import resource

    import torch

    from dfdetect.config import DataConfig
    from dfdetect.data.dataset import FrameSequenceDataset
    from dfdetect.data.loaders import make_loader

    torch.set_num_threads(1)
    cfg = DataConfig(frames=T, size=spec["size"])
    ds = FrameSequenceDataset(spec["manifest"], cfg, train=True, cache=spec["mode"] == "cache")
    loader = make_loader(ds, batch_size=8, train=True, workers=spec["workers"], balance="none",
                         seed=0)
    clips, start, deadline = 0, None, None
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    while deadline is None or time.perf_counter() < deadline:
        batches = iter(loader)
        for batch in batches:
            if start is None:  # the first batch pays for worker start-up: not timed
                start = time.perf_counter()
                deadline = start + spec["seconds"]
                continue
            clips += len(batch["label"])
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
        del batches  # joins the workers, so their CPU time is counted below
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    total = clips + 8  # the untimed first batch used CPU too
    return {"clips_s": clips / elapsed, "frames_s": clips * T / elapsed,
            "frames_cpu_s": total * T / cpu if cpu > 0 else float("nan")}


def run(spec: dict, cores: list[int]) -> dict:
    """Run ``spec`` in a fresh process pinned to ``cores``; the faster of two runs."""
    best = None
    for _ in range(2):
        cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), *cmd], env=env,
                             capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        best = out if best is None or out["frames_s"] > best["frames_s"] else best
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="fewer videos, shorter timings")
    ap.add_argument("--frames", type=int, default=300, help="frames per face video (default 300)")
    ap.add_argument("--videos", type=int, default=12, help="face videos (default 12)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per setting")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if a.quick:
        a.videos, a.seconds = 6, 3.0
    cpus = sorted(os.sched_getaffinity(0))
    path = build(OUT / f"{a.videos}x{a.frames}", a.videos, a.frames)
    print(f"{a.videos} face videos, 224x224 H.264, {a.frames} frames each; clips of T={T}, batch 8; "
          f"{len(cpus)} CPU(s) here, load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':>5} {'mode':>7} {'workers':>7} {'clips/s':>8} {'frames/s':>9} "
          f"{'frames/s/worker':>16} {'frames/CPU-s':>13}")
    for size in (112, 224):
        for mode in ("decode", "cache"):
            for w in a.workers:
                if w > len(cpus):
                    continue
                spec = {"manifest": str(path), "size": size, "mode": mode, "workers": w,
                        "seconds": a.seconds}
                r = run(spec, cpus[:w])
                print(f"{size:>5} {mode:>7} {w:>7} {r['clips_s']:>8.1f} {r['frames_s']:>9.0f} "
                      f"{r['frames_s'] / w:>16.0f} {r['frames_cpu_s']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
