"""Checkpoints: one writer (:func:`save_checkpoint`), one reader (:func:`load_checkpoint`).

A checkpoint is a dict of tensors and plain Python types only, so it always loads with
``torch.load(..., weights_only=True)`` and loading never runs pickled code:

=================  ==============================================================
format_version     :data:`FORMAT_VERSION`; the reader refuses versions it does not know
dfdetect_version   package version that wrote it
model              state dict of the unwrapped model (no ``module.``/``_orig_mod.``)
config             ``config.to_dict(RunConfig)``: face, data, model, train
epoch              epochs completed (1-based)
metrics            dict of floats (validation metrics of that epoch, ...)
optimizer ...      ``optimizer``, ``scheduler``, ``scaler`` state dicts (or None)
rng                torch / CUDA / numpy / random states, as tensors and lists
extra              caller's plain data (training history, early-stopping state...)
=================  ==============================================================

:func:`export_model` turns one into ``NAME.safetensors`` (weights) + ``NAME.json`` (config and
metadata) for sharing; :func:`load_model` reads either.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dfdetect import __version__
from dfdetect.config import ConfigError, RunConfig, from_dict, to_dict
from dfdetect.media.files import atomic_path, atomic_write_text, cannot_read, permission_denied
from dfdetect.models.detector import build_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class CheckpointError(RuntimeError):
    """A checkpoint or exported model cannot be read; the message names the file and what to do."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint cannot be written (disk full); the message names the folder and what to do."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = next((getattr(model, a) for a in ("module", "_orig_mod")
                      if isinstance(getattr(model, a, None), nn.Module)), None)
        if inner is None:
            return model
        model = inner


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, in any nesting) from state-dict keys.

    The one place this is done: every save goes through it.
    """
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain types (for exact resumption)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path: str | Path, *, model: nn.Module, run_cfg: RunConfig, epoch: int, metrics: dict,
    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, scaler: Any = None,
    extra: dict | None = None,
) -> Path:
    """Write a training checkpoint atomically (a killed write never leaves a half file).

    Args:
        path: Destination, e.g. ``RUN_DIR/last.pt``.
        model: The model, possibly wrapped in DDP / torch.compile (saved unwrapped).
        run_cfg: The run's configuration (stored as a plain dict).
        epoch: Epochs completed.
        metrics: Plain floats/lists (e.g. this epoch's validation metrics).
        optimizer, scheduler, scaler: Saved for ``--resume`` when given.
        extra: More plain data (history, early-stopping state).

    Returns:
        ``path``.
    """
    ckpt = {
        "format_version": FORMAT_VERSION,
        "dfdetect_version": __version__,
        "model": clean_state_dict(unwrap(model).state_dict()),
        "config": to_dict(run_cfg),
        "epoch": int(epoch),
        "metrics": json.loads(json.dumps(metrics)),  # plain types only, NaN allowed
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    return _write(ckpt, Path(path))


def _write(ckpt: dict, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    except (RuntimeError, OSError) as err:
        # torch's writer reports a full disk as "[enforce fail at inline_container.cc:...]"
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) or \
            isinstance(err, RuntimeError) and "inline_container" in str(err)
        if not full:
            raise
        raise CheckpointWriteError(
            f"{path}: could not be written, the disk (or Drive quota) holding {path.parent} is "
            f"full ({_free(path.parent)} free); free space there or use another RUN_DIR "
            f"(the previous {path.name}, if any, is intact)") from None
    return path


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown"


def update_checkpoint(path: str | Path, **fields: Any) -> None:
    """Set top-level plain fields (e.g. ``temperature=1.3``) of an existing checkpoint, atomically."""
    ckpt = load_checkpoint(path)
    ckpt.update(json.loads(json.dumps(fields)))
    _write(ckpt, Path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, never unpickling code.

    Raises:
        CheckpointError: Missing, unreadable, truncated or corrupt file; something else than a
            checkpoint (a web page, random bytes, text); a file holding pickled objects (not a
            dfdetect checkpoint, or an unsafe one); an unknown format version; missing entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; check the path (train writes "
                              "RUN_DIR/best.pt and RUN_DIR/last.pt)")
    head = _head(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError) as err:  # torch's, e.g. KeyError 101 for text
        raise CheckpointError(_load_failure(path, head, err)) from None
    _check_format(ckpt, path)
    return ckpt


def _head(path: Path) -> bytes:
    """The first bytes of ``path`` (what kind of file it is); CheckpointError if unreadable."""
    try:
        with open(path, "rb") as fh:
            return fh.read(64)
    except PermissionError:
        raise CheckpointError(permission_denied(path)) from None
    except OSError as err:
        raise CheckpointError(f"{cannot_read(path, err)} and copy the file again") from None


def _load_failure(path: Path, head: bytes, err: Exception) -> str:
    """The one-line diagnosis of a failed ``torch.load``, from what the file starts with.

    torch's own text is never relayed whole: its advice to retry with ``weights_only=False``
    would run arbitrary code from an untrusted file.
    """
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<")):
        return (f"{path}: is a web page (HTML), not a checkpoint: the download link returned a "
                "page (a login, quota or virus-scan notice) instead of the file; download the "
                "file itself (e.g. gdown, or Drive's 'Download anyway') and check its size")
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        return (f"{path}: refused, it contains pickled Python objects that weights_only loading "
                f"does not run ({_unpickler_reason(err)}); only files written by dfdetect "
                "(tensors and plain types) are loaded: re-save it with "
                "dfdetect.models.checkpoint.save_checkpoint, or use a trusted export")
    if head.startswith(b"PK\x03\x04"):  # torch's zip format: the file started as a checkpoint
        return (f"{path}: truncated or corrupt checkpoint ({type(err).__name__}: "
                f"{_first_line(err)}); it was probably cut off while copying or writing: copy it "
                "again, or use the other checkpoint of the run (last.pt / best.pt)")
    if head[:1] == b"\x80":  # a bare pickle (torch's legacy format or pickle.dump)
        return (f"{path}: a plain pickle file that weights_only loading cannot read "
                f"({_unpickler_reason(err)}); only files written by dfdetect's save_checkpoint "
                "(tensors and plain types) are loaded: re-save it with "
                "dfdetect.models.checkpoint.save_checkpoint, or use a trusted export")
    kind = "a text file" if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head) else \
        "not a PyTorch file"
    return (f"{path}: {kind}, not a dfdetect checkpoint (it starts with {head[:16]!r}); pass "
            "RUN_DIR/best.pt or last.pt written by `python -m dfdetect train`, or an export")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else repr(err)


def _unpickler_reason(err: Exception) -> str:
    """torch's reason for refusing (the ``WeightsUnpickler error`` part, without its advice)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split())
        reason = reason.split(" Please use ", 1)[0].split(" Check the documentation", 1)[0]
        return reason.strip() or "unsupported pickle content"
    return "unsupported pickle content"


def _check_format(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path}: not a dfdetect checkpoint (no format_version); pass a "
                              "file written by `python -m dfdetect train`")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format_version']} (written by dfdetect "
            f"{ckpt.get('dfdetect_version', '?')}) is not supported by dfdetect {__version__} "
            f"(format {FORMAT_VERSION}); use the dfdetect version that wrote it"
        )
    _check_entries(ckpt, path)


def _check_entries(ckpt: dict, path: Path) -> None:
    """``config`` must be a dict and (in a checkpoint) ``model`` a state dict of tensors."""
    what = "export" if path.suffix == ".json" else "checkpoint"
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: incomplete dfdetect {what}: no 'config' entry (the model's "
                              "architecture and preprocessing); it was not written by dfdetect's "
                              "save_checkpoint/export or was edited: use the run's own best.pt / "
                              "last.pt or export it again")
    if what == "checkpoint" and not (isinstance(ckpt.get("model"), dict) and all(
            isinstance(v, torch.Tensor) for v in ckpt["model"].values())):
        found = type(ckpt.get("model")).__name__ if "model" in ckpt else "nothing"
        raise CheckpointError(f"{path}: its 'model' entry is {found}, not a state dict of "
                              "tensors; it was not written by dfdetect's save_checkpoint or was "
                              "edited: use the run's own best.pt / last.pt")


def _run_config(data: dict, path: Path) -> RunConfig:
    try:
        return from_dict(RunConfig, data)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: its stored config does not fit this dfdetect ({err}); "
                              "use the dfdetect version that wrote it") from None


def _build_loaded(state: dict, run_cfg: RunConfig, path: Path, device: str | torch.device):

    # the weights come from the file: never download or read the backbone's initial weights
    run_cfg = dataclasses.replace(run_cfg, model=dataclasses.replace(run_cfg.model, pretrained="none"))
    try:
        model = build_model(run_cfg.model)
    except ValueError as err:
        raise CheckpointError(f"{path}: its stored model config cannot be built by dfdetect "
                              f"{__version__} ({err}); the file was written by another dfdetect or "
                              "torchvision version, or edited: use the versions that wrote it") from None
    mismatch = _state_mismatch(model.state_dict(), clean_state_dict(state))
    if mismatch:
        raise CheckpointError(f"{path}: weights do not match the stored model config ({mismatch}); "
                              "the file is damaged or was edited: use the run's own checkpoint")
    model.load_state_dict(clean_state_dict(state))
    return model.to(device).eval(), run_cfg


def _state_mismatch(expected: dict, found: dict, show: int = 3) -> str:
    """What differs between two state dicts, in one line ("" when they fit)."""

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found)
                    if tuple(expected[k].shape) != tuple(found[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {some(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape: " + some(
            [f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes]))
    return "; ".join(parts)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild a trained model (eval mode) from a checkpoint or an export.

    Args:
        path: A ``.pt`` checkpoint, an exported ``.safetensors`` file (its ``.json`` beside it),
            that ``.json``, or a folder holding ``model.safetensors``.
        device: Where to put the model.

    Returns:
        ``(model, run_cfg)``; ``run_cfg.model.pretrained`` is "none" (weights came from the file).
        An export's or calibrated checkpoint's temperature is in ``model.temperature`` (1.0 if none).

    Raises:
        CheckpointError: See :func:`load_checkpoint`; missing or corrupt export files.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix in (".safetensors", ".json"):
        state, meta, path = _read_export(path)
    else:
        ckpt = load_checkpoint(path)
        state, meta = ckpt["model"], ckpt
    model, run_cfg = _build_loaded(state, _run_config(meta["config"], path), path, device)
    model.temperature = float(meta.get("temperature", 1.0))
    return model, run_cfg


def _read_export(path: Path) -> tuple[dict, dict, Path]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for p in (weights, meta_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing; an export is NAME.safetensors + NAME.json side "
                                  "by side (`python -m dfdetect export CHECKPOINT OUT`)")
    try:
        meta = json.loads(meta_path.read_text())
    except PermissionError:
        raise CheckpointError(permission_denied(meta_path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{meta_path}: corrupt export config, not valid JSON ({err}); "
                              "export it again from the training checkpoint") from None
    try:
        state = load_file(str(weights))
    except PermissionError:
        raise CheckpointError(permission_denied(weights)) from None
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: truncated or corrupt export ({err}); export it again "
                              "from the training checkpoint") from None
    _check_format(meta, meta_path)
    return state, meta, weights


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_model(checkpoint: str | Path, out_dir: str | Path, name: str = "model") -> tuple[Path, Path]:
    """Turn a training checkpoint into ``OUT/NAME.safetensors`` + ``OUT/NAME.json`` for sharing.

    The JSON holds the format version, package version, run config, epoch, metrics and
    temperature; optimizer and RNG states are dropped.

    Returns:
        ``(weights_path, config_path)``.
    """
    ckpt = load_checkpoint(checkpoint)
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    weights, meta_path = out_dir / f"{name}.safetensors", out_dir / f"{name}.json"
    state = {k: v.contiguous() for k, v in ckpt["model"].items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "dfdetect_version": __version__})
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors recreates the file as 0600
    meta = {k: ckpt[k] for k in ("format_version", "dfdetect_version", "config", "epoch", "metrics")}
    meta["temperature"] = float(ckpt.get("temperature", 1.0))
    meta["source"] = Path(checkpoint).name
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    log.info("exported %s -> %s, %s", checkpoint, weights, meta_path)
    return weights, meta_path
