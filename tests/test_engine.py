"""Training engine: precision choice, the step, evaluation, fit outputs, exact resume, stopping."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from face_fixtures import PORTRAITS, write_blend_manifest
from tiny import TINY_MODEL, ClipSet, tiny_cfg, tiny_sets
from torch.utils.data import DataLoader

from dfdetect import training as engine
from dfdetect.cli import main
from dfdetect.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from dfdetect.data.loaders import make_loader
from dfdetect.models.checkpoint import load_checkpoint, load_model
from dfdetect.models.detector import build_model
from dfdetect.training.epoch import train_step
from dfdetect.training.fit import TrainError, fit, fit_datasets
from dfdetect.training.metrics import binary_metrics
from dfdetect.training.setup import Precision, lr_lambda, select_precision

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_precision_follows_the_device(monkeypatch):
    assert select_precision("cpu") == Precision(None, False)
    assert select_precision("cpu", "bf16") == Precision(torch.bfloat16, False)
    with pytest.raises(ValueError, match="fp16"):
        select_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="auto, bf16, fp16 or off"):
        select_precision("cpu", "fp8")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (7, 5))  # T4
    assert select_precision("cuda") == Precision(torch.float16, True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))  # H100
    assert select_precision("cuda") == Precision(torch.bfloat16, False)
    assert select_precision("cuda", "off") == Precision(None, False)


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda(4, 20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    values = [f(s) for s in range(4, 21)]
    assert values == sorted(values, reverse=True) and f(20) == pytest.approx(0.0, abs=1e-12)


def test_train_step_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model).train()
    data = ClipSet(8, 0)
    x, y = data.frames, torch.tensor(data.labels, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = [train_step(model, x, y, opt, loss_fn=loss_fn, grad_clip=1.0)[0].item() for _ in range(12)]
    assert np.mean(losses[-3:]) < 0.75 * losses[0], losses  # without a working step: flat ~0.69


def test_test_scores_videos_not_clips():
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model)
    data = ClipSet(12, 4, clips_per_video=2)  # 6 videos, labels alternate: mixed? keep consistent
    data.labels = [(i // 2) % 2 for i in range(12)]
    m = engine.evaluate(model, DataLoader(data, batch_size=5), device=torch.device("cpu"))
    assert m["n"] == 6 and m["clip_n"] == 12 and m["n_fake"] == 3
    assert set(m) >= {"accuracy", "balanced_accuracy", "auc", "log_loss", "balanced_log_loss",
                      "confusion_matrix", "loss", "ece"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 3-epoch run of ``tiny_cfg()`` on ``tiny_sets()``; ``seen`` records the folder at step 1."""
    run = tmp_path_factory.mktemp("finished") / "run"
    seen = {}

    def on_step(epoch, step):
        seen.setdefault("steps", []).append(epoch)
        if "config" not in seen:  # during the first step, the config is already on disk
            seen["config"] = (run / "config.json").is_file()
            seen["history"] = (run / "history.csv").is_file()

    result = fit_datasets(tiny_sets(), run, tiny_cfg(), progress=False, on_step=on_step)
    return run, result, seen


def test_fit_writes_the_run_folder(finished_run):
    run, result, seen = finished_run
    assert seen["config"] and not seen["history"]
    assert seen["steps"] == [1] * 4 + [2] * 4 + [3] * 4  # 16 clips, batch 4
    assert json.loads((run / "config.json").read_text())["model"]["hidden"] == 8
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    for col in ("train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc"):
        assert history[col].notna().all(), col
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["test"]["n"] == 8 and metrics["val"]["n"] == 8
    assert 1 <= metrics["best_epoch"] <= 3 and metrics["temperature"] > 0
    # best = highest val AUC; among equal AUCs the lowest val loss
    top = history[history["val_auc"] == history["val_auc"].max()]
    assert metrics["best_epoch"] == int(top.loc[top["val_loss"].idxmin(), "epoch"])
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"] and best["temperature"] == metrics["temperature"]
    assert best["config"]["data"]["frames"] == 4 and best["config"]["data"]["mean"]
    assert best["optimizer"] is not None and best["scheduler"] is not None
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    for png in ("curves.png", "confusion_matrix.png", "roc.png", "reliability.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG", png


def test_test_metrics_are_those_of_best_pt(finished_run):
    run, result, _ = finished_run
    model, _ = load_model(run / "best.pt")
    again = engine.evaluate(model, DataLoader(tiny_sets()["test"], batch_size=3), device=torch.device("cpu"))
    assert again["auc"] == pytest.approx(result["test"]["auc"])
    assert again["log_loss"] == pytest.approx(result["test"]["log_loss"])


def test_a_run_folder_is_not_overwritten_without_resume(finished_run):
    run, _, _ = finished_run
    before = (run / "last.pt").stat().st_mtime_ns
    with pytest.raises(TrainError, match="already holds a run.*--resume"):
        fit_datasets(tiny_sets(), run, tiny_cfg(), progress=False)
    other = RunConfig(data=tiny_cfg().data, train=tiny_cfg().train,
                      model=replace(TINY_MODEL, hidden=16))
    with pytest.raises(TrainError, match="another model config"):
        fit_datasets(tiny_sets(), run, other, resume=True, progress=False)
    assert (run / "last.pt").stat().st_mtime_ns == before


def test_empty_val_split_is_a_clear_error(tmp_path):
    sets = tiny_sets()
    sets["val"] = ClipSet(0, 2)
    with pytest.raises(TrainError, match="the val split has no usable clips"):
        fit_datasets(sets, tmp_path, tiny_cfg(), progress=False)


def test_early_stopping_on_validation_auc(tmp_path):
    # lr 0 and a frozen backbone (fixed BatchNorm statistics): the model never changes
    cfg = tiny_cfg(epochs=6, lr=0.0, patience=2, freeze_backbone_epochs=6)
    result = fit_datasets(tiny_sets(), tmp_path, cfg, progress=False)
    assert result["epochs_run"] == 3 and result["best_epoch"] == 1


KILLED_RUN = """
import os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from tiny import tiny_cfg, tiny_sets
from dfdetect.training.fit import fit_datasets

def kill(epoch, step):
    if epoch == 2 and step == 1:
        os._exit(3)  # like a Colab disconnect: no cleanup, no finally blocks

fit_datasets(tiny_sets(), {run!r}, tiny_cfg(), progress=False, on_step=kill)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(finished_run, tmp_path):
    ref_dir, reference, _ = finished_run
    run = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(TESTS), run=str(run))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # killed during epoch 2
    assert not (run / "metrics.json").exists()

    steps = []
    resumed = fit_datasets(tiny_sets(), run, tiny_cfg(), resume=True, progress=False,
                           on_step=lambda e, s: steps.append(e))
    assert sorted(set(steps)) == [2, 3]  # continued from the saved epoch
    assert resumed == reference
    a, b = load_checkpoint(ref_dir / "best.pt"), load_checkpoint(run / "best.pt")
    assert a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    pd.testing.assert_frame_equal(pd.read_csv(ref_dir / "history.csv").drop(columns="seconds"),
                                  pd.read_csv(run / "history.csv").drop(columns="seconds"))


def test_nan_auc_val_split_still_selects_by_loss(tmp_path):
    sets = tiny_sets()
    sets["val"].labels = [1] * len(sets["val"])  # one class only: AUC undefined
    result = fit_datasets(sets, tmp_path, tiny_cfg(epochs=1), progress=False)
    assert result["val"]["auc"] is None and result["best_epoch"] == 1
    assert not math.isnan(result["test"]["auc"])
    assert np.isfinite(result["val"]["loss"])


# ----------------------------------------------------------------- real faces through fit(manifest)

@pytest.mark.slow
def test_learns_real_faces_vs_blended_faces_from_scratch(tmp_path):
    groups = [(name, 2.1 * k, "") for name in PORTRAITS for k in range(3)]  # 18 groups, 36 videos
    path = write_blend_manifest(tmp_path, groups)
    cfg = RunConfig(
        data=DataConfig(frames=4, size=48, val_fraction=0.25, test_fraction=0.25, balance="none"),
        model=ModelConfig(backbone="resnet18", pretrained="none", hidden=32, dropout=0.2),
        train=TrainConfig(epochs=6, batch_size=4, lr=1e-3, workers=0, patience=0))
    result = fit(path, tmp_path / "run", cfg, progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    print(history.round(3).to_string())
    assert history["train_loss"].iloc[-2:].mean() < 0.8 * history["train_loss"].iloc[0]
    assert history["val_loss"].min() < 0.6  # chance: ln 2 = 0.693
    assert history["val_auc"].max() >= 0.9  # chance: 0.5
    assert result["test"]["n"] >= 8 and result["test"]["auc"] >= 0.8, result["test"]


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    groups = [(name, 0.0, split) for name, split in zip(PORTRAITS, ["train"] * 4 + ["val", "test"])]
    return write_blend_manifest(tmp_path_factory.mktemp("small"), groups, size=32)


def test_cli_train_resume_and_export(small_manifest, tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--pretrained", "none", "--backbone", "resnet18", "--hidden", "8", "--frames", "4",
             "--size", "32", "--batch-size", "4", "--workers", "0", "--balance", "none", "--seed", "3",
             "--no-progress"]
    assert main(["train", str(small_manifest), str(run), "--epochs", "1", *flags]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] | {"backbone": "resnet18", "pretrained": "none", "hidden": 8} == cfg["model"]
    assert (cfg["data"]["frames"], cfg["data"]["size"], cfg["train"]["seed"]) == (4, 32, 3)
    assert "best epoch 1: test AUC" in capsys.readouterr().out

    assert main(["train", str(small_manifest), str(run), "--epochs", "1", *flags]) == 1
    assert "already holds a run" in capsys.readouterr().err

    assert main(["train", str(small_manifest), str(run), "--resume", "--epochs", "2",
                 "--no-progress"]) == 0  # flags not repeated: RUN_DIR/config.json is used
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]

    assert main(["export", str(run / "best.pt"), str(tmp_path / "out")]) == 0
    model, run_cfg = load_model(tmp_path / "out" / "model.safetensors")
    ref, _ = load_model(run / "best.pt")
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    assert run_cfg.data.frames == 4 and model.temperature == ref.temperature


def test_cli_reports_missing_imagenet_weights(small_manifest, tmp_path, capsys, monkeypatch):
    def offline(*_a, **_k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    code = main(["train", str(small_manifest), str(tmp_path / "run"), "--backbone", "resnet18",
                 "--hidden", "8", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--pretrained PATH" in err and "--pretrained none" in err


def test_time_budget_stops_training_and_the_schedule_follows_it(tmp_path):
    from dfdetect.training.setup import BudgetClock

    clock = BudgetClock(10.0)
    f = lr_lambda(2, 1000, clock)
    clock.spent = 5.0  # half the time: the cosine is half-way whatever the step count says
    assert f(3) == pytest.approx(0.5, abs=1e-3)
    clock.spent = 10.0
    assert f(4) == pytest.approx(0.0, abs=1e-9) and clock.over()
    assert not BudgetClock(0.0).over()

    start = time.perf_counter()
    result = fit_datasets(tiny_sets(), tmp_path / "run", tiny_cfg(
        epochs=1000, steps_per_epoch=2, time_budget=1.5, warmup_steps=1), progress=False)
    elapsed = time.perf_counter() - start
    assert 1 < result["epochs_run"] < 1000 and elapsed < 60
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == result["epochs_run"]
    scores = pd.read_csv(tmp_path / "run" / "scores_test.csv")
    assert list(scores.columns) == ["video_id", "label", "score"] and len(scores) == 8
    assert result["test"]["auc"] == pytest.approx(
        binary_metrics(scores["label"].to_numpy(), scores["score"].to_numpy())["auc"], abs=1e-4)


def test_balanced_batches_are_exactly_half_fake():
    data = ClipSet(20, 0)
    data.labels = [1] * 3 + [0] * 17  # 15% FAKE
    loader = make_loader(data, 4, train=True, balance="batch", seed=0, num_samples=40)
    batches = [b["label"] for b in loader]
    assert len(batches) == 10
    assert all(int(b.sum()) == 2 for b in batches)
    again = [b["label"] for b in make_loader(data, 4, train=True, balance="batch", seed=0,
                                                num_samples=40)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    data.labels = [0] * 20
    with pytest.raises(ValueError, match="REAL and FAKE"):
        make_loader(data, 4, train=True, balance="batch")
