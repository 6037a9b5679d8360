"""The demo data set (labelled, both manipulations, groups kept, deterministic and resumable)
and its leave-people-out folds (every person tested once, no person in train and test)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dfdetect.demo import dataset as demo_data
from dfdetect.demo import fakes
from dfdetect.demo import folds as demo_folds
from dfdetect.demo.dataset import DemoSpec
from dfdetect.extraction.faces import FaceCropper
from dfdetect.labels import read_labels
from dfdetect.media import video

# a reduced set for the tests: 1 talking-head segment, 2 segments of one signer's clip and of
# the left person of a two-person video, 2 photos x 2 camera paths; 12 frames of 192 px
SMALL = {"frames": 12, "size": (192, 192), "video_segments": 1,
         "videos": ("asl_eat.mkv", "head-pose-face-detection-female-and-male.gif#left"),
         "portraits": ("grace_hopper.jpg", "obama.jpg"), "portrait_clips": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("demo")
    return demo_data.build_demo_dataset(out, seed=0, sample_dir=sample_dir, progress=False, **SMALL)


def test_full_plan_is_small_labelled_and_keeps_fakes_with_their_source():
    plans = demo_data.plan_demo(DemoSpec())
    by_name = {p.name: p for p in plans}
    assert len(by_name) == len(plans), "clip names are unique"
    assert 120 <= len(plans) <= 180
    assert len({p.group for p in plans}) == 13  # people; obama.jpg / obama2.jpg are one
    labels = [p.label for p in plans]
    assert labels.count("FAKE") >= labels.count("REAL") > 0
    kinds = {p.manipulation for p in plans if p.label == "FAKE"}
    assert kinds == set(fakes.MANIPULATIONS)
    for p in plans:
        if p.label == "FAKE":
            source = by_name[p.target]
            assert source.label == "REAL" and source.group == p.group
        else:
            assert p.manipulation == "none" and p.target == ""
    for kind in fakes.MANIPULATIONS:  # issue #7 trains on one kind and tests on the other
        assert sum(p.manipulation == kind for p in plans) >= 8


def test_video_frame_counts_match_the_shipped_files(sample_dir):
    for name, frames in demo_data.VIDEO_FRAMES.items():
        assert video.probe(sample_dir / name).frames == frames, name
    assert set(map(demo_data.source_file, demo_data.VIDEOS)) <= set(demo_data.VIDEO_FRAMES)
    assert all(d in demo_data.IDENTITIES for d in demo_data.DONORS)


def test_two_person_video_gives_each_person_their_own_group():
    pair = demo_data.HEAD_POSE_PAIR
    assert demo_data.IDENTITIES[f"{pair}#left"] == demo_data.IDENTITIES[
        "head-pose-face-detection-female.gif"]
    assert demo_data.IDENTITIES[f"{pair}#right"] == demo_data.IDENTITIES[
        "head-pose-face-detection-male.gif"]


def test_swap_donors_are_other_people_and_depend_on_the_seed():
    plans = demo_data.plan_demo(DemoSpec())
    t0, t1 = demo_data.labels_table(plans, 0), demo_data.labels_table(plans, 1)
    swaps = t0["manipulation"] == "swap"
    assert (t0.loc[swaps, "donor"] != "").all() and (t0.loc[~swaps, "donor"] == "").all()
    assert (t0.loc[swaps, "donor"] != t0.loc[swaps, "group"]).all()
    assert t0.equals(demo_data.labels_table(plans, 0))
    assert not t0["donor"].equals(t1["donor"])


def test_built_set_has_both_labels_and_manipulations(demo):
    table = read_labels(demo.labels_csv, demo.videos)
    assert set(table["label"]) == {"REAL", "FAKE"}
    assert set(demo.table["manipulation"]) == {"none", "swap", "reenact"}
    # 1 + 2 + 2 video segments with 2 fakes each (15) + 4 photo clips with 1 fake each (8)
    assert len(table) == 23
    for group in table["group"].unique():
        assert set(table.loc[table["group"] == group, "label"]) == {"REAL", "FAKE"}
    for f in table["file"]:
        info = video.probe(demo.videos / f)
        assert (info.frames, info.width, info.height) == (12, 192, 192)


def test_fakes_differ_from_their_source_in_the_face_only(demo):
    with FaceCropper() as cropper:
        for row in demo.table[demo.table["label"] == "FAKE"].itertuples():
            fake = video.read_all_frames(demo.videos / row.file)
            real_name = row.file.replace(f"fake_{row.manipulation}_", "real_")
            real = video.read_all_frames(demo.videos / real_name)
            boxes = cropper.detect(fake[6])
            assert boxes, f"{row.file}: no face found, so extraction would drop it"
            b = boxes[0]
            x1, y1, x2, y2 = (int(v) for v in (b.x1, b.y1, b.x2, b.y2))
            changed = np.abs(fake.astype(int) - real).max(-1) > 15  # (T, H, W), above codec noise
            mid = (y1 + y2) // 2  # lower half of the face: both manipulations edit it
            face = changed[:, max(mid, 0):y2, max(x1, 0):x2].mean()
            c = 24
            corners = np.concatenate([changed[:, :c, :c], changed[:, :c, -c:],
                                      changed[:, -c:, :c], changed[:, -c:, -c:]], 1).mean()
            # a mouth re-enactment of a signer's ~70-px face moves few pixels: 2%, not 4%
            assert face > 0.02 and face > 5 * corners, f"{row.file}: {face:.3f} vs {corners:.4f}"


def test_rerun_reuses_files_and_rebuilds_identical_clips(demo, sample_dir):
    files = sorted(demo.videos.glob("*.mp4"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    fake = demo.videos / "fake_swap_obama_c0.mp4"
    before = video.read_all_frames(fake)
    fake.unlink()
    again = demo_data.build_demo_dataset(demo.root, seed=0, sample_dir=sample_dir,
                                         progress=False, **SMALL)
    assert again.table.equals(demo.table)
    after = video.read_all_frames(fake)
    assert np.abs(after.astype(int) - before).max() <= 2, "same seed, same clip"
    for f in files:
        if f != fake:
            assert f.stat().st_mtime_ns == stamps[f], f"{f.name} was rewritten"
    assert not [p for p in demo.videos.iterdir() if p.name.startswith(".tmp-")]


def test_other_settings_in_the_same_folder_are_refused(demo, sample_dir):
    with pytest.raises(demo_data.DemoDataError, match="other settings"):
        demo_data.build_demo_dataset(demo.root, seed=1, sample_dir=sample_dir, progress=False,
                                     **SMALL)


def test_missing_sample_faces_are_named(tmp_path):
    with pytest.raises(demo_data.DemoDataError, match="missing"):
        demo_data.build_demo_dataset(tmp_path / "out", sample_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------- folds


@pytest.fixture(scope="module")
def full_table():
    plans = demo_data.plan_demo(DemoSpec())
    return demo_data.labels_table(plans, 0)


def test_folds_make_every_person_a_test_person_exactly_once(full_table):
    people = set(full_table["group"])
    for seed in (0, 1):
        folds = demo_folds.people_folds(full_table, k=4, seed=seed)
        tested = [p for f in folds for p in f.test]
        assert sorted(tested) == sorted(people)
        for f in folds:
            assert not set(f.test) & set(f.train) and not set(f.val) & set(f.train)
            assert not set(f.test) & set(f.val) and len(f.val) == 1
            assert set(f.test) | set(f.val) | set(f.train) == people
        sizes = [full_table["group"].isin(f.test).sum() for f in folds]
        assert max(sizes) - min(sizes) <= 15, sizes  # dealt by clip count: similar folds
    assert demo_folds.people_folds(full_table, seed=0) == demo_folds.people_folds(full_table, seed=0)


def test_check_folds_rejects_a_missing_or_repeated_person(full_table):
    folds = demo_folds.people_folds(full_table, k=4, seed=0)
    people = set(full_table["group"])
    broken = [folds[0], dataclasses.replace(folds[1], test=folds[0].test)]
    with pytest.raises(demo_folds.FoldError, match="once"):
        demo_folds.check_folds([*broken, *folds[2:]], people)
    leaky = dataclasses.replace(folds[0], train=(*folds[0].train, folds[0].test[0]))
    with pytest.raises(demo_folds.FoldError, match="two splits"):
        demo_folds.check_folds([leaky, *folds[1:]], people)


def _manifest_of(table):
    return pd.DataFrame({"video_id": table["file"].str.removesuffix(".mp4"), "file": table["file"],
                         "label": table["label"], "group": table["group"], "split": "",
                         "status": "ok"})


def test_fold_manifest_keeps_people_apart_and_test_faces_out_of_training(full_table):
    for fold in demo_folds.people_folds(full_table, k=4, seed=0):
        df = demo_folds.fold_manifest(_manifest_of(full_table), full_table, fold)
        donor = df["file"].map(full_table.set_index("file")["donor"])
        by_split = {s: set(df.loc[df["split"] == s, "group"]) for s in ("train", "val", "test")}
        assert by_split["test"] == set(fold.test) and by_split["val"] == set(fold.val)
        assert not by_split["train"] & by_split["test"]
        # no test person's face in training, not even pasted in as a swap donor
        assert not set(donor[df["split"] != "test"]) & set(fold.test)
        assert (df["split"] == "test").sum() == full_table["group"].isin(fold.test).sum()


def test_cross_manipulation_manifest_keeps_one_kind_per_split(full_table):
    fold = demo_folds.people_folds(full_table, k=4, seed=0)[0]
    kinds = {"train": ("swap",), "val": ("swap",), "test": ("reenact",)}
    df = demo_folds.fold_manifest(_manifest_of(full_table), full_table, fold, kinds)
    kind = df["file"].map(full_table.set_index("file")["manipulation"])
    assert set(kind[df["split"] == "train"]) == {"none", "swap"}
    assert set(kind[df["split"] == "test"]) == {"none", "reenact"}
