"""predict: raw video -> verdict, on videos of real faces, with a model trained in this module.

The model is a tiny ResNet18 + LSTM trained here (CPU, seconds) to call a clip FAKE when a
blended magenta patch sits at a fixed place of the face crop (see train_planted_model). Test videos are animated real portraits,
with the patch planted on the face in every frame (or not), so the expected verdict and the
expected heat are both known.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from face_fixtures import SAMPLE
from tiny import TINY_MODEL
from torch import nn

from dfdetect.cli import main
from dfdetect.config import DataConfig, ExtractConfig, FaceConfig, RunConfig, replace
from dfdetect.data.dataset import FrameSequenceDataset
from dfdetect.data.preprocess import preprocess_clip
from dfdetect.data.sampling import clip_windows
from dfdetect.demo import synth
from dfdetect.extraction.faces import FaceCropper
from dfdetect.inference.folder import CSV_COLUMNS, predict_folder
from dfdetect.inference.predictor import (
    ERROR,
    FAKE,
    NO_FACE,
    REAL,
    Predictor,
    default_clips,
    predict,
)
from dfdetect.media import video
from dfdetect.models.checkpoint import export_model, load_model, save_checkpoint
from dfdetect.models.detector import build_model

CROP = 128  # FaceConfig.size: face crops, heatmaps
PX = 96  # DataConfig.size: model input
T = 4
RUN_CFG = RunConfig(
    face=FaceConfig(size=CROP),
    data=DataConfig(frames=T, size=PX),
    model=replace(TINY_MODEL, hidden=16),
)
# the planted patch, in face-crop pixels: the top-right part (layer4 cell (0, 2) of 3x3), so a
# transposed or flipped heatmap would miss it
PATCH = (slice(0, 40), slice(75, 117))
COLOUR = np.array([255.0, 0.0, 255.0])  # magenta, blended: nothing like it in the portraits
PORTRAITS = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg")


def plant_in_crop(face: np.ndarray) -> np.ndarray:
    out = face.astype(np.float32)
    out[PATCH] = 0.2 * out[PATCH] + 0.8 * COLOUR
    return out.astype(np.uint8)


def plant_in_frame(frame: np.ndarray, cropper: FaceCropper) -> np.ndarray:
    """Blend the patch into the frame where it lands in the face crop (crop -> frame pixels)."""
    box = cropper.detect(frame)[0]
    x1, y1, x2, _ = cropper.crop_region(box, frame.shape)
    s = (x2 - x1) / CROP
    rows, cols = PATCH
    fy0, fy1 = round(y1 + rows.start * s), round(y1 + rows.stop * s)
    fx0, fx1 = round(x1 + cols.start * s), round(x1 + cols.stop * s)
    out = frame.astype(np.float32)
    region = out[max(fy0, 0):fy1, max(fx0, 0):fx1]
    region[:] = 0.2 * region + 0.8 * COLOUR
    return out.astype(np.uint8)


def portrait_frames(name: str, frames: int, size=(256, 256), phase: float = 0.0) -> np.ndarray:
    img = synth.load_rgb(SAMPLE / name)
    return synth.animate(img, frames, size, synth.CameraPath(phase=phase))


# --------------------------------------------------------------------------- the trained model


def training_crops(cropper: FaceCropper) -> np.ndarray:
    """Face crops of animated portraits, cut exactly as predict cuts them: (N, CROP, CROP, 3)."""
    crops = []
    for i, name in enumerate(PORTRAITS):
        for frame in portrait_frames(name, 8, phase=0.7 * i):
            boxes = cropper.detect(frame)
            if boxes:
                crops.append(cropper.crop(frame, boxes[0]))
    return np.stack(crops)


def measure_batchnorm(module: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``x`` (then eval mode)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over this one pass
    module.train()
    with torch.no_grad():
        module(x)
    module.eval()


def train_planted_model(crops: np.ndarray, steps: int = 150, seed: int = 0) -> nn.Module:
    """A DeepfakeDetector (ResNet18 + LSTM) trained to call a clip FAKE when the patch is there.

    Its backbone starts with every residual branch switched off (the last BatchNorm of each
    block at zero, as torchvision's ``zero_init_residual``), so each layer4 cell sees only a
    small neighbourhood of the crop and the evidence for the patch can only be in the cell that
    covers it. Only the LSTM and the head are trained (on the backbone's features computed once;
    exactly as the model's forward uses them: mean of LSTM outputs -> head), which takes
    seconds on a CPU. Where the evidence is, is therefore known; what is tested is that Grad-CAM,
    through the LSTM and predict's cropping, puts the heat there. (A backbone trained from
    scratch in a test is not usable for this: at 96 px its 3x3 layer4 cells all see the whole
    crop, and a few hundred CPU steps leave its evidence anywhere.)
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(RUN_CFG.model)
    bb = model.backbone
    for block in (*bb.layer1, *bb.layer2, *bb.layer3, *bb.layer4):
        nn.init.zeros_(block.bn2.weight)
    n = len(crops)
    planted = np.stack([plant_in_crop(c) for c in crops])
    x = torch.cat([preprocess_clip(crops, RUN_CFG.data), preprocess_clip(planted, RUN_CFG.data)])
    measure_batchnorm(bb, x)
    with torch.no_grad():
        feats = bb(x)  # (2n, 512)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    opt = torch.optim.Adam([*model.lstm.parameters(), *model.head.parameters()], lr=1e-2)
    for _ in range(steps):
        idx = torch.from_numpy(np.concatenate([rng.choice(n, (8, T)), rng.choice(n, (8, T)) + n]))
        logits = model.head(model.lstm(feats[idx])[0].mean(dim=1)).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y[idx[:, 0]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def cropper(face_cropper):
    return face_cropper(RUN_CFG.face)  # this module's crop size, not the default


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cropper):
    model = train_planted_model(training_crops(cropper))
    path = tmp_path_factory.mktemp("run") / "best.pt"
    return save_checkpoint(path, model=model, run_cfg=RUN_CFG, epoch=1, metrics={})


@pytest.fixture(scope="module")
def predictor(checkpoint):
    with Predictor.from_checkpoint(checkpoint, device="cpu") as p:
        yield p


@pytest.fixture(scope="module")
def videos(tmp_path_factory, cropper):
    """``{name: path}``: planted / clean face videos, two people, no face, a broken file."""
    folder = tmp_path_factory.mktemp("videos")
    clean = portrait_frames("grace_hopper.jpg", 32, phase=0.3)
    planted = np.stack([plant_in_frame(f, cropper) for f in clean])
    left = portrait_frames("obama.jpg", 24, phase=1.0)
    right = np.stack([plant_in_frame(f, cropper) for f in portrait_frames("astronaut.png", 24, phase=2.0)])
    two = np.concatenate([left, right], axis=2)  # (24, 256, 512, 3): clean left, planted right
    yy, xx = np.mgrid[0:128, 0:128]
    noface = np.stack([np.dstack([(xx + 3 * i) % 256, yy * 2, np.full_like(xx, 90)]).astype(np.uint8)
                       for i in range(24)])
    paths = {}
    for name, frames in (("planted", planted), ("clean", clean), ("two", two), ("noface", noface)):
        paths[name] = folder / f"{name}.mp4"
        video.write_video(paths[name], frames, fps=24)
    paths["broken"] = folder / "broken.mp4"
    paths["broken"].write_bytes(b"this is not a video" * 100)
    return paths


# --------------------------------------------------------------------------- verdicts


def test_planted_patch_is_fake_and_clean_face_is_real(predictor, videos):
    fake = predictor.predict(videos["planted"])
    real = predictor.predict(videos["clean"])
    assert fake.label == FAKE and fake.score > 0.8 and fake.confidence == pytest.approx(fake.score)
    assert real.label == REAL and real.score < 0.2
    assert real.confidence == pytest.approx(1 - real.score)
    for res in (fake, real):
        assert res.faces == 1 and res.track == 0 and res.message == ""
        assert res.frames_read == T and res.frames_used == T and res.video_frames == 32
        assert len(res.clip_scores) == 1 and len(res.frame_scores) == T
        assert all(0 <= s <= 1 for s in res.frame_scores)
    # pooling="mean": the clip logit is the mean of the frame logits, exactly
    logit = lambda p: math.log(p / (1 - p))
    assert logit(fake.score) == pytest.approx(np.mean([logit(p) for p in fake.frame_scores]), abs=1e-4)


def test_frames_are_sampled_evenly_over_the_whole_video(predictor, videos):
    res = predictor.predict(videos["planted"], clips=2)
    assert res.frame_indices == video.uniform_indices(32, 2 * T).tolist()  # not the first frames
    assert len(res.clip_scores) == 2 and res.frames_read == 2 * T and res.frames_used == 2 * T
    assert res.score == pytest.approx(np.mean(res.clip_scores))
    worst = predictor.predict(videos["planted"], clips=2, aggregate="max")
    assert worst.score == pytest.approx(max(res.clip_scores))
    with pytest.raises(ValueError, match="aggregate"):
        predictor.predict(videos["planted"], aggregate="vote")


def test_clip_rules():
    assert default_clips(300, 20) == 1  # 10 s at 30 fps: one clip
    assert default_clips(301, 20) == 2
    assert default_clips(100_000, 20) == 4  # capped
    assert default_clips(5, 20) == 1
    assert [list(w) for w in clip_windows(10, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_several_people_fake_if_any_face_is(predictor, videos):
    res = predictor.predict(videos["two"])
    assert res.faces == 2 and len(res.tracks) == 2
    by_score = sorted(res.tracks, key=lambda t: t["score"])
    assert by_score[0]["score"] < 0.5 < by_score[1]["score"]
    assert res.label == FAKE and res.track == by_score[1]["track"]
    assert res.score == pytest.approx(by_score[1]["score"])
    assert "2 faces" in res.message and f"track {res.track}" in res.message


def test_no_face_is_not_a_guess(predictor, videos):
    res = predictor.predict(videos["noface"])
    assert res.label == NO_FACE and res.score is None and res.confidence is None
    assert "no face" in res.message and res.frames_read > 0 and res.faces == 0
    assert json.loads(json.dumps(res.to_dict()))["score"] is None


@pytest.mark.parametrize("kind", ["broken", "missing", "empty"])
def test_unreadable_file_is_an_error_with_the_reason(predictor, videos, tmp_path, kind):
    path = {"broken": videos["broken"], "missing": tmp_path / "nope.mp4",
            "empty": tmp_path / "empty.mp4"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    res = predictor.predict(path)
    assert res.label == ERROR and res.score is None and res.confidence is None
    assert str(path) in res.message
    assert {"broken": "cannot be read", "missing": "no such file", "empty": "empty"}[kind] in res.message


def test_checkpoint_path_export_and_model_pair_agree(checkpoint, predictor, videos, tmp_path):
    ref = predictor.predict(videos["planted"]).score
    assert predict(videos["planted"], checkpoint).score == pytest.approx(ref, abs=1e-6)
    weights, _ = export_model(checkpoint, tmp_path / "export")
    assert predict(videos["planted"], weights).score == pytest.approx(ref, abs=1e-6)
    model, cfg = load_model(checkpoint)
    assert predict(videos["planted"], (model, cfg)).score == pytest.approx(ref, abs=1e-5)
    with pytest.raises(TypeError, match="run_cfg"):
        predict(videos["planted"], model)


# --------------------------------------------------------------------------- same preprocessing


def test_same_score_as_the_dataset_path(predictor, videos, tmp_path):
    """Extraction + FrameSequenceDataset on the same videos gives predict's score.

    Both paths use the same frames (checked), cut the same boxes with the checkpoint's
    FaceConfig and call the same preprocess_clip; they differ only by the H.264 compression
    (crf 18) of the extracted face videos. Tolerance: |P(fake) difference| <= 0.01 and
    |logit difference| <= 0.3 (measured: 0.003 on the planted video, 0.2 on the clean one,
    whose logit is about -6.5); the crops themselves differ by < 6 grey levels on average (4.1
    measured).
    Controls show the checks can fail: a crop margin of 0.6 instead of 0.3 changes the crops by
    > 20 grey levels, another normalisation moves the planted video's logit by > 1.
    """
    from dfdetect.extraction.pipeline import process_videos

    src = tmp_path / "src"
    src.mkdir()
    for name in ("planted", "clean"):
        (src / f"{name}.mp4").write_bytes(videos[name].read_bytes())
    (src / "labels.csv").write_text("file,label\nplanted.mp4,FAKE\nclean.mp4,REAL\n")
    out = tmp_path / "extracted"
    manifest = process_videos(src, out, labels_csv=src / "labels.csv", face_cfg=RUN_CFG.face,
                              extract_cfg=ExtractConfig(), progress=False)
    assert (manifest["status"] == "ok").all()
    ds = FrameSequenceDataset(out / "manifest.csv", RUN_CFG.data)
    model = predictor.model

    def logit_of(clip: torch.Tensor) -> float:
        with torch.inference_mode():
            return float(model(clip[None]))

    wrong_margin = Predictor(model, replace(RUN_CFG, face=replace(RUN_CFG.face, margin=0.6)))
    for i in range(len(ds)):
        item, name = ds[i], ds.video_ids[i]
        res = predictor.predict(videos[name], heatmaps=True)
        side = np.load(out / "faces" / f"{name}.npz")
        pick = video.uniform_indices(len(side["frame_index"]), T)
        assert res.frame_indices == side["frame_index"][pick].tolist()  # the same frames
        faces = video.read_all_frames(out / "faces" / f"{name}.mp4")[pick]
        assert np.abs(res.heatmap.faces.astype(int) - faces).mean() < 6  # the same crops (H.264 aside)
        ds_logit = logit_of(item["frames"])
        assert abs(res.score - 1 / (1 + math.exp(-ds_logit))) <= 0.01
        assert abs(math.log(res.score / (1 - res.score)) - ds_logit) <= 0.3, (name, res.score, ds_logit)
        # the checks can fail: another margin gives other crops, another normalisation another logit
        other = wrong_margin.predict(videos[name], heatmaps=True).heatmap.faces
        assert np.abs(other.astype(int) - faces).mean() > 20, np.abs(other.astype(int) - faces).mean()
        other_norm = replace(RUN_CFG.data, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        if name == "planted":
            assert abs(logit_of(preprocess_clip(faces, other_norm)) - ds_logit) > 1.0
    wrong_margin.close()


def test_preprocessing_comes_from_the_checkpoint(predictor):
    assert predictor.cfg == RUN_CFG
    assert predictor.cropper.cfg == RUN_CFG.face
    clip = np.zeros((T, CROP, CROP, 3), np.uint8)
    assert preprocess_clip(clip, predictor.cfg.data).shape == (T, 3, PX, PX)


# --------------------------------------------------------------------------- heatmaps


def test_heatmap_puts_the_heat_on_the_planted_patch(predictor, videos):
    res = predictor.predict(videos["planted"], heatmaps=True)
    hm = res.heatmap
    assert hm.cams.shape == (T, CROP, CROP) and hm.faces.shape == (T, CROP, CROP, 3)
    assert np.isfinite(hm.cams).all() and hm.cams.std() > 0.01
    assert hm.frame_indices.tolist() == res.frame_indices
    inside = hm.cams[:, PATCH[0], PATCH[1]].mean()
    mask = np.ones((CROP, CROP), bool)
    mask[PATCH] = False
    outside = hm.cams[:, mask].mean()
    assert inside > 2.0 * outside, (inside, outside)
    fig = hm.figure(title="planted")
    assert len([ax for ax in fig.axes if ax.images]) == T


# --------------------------------------------------------------------------- folders and CLI


def test_folder_one_row_per_video_even_when_some_fail(checkpoint, videos, tmp_path):
    out = tmp_path / "out"
    seen = []
    df = predict_folder(videos["planted"].parent, checkpoint, out, heatmaps=True, progress=False,
                        on_result=seen.append)
    assert list(df["file"]) == ["broken.mp4", "clean.mp4", "noface.mp4", "planted.mp4", "two.mp4"]
    assert list(df["label"]) == [ERROR, REAL, NO_FACE, FAKE, FAKE]
    assert len(seen) == 5 and list(df.columns) == list(CSV_COLUMNS)
    on_disk = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(on_disk["file"]) == list(df["file"]) and list(on_disk["label"]) == list(df["label"])
    assert json.loads(on_disk.loc[3, "clip_scores"]) == pytest.approx(seen[3].clip_scores, abs=1e-5)
    assert on_disk.loc[3, "heatmap_file"] == "heatmaps/planted.mp4.png"
    assert (out / "heatmaps" / "planted.mp4.png").stat().st_size > 1000
    assert not (out / "heatmaps" / "broken.mp4.png").exists()
    # a rerun moves its own earlier results aside; a predictions.csv dfdetect did not write is refused
    predict_folder([videos["planted"]], checkpoint, out, heatmap_video=True, progress=False)
    assert len(pd.read_csv(out / "predictions.csv")) == 1
    assert video.probe(out / "heatmaps" / "planted.mp4.mp4").frames == T
    other = tmp_path / "other"
    other.mkdir()
    (other / "predictions.csv").write_text("id,value\n1,2\n")
    with pytest.raises(FileExistsError, match="not a dfdetect predictions file"):
        predict_folder([videos["clean"]], checkpoint, other, progress=False)


def test_cli_prints_one_json_per_video_and_exit_status(checkpoint, videos, tmp_path, capsys):
    folder = videos["planted"].parent
    code = main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "cli"), "--no-progress"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert code == 0 and len(lines) == 5
    assert {"file", "label", "score", "confidence", "frames_used", "faces"} <= set(lines[0])
    assert (tmp_path / "cli" / "predictions.csv").is_file()
    # nothing could be processed -> non-zero
    code = main(["predict", str(videos["broken"]), "--checkpoint", str(checkpoint), "--no-progress"])
    assert code == 1 and json.loads(capsys.readouterr().out)["label"] == ERROR
    code = main(["predict", str(folder), "--checkpoint", str(checkpoint), "--heatmaps"])
    assert code == 1 and "--out" in capsys.readouterr().err


def test_tta_flip_averages_the_mirrored_clip():
    from dfdetect.config import ModelConfig
    from dfdetect.inference.predictor import forward_logits
    from dfdetect.models.detector import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", pretrained="none", temporal="none")).eval()
    x = torch.randn(3, 4, 3, 32, 32)
    cpu = torch.device("cpu")
    plain, plain_frames = forward_logits(model, x, cpu)
    mirrored = forward_logits(model, x.flip(-1), cpu)[0]
    both, both_frames = forward_logits(model, x, cpu, tta_flip=True)
    assert not torch.allclose(plain, mirrored)  # the model is not mirror-symmetric ...
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-5)  # ... the flip average is
    assert torch.allclose(both, forward_logits(model, x.flip(-1), cpu, tta_flip=True)[0], atol=1e-5)
    assert both_frames.shape == plain_frames.shape == (3, 4)
