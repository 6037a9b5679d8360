"""Clip-consistent augmentation of real face clips, and augmented/self-blended manifest copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from face_fixtures import face_clip, write_face_dataset

from dfdetect.augment.copies import AugmentError, augment_manifest, copy_rng, plan_copies
from dfdetect.augment.ops import (
    AugmentConfig,
    ClipParams,
    apply_params,
    augment_clip,
    draw_params,
    transform_keypoints,
)
from dfdetect.extraction.manifest import read_manifest, sidecar_path
from dfdetect.media import video
from dfdetect.viz import augmentation_figure

ONLY_FLIP_BRIGHTNESS = AugmentConfig(flip_prob=1.0, rotate_prob=0, brightness_prob=1.0, contrast_prob=0,
                                     blur_prob=0, noise_prob=0, compress_prob=0, brightness=0.3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    frames, kps, _ = face_clip("obama.jpg", frames=8, size=128, phase=0.3)
    return frames, kps


def test_flip_and_brightness_measured_identical_on_every_frame(clip):
    frames, _ = clip
    for seed in range(3):
        out, p = augment_clip(frames, np.random.default_rng(seed), ONLY_FLIP_BRIGHTNESS)
        assert p.flip and p.brightness != 1.0
        flips, gains = [], []
        for src, dst in zip(frames.astype(float), out.astype(float)):
            mirrored = src[:, ::-1]
            fit = {f: (s * dst).sum() / (s * s).sum() for f, s in ((False, src), (True, mirrored))}
            err = {f: np.abs(dst - np.clip(fit[f] * s, 0, 255)).mean()
                   for f, s in ((False, src), (True, mirrored))}
            flip = err[True] < err[False]
            flips.append(flip)
            usable = (dst > 5) & (dst < 250)  # unclipped pixels
            s = (mirrored if flip else src)[usable]
            gains.append((s * dst[usable]).sum() / (s * s).sum())
        assert all(flips), "a frame was not flipped"
        assert np.ptp(gains) < 0.004, f"brightness differs between frames: {gains}"
        assert abs(np.mean(gains) - p.brightness) < 0.01


@pytest.mark.parametrize("seed", range(4))
def test_static_clip_stays_static(clip, seed):
    """With every transform but noise on, identical input frames give identical output frames."""
    cfg = AugmentConfig(flip_prob=0.5, rotate_prob=1, brightness_prob=1, contrast_prob=1, blur_prob=1,
                        noise_prob=0, compress_prob=1)
    static = np.repeat(clip[0][:1], 5, axis=0)
    rng = np.random.default_rng(seed)
    p = draw_params(rng, cfg)
    if p.codec == "h264":  # inter-frame coding is per frame by nature: test JPEG here
        p = ClipParams(**{**p.to_dict(), "codec": "jpeg", "quality": 40})
    out = apply_params(static, p)
    assert (out != static).any()
    assert (out == out[0]).all()


def test_noise_level_is_the_clips(clip):
    frames, _ = clip
    p = ClipParams(noise_std=6.0, noise_seed=5)
    noise = apply_params(frames, p).astype(float) - frames
    inner = noise[:, 10:-10, 10:-10]  # away from clipped highlights
    per_frame = inner.reshape(len(frames), -1).std(axis=1)
    assert np.allclose(per_frame, 6.0, atol=0.4)
    assert not np.array_equal(noise[0], noise[1])  # fresh noise each frame, like a sensor
    np.testing.assert_array_equal(apply_params(frames, p), apply_params(frames, p))


def test_contrast_pivots_on_the_clip_mean(clip):
    frames, _ = clip
    darker = frames.copy()
    darker[4:] = (darker[4:] * 0.6).astype(np.uint8)  # frames with a different mean
    out = apply_params(darker, ClipParams(contrast=1.3)).astype(float).reshape(len(darker), -1)
    fits = []
    for x, y in zip(darker.astype(float).reshape(len(darker), -1), out):
        keep = (y > 3) & (y < 252)  # unclipped
        fits.append(np.polyfit(x[keep], y[keep], 1))
    fits = np.array(fits)
    assert np.ptp(fits[:, 0]) < 0.02 and np.ptp(fits[:, 1]) < 1.5  # one map for all frames


@pytest.mark.parametrize("codec, quality", [("jpeg", 30), ("h264", 35)])
def test_recompression_degrades_but_keeps_shape(clip, codec, quality):
    frames, _ = clip
    out = apply_params(frames, ClipParams(codec=codec, quality=quality))
    assert out.shape == frames.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - frames).mean()
    assert 0.3 < err < 12


def test_keypoints_follow_flip_and_rotation():
    size = (96, 128)
    points = np.array([[[30.5, 40.5], [90.5, 20.5], [64.0, 48.0], [60.5, 70.5], [10.5, 80.5],
                        [110.5, 60.5]]], np.float32)
    for p in (ClipParams(flip=True), ClipParams(angle=9.0), ClipParams(flip=True, angle=-7.0)):
        moved = transform_keypoints(points, p, size)
        for j in range(6):
            img = np.zeros((1, *size, 3), np.uint8)
            yy, xx = np.mgrid[:size[0], :size[1]] + 0.5
            img[0, ..., 0] = (255 * np.exp(-((xx - points[0, j, 0]) ** 2 + (yy - points[0, j, 1]) ** 2) / 8))
            out = apply_params(img, p)[0, ..., 0].astype(float)
            found = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
            k = [1, 0, 2, 3, 5, 4][j] if p.flip else j  # right/left entries swap under a flip
            assert np.abs(found - moved[0, k]).max() < 0.6, (p, j, found, moved[0, k])


def test_draws_are_deterministic_and_seeded_per_copy():
    a = draw_params(np.random.default_rng(1))
    assert a == draw_params(np.random.default_rng(1)) != draw_params(np.random.default_rng(2))
    draws = {draw_params(copy_rng(0, kind, vid, k))
             for kind in ("augment", "self_blend") for vid in ("v1", "v2") for k in (0, 1)}
    assert len(draws) == 8
    assert draw_params(copy_rng(0, "augment", "v1", 0)) == draw_params(copy_rng(0, "augment", "v1", 0))


def test_figure_shows_each_transform(clip):
    frames, kps = clip
    fig = augmentation_figure(frames, seed=0, frames=3, keypoints=kps)
    axes = fig.get_axes()
    assert len(axes) == 3 * 10  # original + 8 transforms + self-blend, 3 frames each
    labels = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert labels[0] == "original" and labels[1] == "flip" and labels[-1].startswith("self-blend")


# --------------------------------------------------------------------------- manifest copies

def _dataset(root, n_real=2, n_fake=5, frames=6):
    portraits = ["grace_hopper.jpg", "obama.jpg", "astronaut.png", "obama2.jpg", "biden.jpg"]
    rows = [{"video_id": f"real{i}", "portrait": portraits[i], "label": "REAL", "group": f"g{i}",
             "split": "train" if i == 0 else "", "frames": frames, "size": 96} for i in range(n_real)]
    rows += [{"video_id": f"fake{i}", "portrait": portraits[i % 5], "label": "FAKE",
              "group": f"g{i % max(n_real, 1)}", "frames": frames, "size": 96, "phase": 1.0}
             for i in range(n_fake)]
    rows.append({"video_id": "broken", "portrait": "", "label": "REAL", "group": "gx",
                 "status": "no_face"})
    return write_face_dataset(root, rows)


def test_plan_reaches_the_ratio():
    import pandas as pd

    df = pd.DataFrame({"video_id": [f"r{i}" for i in range(3)] + [f"f{i}" for i in range(8)],
                       "label": ["REAL"] * 3 + ["FAKE"] * 8, "status": "ok", "source": "extract"})
    plan = plan_copies(df, "augment", ratio=1.0)
    assert len(plan) == 5 and sorted({k for _, k in plan}) == [0, 1]
    assert len(plan_copies(df, "augment", ratio=0.5)) == 1  # 4 REAL for 8 FAKE
    assert len(plan_copies(df, "augment", per_video=2)) == 6
    assert plan_copies(df, "self_blend") == []  # FAKEs already outnumber REALs
    assert len(plan_copies(df, "self_blend", ratio=0.25)) == 4  # 12 FAKE for 3 REAL
    assert plan == plan_copies(df, "augment", ratio=1.0)


def test_augment_balances_and_is_resumable(tmp_path):
    path = _dataset(tmp_path)
    df = augment_manifest(path, seed=3, progress=False)
    ok = df[df["status"] == "ok"]
    assert (ok["label"] == "REAL").sum() == (ok["label"] == "FAKE").sum() == 5
    copies = df[df["source"] == "augment"].set_index("video_id")
    assert sorted(copies.index) == ["real0_aug0", "real0_aug1", "real1_aug0"] or \
        sorted(copies.index) == ["real0_aug0", "real1_aug0", "real1_aug1"]
    src = df.set_index("video_id")
    for vid, row in copies.iterrows():
        origin = vid.split("_aug")[0]
        assert (row["file"], row["group"], row["split"], row["label"]) == \
            tuple(src.loc[origin, ["file", "group", "split", "label"]])
        params = json.loads(row["params"])
        assert params["of"] == origin and params["kind"] == "augment"
        face = tmp_path / row["face_video"]
        assert video.probe(face).frames == 6
        side, orig = np.load(sidecar_path(face)), np.load(sidecar_path(tmp_path / src.loc[origin, "face_video"]))
        p = ClipParams(**{k: params[k] for k in ClipParams().to_dict()})
        np.testing.assert_allclose(side["keypoints"], transform_keypoints(orig["keypoints"], p, (96, 96)))
        assert json.loads(str(side["augment_params"])) == p.to_dict()

    # a rerun changes nothing; a lost copy is remade, identical
    stamp = {f: f.stat().st_mtime_ns for f in (tmp_path / "faces").iterdir()}
    lost = tmp_path / copies["face_video"].iloc[0]
    before = video.read_all_frames(lost)
    lost.unlink()
    again = augment_manifest(path, seed=3, progress=False)
    assert again.equals(df)
    assert np.abs(video.read_all_frames(lost).astype(int) - before).max() <= 2  # same draw, re-encoded
    untouched = [f for f in stamp if f.stem != lost.stem]  # all but the remade copy (+ sidecar)
    assert len(untouched) == len(stamp) - 2
    assert all(f.stat().st_mtime_ns == stamp[f] for f in untouched)


def test_per_video_copies_and_self_blend_from_real_only(tmp_path):
    path = _dataset(tmp_path, n_real=2, n_fake=0)
    df = augment_manifest(path, per_video=2, seed=0, progress=False)
    assert (df["source"] == "augment").sum() == 4
    df = augment_manifest(path, self_blend=True, seed=0, progress=False)  # FAKE:REAL -> 1:1
    sbi = df[df["source"] == "self_blend"]
    assert len(sbi) == 6 and (sbi["label"] == "FAKE").all()
    assert set(sbi["group"]) == {"g0", "g1"}  # with their sources' groups
    assert all(0 <= json.loads(p)["ratio"] <= 1 for p in sbi["params"])
    assert (sbi["split"][sbi["group"] == "g0"] == "train").all()
    with pytest.raises(AugmentError, match="no REAL rows"):
        augment_manifest(_dataset(tmp_path / "fakes_only", n_real=0, n_fake=2), progress=False)


def test_cli_augment(tmp_path, capsys):
    from dfdetect.cli import main

    path = _dataset(tmp_path, n_real=1, n_fake=2)
    assert main(["augment", str(path), "--seed", "1"]) == 0
    df = read_manifest(path)
    assert (df["source"] == "augment").sum() == 1
    assert "REAL" in capsys.readouterr().out


def test_end_to_end_from_extraction(tmp_path, portrait_video):
    """Real extraction (detected keypoints in the sidecars) -> self-blend + augment -> Dataset."""
    import shutil

    from dfdetect.config import DataConfig, FaceConfig
    from dfdetect.data.dataset import FrameSequenceDataset
    from dfdetect.extraction.pipeline import process_videos

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("grace_hopper.jpg", "obama.jpg"):
        shutil.copy(portrait_video(name, frames=10, size=(256, 256)), videos / f"{name.split('.')[0]}.mp4")
    (videos / "labels.csv").write_text("file,label\ngrace_hopper.mp4,REAL\nobama.mp4,REAL\n")
    out = tmp_path / "out"
    df = process_videos(videos, out, labels_csv=videos / "labels.csv", face_cfg=FaceConfig(size=96),
                        progress=False)
    assert (df["status"] == "ok").all()
    path = out / "manifest.csv"
    sbi = augment_manifest(path, self_blend=True, progress=False)  # REAL-only -> 1:1 with FAKEs
    assert (sbi["label"] == "FAKE").sum() == 2
    row = sbi[sbi["source"] == "self_blend"].iloc[0]
    params = json.loads(row["params"])
    assert params["mask"] in ("hull", "ellipse")  # detected keypoints were used, not a box
    full = augment_manifest(path, per_video=1, progress=False)
    assert len(full) == 6 and set(full["group"]) == set(df["group"])
    ds = FrameSequenceDataset(path, DataConfig(frames=8, size=64, self_blend_prob=0.5), train=True)
    item = ds[0]
    assert item["frames"].shape == (8, 3, 64, 64) and len(ds) == 6
