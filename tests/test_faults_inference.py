"""Issue #14, inference side: one test per fault (bad input, lost output, unclear message).

Tiny real inputs only: a small ResNet18 + LSTM checkpoint (untrained weights are enough to get
verdicts) and short videos of the shipped portraits. Where the fault is an environment one a
test cannot cause as root (permission denied) or safely (a full disk), the OS error is raised
at the OS call it would come from; a full disk for torch's writer is the real one (/dev/full).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from face_fixtures import SAMPLE, write_face_dataset
from tiny import TINY_MODEL

import dfdetect.inference.folder as folder_mod
import dfdetect.inference.predictor as predictor_mod
import dfdetect.labels as labels_mod
import dfdetect.models.checkpoint as ckpt_mod
from dfdetect.augment.copies import augment_manifest
from dfdetect.cli import build_parser, main
from dfdetect.config import ConfigError, DataConfig, FaceConfig, ModelConfig, RunConfig, TrainConfig
from dfdetect.demo import synth
from dfdetect.inference.folder import predict_folder
from dfdetect.inference.predictor import ERROR, FAKE, NO_FACE, REAL, Predictor, decide
from dfdetect.labels import LabelsError, read_labels
from dfdetect.media import video
from dfdetect.models.checkpoint import (
    CheckpointError,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
    update_checkpoint,
)
from dfdetect.models.detector import build_model
from dfdetect.training.fit import TrainError, fit_datasets
from dfdetect.viz import heatmap_figure, save_figure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 4
CFG = RunConfig(face=FaceConfig(size=64), data=DataConfig(frames=T, size=32, balance="none"),
                model=TINY_MODEL,
                train=TrainConfig(epochs=1, batch_size=2, workers=0, patience=0, calibrate=False))


def portrait_clip(frames: int, name: str = "grace_hopper.jpg") -> np.ndarray:
    return synth.animate(synth.load_rgb(SAMPLE / name), frames, (128, 128), synth.CameraPath())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model=build_model(CFG.model), run_cfg=CFG, epoch=1, metrics={})


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    video.write_video(path, portrait_clip(8), fps=8)
    return path


@pytest.fixture(scope="module")
def predictor(ckpt):
    with Predictor.from_checkpoint(ckpt, "cpu") as p:
        yield p


def variant(ckpt: Path, tmp_path: Path, name: str, **changes) -> Path:
    """A copy of the checkpoint with top-level entries changed (None deletes)."""
    data = load_checkpoint(ckpt)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    torch.save(data, tmp_path / name)
    return tmp_path / name


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# ------------------------------------------------------------------ 1. NaN is not REAL


def test_nan_temperature_is_an_error_not_real(ckpt, clip_mp4, tmp_path, capsys):
    bad = tmp_path / "nan_t.pt"
    shutil.copy(ckpt, bad)
    update_checkpoint(bad, temperature=float("nan"))
    res = predictor_mod.predict(clip_mp4, bad, device="cpu")
    assert res.label == ERROR and res.score is None and "model output is not finite" in res.message
    assert "--lr" in res.message and "--amp off" in res.message
    assert main(["predict", str(clip_mp4), "--checkpoint", str(bad), "--no-progress"]) == 1
    with pytest.raises(ValueError, match="not finite"):
        decide(float("nan"))


def test_nan_weights_are_an_error_not_real(ckpt, clip_mp4, tmp_path):
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in load_checkpoint(ckpt)["model"].items()}
    bad = variant(ckpt, tmp_path, "nan_w.pt", model=state)
    res = predictor_mod.predict(clip_mp4, bad, device="cpu")
    assert res.label == ERROR and "model output is not finite" in res.message


# ------------------------------------------------------------------ 2. heatmap names


def _heatmap_rows(src: Path, ckpt: Path, out: Path) -> pd.DataFrame:
    df = predict_folder(src, ckpt, out, heatmaps=True, progress=False, device="cpu")
    assert set(df["label"]) <= {REAL, FAKE}
    files = list(df["heatmap_file"])
    assert len(set(files)) == len(files)  # one heatmap each
    for f in files:
        assert (out / f).is_file()
    return df


def test_heatmap_names_differ_by_suffix(ckpt, clip_mp4, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip_mp4, src / "clip.mp4")
    shutil.copy(clip_mp4, src / "clip.mov")
    df = _heatmap_rows(src, ckpt, tmp_path / "out")
    assert dict(zip(df["file"], df["heatmap_file"])) == {
        "clip.mov": "heatmaps/clip.mov.png", "clip.mp4": "heatmaps/clip.mp4.png"}


def test_heatmap_names_differ_by_folder(ckpt, clip_mp4, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(clip_mp4, src / "sub" / "x.mp4")
    shutil.copy(clip_mp4, src / "sub__x.mp4")
    df = _heatmap_rows(src, ckpt, tmp_path / "out")
    assert dict(zip(df["file"], df["heatmap_file"])) == {
        "sub/x.mp4": "heatmaps/sub/x.mp4.png", "sub__x.mp4": "heatmaps/sub__x.mp4.png"}


# ------------------------------------------------------------------ 3. one-line errors


def test_text_file_as_checkpoint(tmp_path, clip_mp4, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("epoch 3: val auc 0.91\n")
    with pytest.raises(CheckpointError, match=r"notes.pt: a text file, not a dfdetect checkpoint"):
        load_model(bad)
    assert main(["predict", str(clip_mp4), "--checkpoint", str(bad), "--no-progress"]) == 1
    assert "notes.pt: a text file" in one_line_error(capsys)


def test_checkpoint_without_config(ckpt, tmp_path):
    bad = variant(ckpt, tmp_path, "noconf.pt", config=None)
    with pytest.raises(CheckpointError, match="noconf.pt: incomplete dfdetect checkpoint: no 'config'"):
        load_model(bad)


def test_export_without_config(ckpt, tmp_path):
    weights, meta = export_model(ckpt, tmp_path / "exp")
    data = json.loads(meta.read_text())
    del data["config"]
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"model.json: incomplete dfdetect export: no 'config'"):
        load_model(weights)


def test_model_entry_is_a_tensor(ckpt, tmp_path):
    bad = variant(ckpt, tmp_path, "tensor.pt", model=torch.zeros(3))
    with pytest.raises(CheckpointError, match="tensor.pt: its 'model' entry is Tensor, not a state dict"):
        load_model(bad)


def test_unreadable_labels_csv(tmp_path, monkeypatch):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\na.mp4,REAL\n")

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(labels_mod.pd, "read_csv", denied)
    with pytest.raises(LabelsError, match="labels.csv: permission denied reading it; fix its permissions"):
        read_labels(csv)


def test_read_only_output_folder(ckpt, clip_mp4, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    out.mkdir()

    def denied(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(folder_mod.tempfile, "mkstemp", denied)
    code = main(["predict", str(clip_mp4), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"])
    assert code == 1
    assert one_line_error(capsys).endswith("ro: cannot write there (Permission denied); choose "
                                           "another --out folder or fix its permissions")


def test_out_is_an_existing_file_fails_before_the_model_loads(clip_mp4, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    missing = tmp_path / "no_such_checkpoint.pt"  # never opened: --out is checked first
    code = main(["predict", str(clip_mp4), "--checkpoint", str(missing), "--out", str(out), "--no-progress"])
    assert code == 1 and "results.txt: is a file, not a folder" in one_line_error(capsys)
    assert out.read_text() == "keep me\n"


def test_full_disk_during_predict_keeps_earlier_rows(ckpt, clip_mp4, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clip_mp4, src / name)
    real_write, calls = folder_mod.atomic_write_text, []

    def fills_up(path, text):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, text)

    monkeypatch.setattr(folder_mod, "atomic_write_text", fills_up)
    out = tmp_path / "out"
    code = main(["predict", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"])
    line = one_line_error(capsys)
    assert code == 1 and "predictions.csv: cannot write it (No space left on device)" in line
    assert "the 1 earlier row(s) are kept" in line and "disk is full" in line
    assert list(pd.read_csv(out / "predictions.csv")["file"]) == ["a.mp4"]


def test_train_frames_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "m.csv", str(tmp_path / "run"), "--frames", "0"])
    assert stop.value.code == 2 and "--frames: 0 is below the minimum 1" in capsys.readouterr().err
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"data": {"frames": 0}}))
    assert main(["train", "m.csv", str(tmp_path / "run"), "--config", str(conf)]) == 1
    assert "DataConfig.frames = 0: must be an integer >= 1" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cls, field, value", [
    (DataConfig, "frames", 0), (DataConfig, "size", 8), (DataConfig, "self_blend_prob", 1.5),
    (ModelConfig, "hidden", 0), (ModelConfig, "dropout", 1.0), (TrainConfig, "batch_size", 0),
    (TrainConfig, "lr", -1.0), (TrainConfig, "lr", float("nan")), (TrainConfig, "amp", "fp8"),
])
def test_config_fields_are_validated(cls, field, value):
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = .*: must be"):
        cls(**{field: value})


# ------------------------------------------------------------------ 4-5. unclear verdicts


def test_truncated_video_is_said(predictor, tmp_path):
    path = tmp_path / "cut.mp4"
    video.write_video(path, portrait_clip(32), fps=8)
    real_iter = predictor_mod.iter_frames

    def cut_after_half(p, indices, *a, **k):  # the decoder stops early, as on a cut-off file
        for item in real_iter(p, indices, *a, **k):
            if item[0] >= 16:
                return
            yield item

    predictor_mod.iter_frames = cut_after_half
    try:
        res = predictor.predict(path, clips=2)
    finally:
        predictor_mod.iter_frames = real_iter
    assert res.label in (REAL, FAKE)
    assert "only 4 of 8 sampled frames could be decoded" in res.message
    assert "of the 32 its header announces" in res.message


def test_no_face_suggests_more_clips_when_sampling_would_help(predictor, tmp_path):
    frames = portrait_clip(40)
    frames[8:] = 0  # the face is only in the first 8 frames
    path = tmp_path / "short_face.mp4"
    video.write_video(path, frames, fps=8)
    res = predictor.predict(path, clips=1, min_track_frames=3)
    assert res.label == NO_FACE
    assert "sample more with --clips" in res.message
    black = tmp_path / "black.mp4"
    video.write_video(black, np.zeros((8, 128, 128, 3), np.uint8), fps=8)
    assert "--clips" not in predictor.predict(black).message  # no face at all: no false hope


# ------------------------------------------------------------------ 6. right diagnoses


def test_permission_denied_video_is_not_told_to_reencode(predictor, clip_mp4, monkeypatch):
    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(predictor_mod, "open", denied, raising=False)
    res = predictor.predict(clip_mp4)
    assert res.label == ERROR and "permission denied" in res.message
    assert "re-encode" not in res.message


@pytest.mark.parametrize("content, expected", [
    (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>", "is a web page"),
    (np.random.default_rng(0).bytes(2000), "not a PyTorch file"),
])
def test_html_or_random_bytes_checkpoint(tmp_path, content, expected):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    text = str(err.value)
    assert expected in text and "\n" not in text
    assert "pickled" not in text and "weights_only" not in text


def test_pickled_checkpoint_does_not_relay_torchs_unsafe_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused, it contains pickled Python objects") as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "can still be loaded" not in text and "`False`" not in text and "\n" not in text


def test_unreadable_checkpoint_is_not_called_cut_off(ckpt, monkeypatch):
    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(ckpt_mod, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match="permission denied reading it") as err:
        load_checkpoint(ckpt)
    assert "cut off" not in str(err.value)


def test_corrupt_model_json_is_blamed_on_the_json(ckpt, tmp_path):
    weights, meta = export_model(ckpt, tmp_path / "exp")
    meta.write_text('{"format_version": 1, "config": ')
    with pytest.raises(CheckpointError, match=r"model.json: corrupt export config, not valid JSON"):
        load_model(weights)


def test_state_dict_mismatch_lists_the_keys(ckpt, tmp_path):
    state = load_checkpoint(ckpt)["model"]
    state.pop("head.weight")
    state["extra.bias"] = torch.zeros(1)
    bad = variant(ckpt, tmp_path, "edited.pt", model=state)
    with pytest.raises(CheckpointError, match=r"1 missing: head.weight; 1 unexpected: extra.bias"):
        load_model(bad)


def test_bad_stored_backbone_is_not_a_user_typo(ckpt, tmp_path):
    conf = load_checkpoint(ckpt)["config"]
    conf["model"]["backbone"] = "resnet9000"
    bad = variant(ckpt, tmp_path, "future.pt", config=conf)
    with pytest.raises(CheckpointError, match=r"future.pt: its stored model config cannot be built"):
        load_model(bad)


# ------------------------------------------------------------------ 7. late or cryptic failures


class NaNClips(torch.utils.data.Dataset):
    """FrameSequenceDataset-shaped items; ``nan=True`` makes every frame NaN (a corrupt input)."""

    def __init__(self, n: int, nan: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randn(n, T, 3, 32, 32, generator=g)
        if nan:
            self.frames[:] = float("nan")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        return {"frames": self.frames[i], "label": torch.tensor(i % 2), "video_id": f"v{i}"}


def test_nan_loss_stops_training_with_a_hint(tmp_path):
    sets = {"train": NaNClips(4, nan=True), "val": NaNClips(4), "test": NaNClips(2)}
    with pytest.raises(TrainError, match=r"epoch 1, step 1: the training loss is nan.*lower --lr"):
        fit_datasets(sets, tmp_path / "run", CFG, device="cpu", progress=False)


def test_full_disk_during_training_names_the_run_dir(ckpt, tmp_path, monkeypatch):
    real_save = torch.save
    monkeypatch.setattr(ckpt_mod.torch, "save", lambda obj, _path: real_save(obj, "/dev/full"))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ckpt_mod.CheckpointWriteError) as err:
        save_checkpoint(run / "last.pt", model=build_model(CFG.model), run_cfg=CFG, epoch=1, metrics={})
    text = str(err.value)
    assert f"{run}" in text and "is full" in text and "inline_container" not in text
    assert not list(run.iterdir())  # no half file left


def test_ctrl_c_says_how_far_it_got(ckpt, clip_mp4, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(clip_mp4, src / name)
    real_predict, seen = Predictor.predict, []

    def user_presses_ctrl_c(self, path, **kw):
        seen.append(path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_predict(self, path, **kw)

    monkeypatch.setattr(Predictor, "predict", user_presses_ctrl_c)
    out = tmp_path / "out"
    code = main(["predict", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"])
    line = one_line_error(capsys)
    assert code == 130 and "interrupted after 1 of 3 videos" in line
    assert list(pd.read_csv(out / "predictions.csv")["file"]) == ["a.mp4"]


# ------------------------------------------------------------------ 8. unchecked arguments


@pytest.mark.parametrize("argv, message", [
    (["predict", "v", "--checkpoint", "c", "--threshold", "1.5"], "--threshold: 1.5 is outside"),
    (["predict", "v", "--checkpoint", "c", "--clips", "-2"], "--clips: -2 is below the minimum 0"),
    (["train", "m.csv", "run", "--size", "0"], "--size: 0 is below the minimum 16"),
])
def test_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_library_checks_threshold_and_clips(predictor, clip_mp4):
    with pytest.raises(ValueError, match="threshold=1.5"):
        predictor.predict(clip_mp4, threshold=1.5)
    with pytest.raises(ValueError, match="clips=-2"):
        predictor.predict(clip_mp4, clips=-2)


# ------------------------------------------------------------------ 9. small losses


def test_rerun_keeps_the_earlier_results(ckpt, clip_mp4, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip_mp4, src / "a.mp4")
    out = tmp_path / "out"
    predict_folder(src, ckpt, out, heatmaps=True, progress=False, device="cpu")
    first = (out / "predictions.csv").read_text()
    (src / "a.mp4").rename(src / "b.mp4")
    predict_folder(src, ckpt, out, heatmaps=True, progress=False, device="cpu")
    assert list(pd.read_csv(out / "predictions.csv")["file"]) == ["b.mp4"]
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["b.mp4.png"]  # no stale one
    (previous,) = (out / "previous").iterdir()
    assert (previous / "predictions.csv").read_text() == first
    assert (previous / "heatmaps" / "a.mp4.png").is_file()


def test_export_honours_umask(ckpt, tmp_path):
    old = os.umask(0o022)
    try:
        weights, meta = export_model(ckpt, tmp_path / "exp")
    finally:
        os.umask(old)
    assert weights.stat().st_mode & 0o777 == 0o644 and meta.stat().st_mode & 0o777 == 0o644


def test_augment_does_not_keep_a_deleted_face_video_ok(tmp_path):
    path = write_face_dataset(tmp_path, [
        {"video_id": "r1", "portrait": "grace_hopper.jpg", "label": "REAL", "group": "g1", "frames": 4,
         "size": 64},
        {"video_id": "r2", "portrait": "obama.jpg", "label": "REAL", "group": "g2", "frames": 4, "size": 64},
        {"video_id": "f1", "portrait": "biden.jpg", "label": "FAKE", "group": "g3", "frames": 4, "size": 64},
    ])
    (tmp_path / "faces" / "r2.mp4").unlink()
    df = augment_manifest(path, per_video=1, progress=False).set_index("video_id")
    assert df.loc["r2", "status"] == "unreadable" and "missing" in df.loc["r2", "error"]
    assert "r2_aug0" not in df.index and df.loc["r1_aug0", "status"] == "ok"


def test_labels_help_says_relative_to_the_working_directory():
    parser, _ = build_parser()
    extract = parser._subparsers._group_actions[0].choices["extract"]
    (labels,) = [a for a in extract._actions if "--labels" in a.option_strings]
    assert "working directory" in labels.help


def test_labels_error_line_numbers_count_blank_lines(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n\na.mp4,REAL\n\n\nb.mp4,MAYBE\n")
    with pytest.raises(LabelsError, match=r"labels.csv line 6 \(b.mp4\): unknown label"):
        read_labels(csv)
    csv.write_text("file,label\n\na.mp4,REAL\n\nb.mp4,FAKE\n")
    assert list(read_labels(csv)["file"]) == ["a.mp4", "b.mp4"]  # blank lines are still skipped


def test_cjk_title_does_not_warn_per_glyph(tmp_path):
    faces = np.zeros((2, 32, 32, 3), np.uint8)
    fig = heatmap_figure(faces, np.zeros((2, 32, 32), np.float32), title="视频/片段.mp4: FAKE")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_figure(fig, tmp_path / "h.png")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert (tmp_path / "h.png").stat().st_size > 0
