"""DistributedDataParallel on CPU: 2 processes, gloo, set up the way torchrun sets them up."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from face_fixtures import PORTRAITS, write_blend_manifest
from tiny import TINY_MODEL

from dfdetect import data
from dfdetect import training as engine
from dfdetect.config import DataConfig, RunConfig, TrainConfig
from dfdetect.models.checkpoint import load_model

CFG = RunConfig(
    data=DataConfig(frames=4, size=32, balance="loss"),
    model=TINY_MODEL,
    train=TrainConfig(epochs=2, batch_size=2, lr=1e-3, workers=0, patience=0),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, manifest: str, run_dir: str, log_dir: str) -> None:
    """One rank: torchrun's environment, then the public fit(); records every file it renames."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    writes = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # every atomic write of dfdetect ends here
        writes.append(Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    try:
        engine.fit(manifest, run_dir, CFG, progress=False)
    finally:
        os.replace = real_replace
        Path(log_dir, f"rank{rank}.json").write_text(json.dumps(writes))


@pytest.mark.slow
def test_ddp_two_processes_rank0_writes_metrics_cover_all_samples(tmp_path):
    # odd val (3 videos) and test (1 video... +2) sizes: the DistributedSampler pads them
    splits = ["train"] * 4 + ["val", "test"]
    groups = [(name, 0.0, split) for name, split in zip(PORTRAITS, splits)]
    groups += [("obama.jpg", 1.0, "test")]
    manifest = write_blend_manifest(tmp_path / "data", groups, size=32)
    df = pd.read_csv(manifest)
    df = df[~((df["group"] == "obama_1") & (df["label"] == "REAL"))]  # 3 test videos
    df.to_csv(manifest, index=False)
    run, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()

    mp.spawn(_worker, args=(2, _free_port(), str(manifest), str(run), str(logs)), nprocs=2,
             join=True)

    writes = {r: json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert writes[1] == [], writes[1]  # rank 1 wrote nothing
    assert {"config.json", "history.csv", "last.pt", "best.pt", "metrics.json"} <= set(writes[0])
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]

    # metrics cover every rank's samples exactly once: equal to one process scoring everything
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 3 and metrics["val"]["n"] == 2
    model, run_cfg = load_model(run / "best.pt")
    single = {split: engine.evaluate(model, data.make_loader(
        data.FrameSequenceDataset(manifest, run_cfg.data, split=split, cache=True), 2, train=False),
        device=torch.device("cpu")) for split in ("val", "test")}
    for split in ("val", "test"):
        for key in ("n", "accuracy", "loss", "log_loss"):
            assert metrics[split][key] == pytest.approx(single[split][key], abs=1e-6), (split, key)
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    last, _ = load_model(run / "last.pt")
    val_last = engine.evaluate(last, data.make_loader(
        data.FrameSequenceDataset(manifest, run_cfg.data, split="val", cache=True), 2, train=False),
        device=torch.device("cpu"))
    assert history["val_loss"].iloc[-1] == pytest.approx(val_last["loss"], abs=1e-6)
