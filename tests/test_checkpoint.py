"""Checkpoints: weights_only round trips, prefix stripping, refusal of unsafe/corrupt files, export."""

from __future__ import annotations

import json
import pickle
import urllib.error

import pytest
import torch
from tiny import TINY_MODEL
from torch import nn

from dfdetect import __version__
from dfdetect.config import DataConfig, RunConfig, TrainConfig, from_dict
from dfdetect.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    clean_state_dict,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
    update_checkpoint,
)
from dfdetect.models.detector import build_model

CFG = RunConfig(data=DataConfig(frames=3, size=32),
                model=TINY_MODEL,
                train=TrainConfig(epochs=2))


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel / torch.compile: the model under `.module`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model with non-default weights, its optimizer after one step, and its checkpoint."""
    torch.manual_seed(0)
    model = build_model(CFG.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 3, 32, 32)).sum().backward()
    opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model=Wrapper(model), run_cfg=CFG, epoch=3,
                    metrics={"val": {"auc": 0.75, "loss": float("nan")}}, optimizer=opt,
                    extra={"history": [{"epoch": 1, "val_auc": 0.5}]})
    return model, opt, path


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(5)))


def test_plain_weights_only_load_works(trained):
    _, _, path = trained
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["dfdetect_version"] == __version__
    assert ckpt["epoch"] == 3 and ckpt["metrics"]["val"]["auc"] == 0.75
    assert from_dict(RunConfig, ckpt["config"]) == CFG  # model, data (frames, size, norm), face...
    assert ckpt["optimizer"]["state"] and set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert ckpt["extra"]["history"][0]["val_auc"] == 0.5


def test_wrapper_prefixes_are_stripped(trained):
    model, _, path = trained
    keys = list(load_checkpoint(path)["model"])
    assert keys == list(model.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)
    assert list(clean_state_dict({"module._orig_mod.head.bias": 1})) == ["head.bias"]


def test_load_model_gives_identical_logits_without_downloading(trained, monkeypatch):
    model, _, path = trained

    def offline(*_a, **_k):
        raise urllib.error.URLError("must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    loaded, run_cfg = load_model(path)
    assert not loaded.training and run_cfg.model.pretrained == "none"
    assert torch.equal(_logits(loaded), _logits(model))
    assert loaded.temperature == 1.0


def test_stored_imagenet_config_does_not_download(tmp_path, monkeypatch):
    cfg = RunConfig(model=TINY_MODEL)
    path = save_checkpoint(tmp_path / "m.pt", model=build_model(cfg.model), run_cfg=cfg, epoch=1,
                           metrics={})
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["pretrained"] = "imagenet"  # as a Colab run would have it
    torch.save(ckpt, path)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    _, run_cfg = load_model(path)
    assert run_cfg.model.pretrained == "none"


def test_optimizer_state_restores(trained):
    _, opt, path = trained
    fresh = torch.optim.AdamW(build_model(CFG.model).parameters(), lr=1e-3)
    fresh.load_state_dict(load_checkpoint(path)["optimizer"])
    a, b = fresh.state_dict()["state"][0], opt.state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_truncated_checkpoint_is_a_named_error(trained, tmp_path):
    _, _, path = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated or corrupt.*copy it again"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(cut)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused, it contains pickled Python objects"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_unknown_format_version_is_refused(trained, tmp_path):
    _, _, path = trained
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 2 .* not supported"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a dfdetect checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_save_is_atomic_on_failure(trained, tmp_path, monkeypatch):
    model, _, _ = trained
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, run_cfg=CFG, epoch=1, metrics={})
    before = path.read_bytes()

    def broken_save(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, run_cfg=CFG, epoch=2, metrics={})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_export_round_trip(trained, tmp_path):
    model, _, path = trained
    work = tmp_path / "work.pt"
    work.write_bytes(path.read_bytes())
    update_checkpoint(work, temperature=1.7)
    weights, meta = export_model(work, tmp_path / "export")
    assert weights.name == "model.safetensors" and meta.name == "model.json"
    info = json.loads(meta.read_text())
    assert info["epoch"] == 3 and info["temperature"] == 1.7 and "optimizer" not in info
    assert from_dict(RunConfig, info["config"]) == CFG
    ref = _logits(model)
    for target in (weights, meta, tmp_path / "export"):
        loaded, run_cfg = load_model(target)
        assert torch.equal(_logits(loaded), ref) and loaded.temperature == 1.7
        assert run_cfg.data == CFG.data
    assert load_model(work)[0].temperature == 1.7


def test_export_files_contain_no_pickle(trained, tmp_path):
    _, _, path = trained
    weights, _ = export_model(path, tmp_path)
    head = weights.read_bytes()[:16]
    assert not head.startswith(b"\x80") and b"PK" not in head  # safetensors: JSON header, raw data
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(weights.read_bytes())


def test_corrupt_export_is_a_named_error(trained, tmp_path):
    _, _, path = trained
    weights, meta = export_model(path, tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated or corrupt export"):
        load_model(weights)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        load_model(meta)
