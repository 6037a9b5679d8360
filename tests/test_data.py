"""Dataset, preprocessing, group-aware splits and loaders, on face videos of real portraits."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from face_fixtures import face_clip, write_face_dataset

from dfdetect.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from dfdetect.data.dataset import FrameSequenceDataset, pos_weight, read_clip
from dfdetect.data.loaders import make_loader
from dfdetect.data.preprocess import preprocess_clip, resize_frames
from dfdetect.data.sampling import clip_indices
from dfdetect.data.splits import LeakageError, check_splits, class_counts, split_manifest
from dfdetect.extraction.manifest import read_manifest, write_manifest

PORTRAITS = ("grace_hopper.jpg", "obama.jpg", "astronaut.png", "obama2.jpg", "biden.jpg", "camera.png")
CFG = DataConfig(frames=8, size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """6 groups (a REAL portrait clip and a FAKE of it), one short video, one failed row."""
    rows = []
    for i, name in enumerate(PORTRAITS):
        rows.append({"video_id": f"real{i}", "portrait": name, "label": "REAL", "group": f"p{i}",
                     "frames": 24, "size": 96})
        rows.append({"video_id": f"fake{i}", "portrait": name, "label": "FAKE", "group": f"p{i}",
                     "frames": 24, "size": 96, "phase": 2.0})
    rows.append({"video_id": "short", "portrait": "obama.jpg", "label": "REAL", "group": "p0",
                 "frames": 3, "size": 96})
    rows.append({"video_id": "noface", "portrait": "", "label": "FAKE", "group": "p9", "status": "no_face"})
    return write_face_dataset(tmp_path_factory.mktemp("faces"), rows)


# ------------------------------------------------------------------ preprocessing and sampling

def test_preprocess_clip_shapes_and_normalisation():
    clip, _, _ = face_clip("grace_hopper.jpg", frames=4, size=224)
    x = preprocess_clip(clip, DataConfig(size=112))
    assert x.shape == (4, 3, 112, 112) and x.dtype == torch.float32 and x.is_contiguous()
    grey = np.full((2, 50, 50, 3), [124, 116, 104], np.uint8)  # ~ the ImageNet mean
    y = preprocess_clip(grey, DataConfig(size=32))
    assert y.shape == (2, 3, 32, 32) and y.abs().max() < 0.01
    white = preprocess_clip(np.full((1, 16, 16, 3), 255, np.uint8), DataConfig(size=16))
    np.testing.assert_allclose(white[0, :, 0, 0], (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-5)  # mean None: ImageNet
    # resizing first (as the cache does) changes nothing
    assert torch.equal(preprocess_clip(resize_frames(clip, 112), DataConfig(size=112)), x)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        preprocess_clip(clip.astype(np.float32), CFG)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        preprocess_clip(clip[0], CFG)


def test_clip_indices_rules():
    np.testing.assert_array_equal(clip_indices(100, 4), [12, 37, 62, 87])  # evenly spaced
    np.testing.assert_array_equal(clip_indices(3, 6), [0, 0, 1, 1, 2, 2])  # short: repeat in order
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(clip_indices(3, 6, train=True, rng=rng), [0, 0, 1, 1, 2, 2])
    starts, steps = set(), set()
    for _ in range(200):
        idx = clip_indices(60, 8, train=True, rng=rng)
        assert len(idx) == 8 and idx[0] >= 0 and idx[-1] < 60
        assert len(set(np.diff(idx))) == 1  # one stride per clip
        starts.add(idx[0])
        steps.add(idx[1] - idx[0])
    assert len(starts) > 20 and steps == set(range(1, 8))  # stride in [1, 60 // 8]
    fixed = clip_indices(60, 8, train=True, rng=rng, stride=3)
    assert set(np.diff(fixed)) == {3}


def test_read_clip_far_apart_frames(tmp_path):
    """Frames more than video.SEEK_GAP apart (a random training offset) decode, in order."""
    from dfdetect.media import video

    clip, _, _ = face_clip("obama.jpg", frames=120, size=64)
    path = tmp_path / "long.mp4"
    video.write_video(path, clip, fps=25, crf=0)
    idx = np.array([100, 5, 100, 60])
    got = read_clip(path, idx)
    assert got.shape == (4, 64, 64, 3)
    for g, i in zip(got, idx):  # each decoded frame is the source frame it should be
        err = np.abs(clip.astype(int) - g).mean(axis=(1, 2, 3))
        assert err.argmin() == i and err[i] < 5


# ------------------------------------------------------------------ dataset

def test_dataset_items(faces, caplog):
    with caplog.at_level(logging.INFO, logger="dfdetect.data.dataset"):
        ds = FrameSequenceDataset(faces, CFG)
    assert "1 row(s) left out because their status is not 'ok'" in caplog.text
    assert len(ds) == 13 and "noface" not in ds.video_ids
    for i in (0, ds.video_ids.index("short")):
        item = ds[i]
        assert item["frames"].shape == (8, 3, 64, 64) and item["frames"].dtype == torch.float32
        assert item["label"].dtype == torch.int64 and item["label"].shape == ()
        assert item["label"].item() == (1 if item["video_id"].startswith("fake") else 0)
    # evaluation clips are deterministic across items, datasets and seeds
    other = FrameSequenceDataset(faces, DataConfig(frames=8, size=64, seed=5))
    for i in range(3):
        assert torch.equal(ds[i]["frames"], other[i]["frames"])
    # the evaluation clip is the evenly spaced frames of the face video
    frames = read_clip(ds.paths[0], clip_indices(24, 8))
    assert torch.equal(ds[0]["frames"], preprocess_clip(frames, CFG))


def test_training_clips_random_but_reproducible(faces):
    a = FrameSequenceDataset(faces, CFG, train=True)
    b = FrameSequenceDataset(faces, CFG, train=True)
    first = [a[0]["frames"] for _ in range(4)]
    assert not all(torch.equal(first[0], f) for f in first[1:])  # random offsets
    assert all(torch.equal(f, b[0]["frames"]) for f in first)  # same seed, same clips
    b.reseed(1)
    assert not torch.equal(first[0], b[0]["frames"])


def test_on_the_fly_self_blend_and_augment(faces):
    real_only = FrameSequenceDataset(faces, DataConfig(frames=8, size=64, self_blend_prob=1.0), train=True)
    plain = FrameSequenceDataset(faces, CFG, train=True)
    i = real_only.video_ids.index("real1")
    item, ref = real_only[i], plain[i]
    assert item["label"].item() == 1  # a self-blended REAL clip is FAKE
    assert item["frames"].shape == ref["frames"].shape and not torch.equal(item["frames"], ref["frames"])
    j = real_only.video_ids.index("fake1")
    assert real_only[j]["label"].item() == 1
    aug = FrameSequenceDataset(faces, DataConfig(frames=8, size=64, augment=True), train=True)
    diffs = [not torch.equal(aug[i]["frames"], plain[i]["frames"]) for i in range(6)]
    assert any(diffs)
    evaluation = FrameSequenceDataset(faces, DataConfig(frames=8, size=64, augment=True,
                                                        self_blend_prob=1.0))
    assert evaluation[i]["label"].item() == 0  # never at evaluation


def test_cache_gives_identical_clips(faces):
    cfg = DataConfig(frames=8, size=64, augment=True, self_blend_prob=0.5)
    plain = FrameSequenceDataset(faces, cfg, split="train", train=True)
    cached = FrameSequenceDataset(faces, cfg, split="train", train=True, cache=True)
    assert cached.cache is not None and (faces.parent / "cache" / "train-64px.json").is_file()
    for i in range(len(plain)):
        x, y = plain[i], cached[i]
        assert x["video_id"] == y["video_id"] and x["label"] == y["label"]
        assert torch.equal(x["frames"], y["frames"])
    again = FrameSequenceDataset(faces, cfg, split="train", cache=True)  # reused, not rebuilt
    assert again.cache.index == cached.cache.index


# ------------------------------------------------------------------ splits

def _table(n_groups: int, fakes_per_group: int = 1, copies: int = 0) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        rows.append({"video_id": f"r{g}", "label": "REAL", "group": f"g{g}"})
        rows += [{"video_id": f"r{g}_aug{k}", "label": "REAL", "group": f"g{g}"} for k in range(copies)]
        rows += [{"video_id": f"f{g}_{k}", "label": "FAKE", "group": f"g{g}"} for k in range(fakes_per_group)]
    df = pd.DataFrame(rows)
    return df.assign(status="ok", split="", face_video="", file="")


@pytest.mark.parametrize("n_groups", [3, 5, 10, 30])
def test_group_split_keeps_fakes_with_their_source(n_groups):
    df = _table(n_groups, fakes_per_group=2, copies=1)
    out = split_manifest(df, DataConfig(seed=1))
    assert set(out["split"]) == {"train", "val", "test"}
    assert out.groupby("group")["split"].nunique().max() == 1  # a FAKE, its REAL source and copies
    counts = class_counts(out)
    assert (counts > 0).all().all(), counts  # both classes in every split
    assert out["split"].tolist() == split_manifest(df, DataConfig(seed=1))["split"].tolist()


def test_split_fractions_on_a_larger_set():
    out = split_manifest(_table(200), DataConfig(val_fraction=0.15, test_fraction=0.15))
    share = out.groupby("split")["group"].nunique() / 200
    assert abs(share["test"] - 0.15) < 0.03 and abs(share["val"] - 0.15) < 0.04
    assert split_manifest(_table(200), DataConfig(seed=2))["split"].tolist() != out["split"].tolist()


def test_tiny_sets(caplog):
    with caplog.at_level(logging.WARNING, logger="dfdetect.data.dataset"):
        one = split_manifest(_table(1), CFG)
        two = split_manifest(_table(2), CFG)
    assert set(one["split"]) == {"train"}
    assert set(two["split"]) == {"train", "val"}
    assert "only 1 group(s)" in caplog.text and "only 2 group(s)" in caplog.text


def test_fixed_split_column_is_kept_and_spread_to_the_group():
    df = _table(6, copies=1)
    df.loc[df["video_id"] == "r0", "split"] = "test"  # the labels CSV fixed one row
    out = split_manifest(df, CFG)
    assert (out.loc[out["group"] == "g0", "split"] == "test").all()  # its fake and copy follow


def test_leaky_split_raises():
    df = _table(4)
    df["split"] = ["train", "test"] + ["train"] * (len(df) - 2)  # g0's REAL and FAKE apart
    with pytest.raises(LeakageError, match=r"g0: test, train"):
        check_splits(df)
    with pytest.raises(LeakageError, match="g0"):
        split_manifest(df, CFG)
    with pytest.raises(ValueError, match="unknown split"):
        split_manifest(_table(3).assign(split="holdout"), CFG)


def test_dataset_splits_are_disjoint_and_leak_checked(faces):
    ids = {s: set(FrameSequenceDataset(faces, CFG, split=s).video_ids) for s in ("train", "val", "test")}
    assert sum(map(len, ids.values())) == 13 and not (ids["train"] & ids["val"] | ids["train"] & ids["test"])
    df = read_manifest(faces)
    df.loc[df["video_id"] == "real0", "split"] = "train"
    df.loc[df["video_id"] == "fake0", "split"] = "val"
    leaky = faces.parent / "leaky.csv"
    write_manifest(df, leaky)
    with pytest.raises(LeakageError, match="p0"):
        FrameSequenceDataset(leaky, CFG, split="train")


# ------------------------------------------------------------------ loaders and balance

class _Labels(torch.utils.data.Dataset):
    """Labels and the dataset's own random draws, no decoding (fast loader tests)."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)
        self.reseed(0)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"label": int(self.labels[i]), "draw": float(self.rng.random()), "i": i}


def test_sampler_balances_classes():
    ds = _Labels([0] * 90 + [1] * 10)
    drawn = np.concatenate([b["label"].numpy() for seed in range(20)
                            for b in make_loader(ds, 10, train=True, balance="sampler", seed=seed)])
    assert abs(drawn.mean() - 0.5) < 0.05  # 2000 draws: std 0.011
    plain = np.concatenate([b["label"].numpy() for b in make_loader(ds, 10, train=True, balance="none")])
    assert plain.mean() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="balance="):
        make_loader(ds, 10, train=True, balance="weights")


def test_workers_draw_differently_and_reproducibly():
    ds = _Labels([0, 1] * 8)

    def epoch(seed):
        return {b: d for batch in make_loader(ds, 4, train=False, workers=2, seed=seed)
                for b, d in zip(batch["i"].tolist(), batch["draw"].tolist())}

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert e0 == e0_again  # reproducible for a seed
    assert e0 != e1  # another epoch seed, other clips
    assert len(set(np.round(list(e0.values()), 12))) == 16  # workers do not repeat each other


def test_pos_weight(caplog):
    df = _table(4, fakes_per_group=3)
    assert pos_weight(df) == pytest.approx(4 / 12)
    failed = df["video_id"].isin(["f0_0", "f1_0", "f2_0", "f3_0"])
    assert pos_weight(df.assign(status=np.where(failed, "no_face", "ok"))) == pytest.approx(4 / 8)
    real_only = df[df["label"] == "REAL"]
    with caplog.at_level(logging.WARNING, logger="dfdetect.data.dataset"):
        assert pos_weight(real_only) == 1.0  # a REAL-only manifest still loads ...
    assert "self_blend_prob" in caplog.text  # ... with a warning saying what to do
    assert pos_weight(real_only, self_blend_prob=0.5) == pytest.approx(1.0)
