"""process_videos / create_face_videos: statuses, outputs, gaps, resume after a kill, shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfdetect import cli
from dfdetect.config import ExtractConfig, FaceConfig
from dfdetect.demo import synth
from dfdetect.extraction.manifest import read_manifest, sidecar_path
from dfdetect.extraction.pipeline import (
    RGB_DETECT_PIXELS,
    ExtractError,
    create_face_videos,
    merge_parts,
    output_is_valid,
    plan_jobs,
    process_videos,
)
from dfdetect.media import video

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96  # small face crops keep the tests fast; the CLI runs below pass --face-size 96 too
FACE = FaceConfig(size=SIZE)


def _write(path: Path, frames) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    video.write_video(path, frames, fps=24)
    return path


def _noise_clip(n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 6)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)])


def _face_moves_out_and_back(face: np.ndarray, n: int = 48) -> tuple[np.ndarray, set[int]]:
    """A face that slides out of a 320x240 frame, stays out for frames 20-35, and comes back."""
    face = cv2.resize(face, (150, 176))
    xs = [60] * 16 + [140, 220, 300, 380] + [400] * 16 + [60] * (n - 36)
    frames = [synth.paste(np.full((240, 320, 3), 128, np.uint8), face, x, 30) for x in xs]
    absent = {i for i, x in enumerate(xs) if x >= 320}
    return np.stack(frames), absent


@pytest.fixture(scope="module")
def clips(portrait_video, tmp_path_factory):
    """A folder of two face clips (one nested), their labels CSV, and a reference extraction."""
    root = tmp_path_factory.mktemp("clips")
    shutil.copy(portrait_video("grace_hopper.jpg", 24, (256, 256)), root / "real1.mp4")
    (root / "sub").mkdir()
    shutil.copy(portrait_video("obama.jpg", 24, (256, 256), phase=1.0), root / "sub" / "fake1.mp4")
    shutil.copy(portrait_video("astronaut.png", 24, (256, 256)), root / "real2.mp4")
    labels = root / "labels.csv"
    labels.write_text("file,label,group\nreal1.mp4,REAL,g1\nsub/fake1.mp4,FAKE,g1\nreal2.mp4,real,\n")
    out = tmp_path_factory.mktemp("reference")
    df = process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False)
    return root, labels, out, df


def test_statuses_and_the_batch_goes_on(tmp_path, portrait, real_video):
    src = tmp_path / "videos"
    _write(src / "ok.mp4", synth.animate(portrait("obama2.jpg"), 16, (240, 240)))
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.mp4").write_text("not a video\n" * 50)
    corrupt = bytearray(real_video.read_bytes()[:300_000])
    corrupt[:4000] = np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    (src / "corrupt.mp4").write_bytes(bytes(corrupt))
    (src / "cut.mp4").write_bytes(real_video.read_bytes()[:50_000])  # first frame(s) only
    _write(src / "noface.mp4", _noise_clip())
    blink = synth.animate(portrait("grace_hopper.jpg"), 16, (320, 240))
    blink[2:] = _noise_clip(14)
    _write(src / "blink.mp4", blink)  # a face in 2 frames only: no_face, like predict's NO_FACE
    df = process_videos(src, tmp_path / "out", face_cfg=FACE, progress=False).set_index("video_id")
    assert df["status"].to_dict() == {
        "blink": "no_face", "corrupt": "unreadable", "cut": "too_short", "empty": "unreadable",
        "noface": "no_face", "notes": "unreadable", "ok": "ok"}
    assert (df.loc[df.status != "ok", "error"].str.len() > 20).all()
    assert "empty (0 bytes)" in df.loc["empty", "error"] and "notes.mp4" in df.loc["notes", "error"]
    assert "truncated" in df.loc["cut", "error"] and "of the 472 frames" in df.loc["cut", "error"]
    assert (df.loc[df.status != "ok", "face_video"] == "").all()
    assert df.loc["ok", "frames_read"] == 16 and df.loc["ok", "frames_with_face"] >= 15
    assert df.loc["noface", "frames_read"] == 16 and df.loc["blink", "frames_with_face"] == 2
    assert not list((tmp_path / "out" / "faces").glob(".tmp-*"))  # nothing half-written left


def test_face_videos_sidecars_and_labels(clips):
    _, _, out, df = clips
    df = df.set_index("video_id")
    assert list(df.index) == ["real1", "real2", "sub__fake1"]
    assert df["label"].to_dict() == {"real1": "REAL", "real2": "REAL", "sub__fake1": "FAKE"}
    assert df["group"].to_dict() == {"real1": "g1", "real2": "real2", "sub__fake1": "g1"}
    assert (df["status"] == "ok").all() and (df["source"] == "extract").all()
    assert df.loc["sub__fake1", "file"] == "sub/fake1.mp4"
    assert read_manifest(out / "manifest.csv").set_index("video_id").equals(df)
    for vid, row in df.iterrows():
        path = out / row["face_video"]
        assert path == out / "faces" / f"{vid}.mp4"
        frames = video.read_all_frames(path)
        with np.load(sidecar_path(path)) as side:
            n = len(side["frame_index"])
            assert frames.shape == (n, SIZE, SIZE, 3) and n == row["frames_with_face"] >= 22
            assert side["box"].shape == (n, 4) and side["keypoints"].shape == (n, 6, 2)
            assert side["score"].shape == (n,) and side["interpolated"].dtype == bool
            assert list(side["read_index"]) == list(range(24))
            eyes = side["keypoints"][:, :2]  # crop pixels: inside the crop, in its upper half
            assert (eyes >= 0).all() and (eyes[..., 0] < SIZE).all() and (eyes[..., 1] < SIZE / 2 + 5).all()
        assert output_is_valid(out, row["face_video"], n)


@pytest.mark.parametrize("every", [1, 3])
def test_detections_made_ahead_on_the_pool_belong_to_their_frames(tmp_path, cropper, real_video, every):
    # extraction detects the tracker's scheduled frames ahead, on two threads: every detected
    # box in the sidecar must be a detection of the frame it is recorded for (the face moves:
    # a box of a neighbouring frame differs)
    row = create_face_videos(real_video, tmp_path, "talk", FaceConfig(detect_every=every),
                             ExtractConfig(max_frames=90), cropper=cropper)
    assert row["status"] == "ok", row
    frames = dict(video.iter_yuv_frames(real_video, max_frames=90, rgb_up_to=RGB_DETECT_PIXELS))
    with np.load(tmp_path / "faces" / "talk.npz") as side:
        detected = ~side["interpolated"]
        assert detected.sum() >= 90 // every
        moved = 0
        for i, box in zip(side["frame_index"][detected], side["box"][detected], strict=True):
            own = [f.as_array() for f in cropper.detect_yuv(frames[i])]
            assert any(np.allclose(box, b, atol=1e-4) for b in own), f"frame {i}: not its box"
            moved += not np.allclose(box, cropper.detect_yuv(frames[max(i - 1, 0)])[0].as_array(), atol=1e-4)
        assert moved >= 0.9 * detected.sum()  # so a box of another frame would have failed


def test_frames_without_the_face_are_missing_not_stale(tmp_path, portrait):
    frames, absent = _face_moves_out_and_back(portrait("grace_hopper.jpg"))
    src = _write(tmp_path / "leaves.mp4", frames)
    cfg = FaceConfig(size=SIZE, max_gap=3, all_tracks=True, min_track_frames=4)
    row = create_face_videos(src, tmp_path / "out", "leaves", cfg)
    assert row["status"] == "ok" and row["frames_read"] == 48
    outputs = [row["face_video"], *row["tracks"].split(";")]
    assert len(outputs) == 2, "the face's return is a new track (a long gap is never bridged)"
    kept = set()
    for face_video in outputs:
        path = tmp_path / "out" / face_video
        with np.load(sidecar_path(path)) as side:
            index = set(side["frame_index"].tolist())
            assert list(side["read_index"]) == list(range(48))
        assert not index & absent, f"{face_video} has crops from frames without a face"
        faces = video.read_all_frames(path)
        assert faces.reshape(len(faces), -1).std(axis=1).min() > 20  # no flat grey background crop
        kept |= index
    assert kept >= set(range(16)) | set(range(36, 48))


def test_uniform_sampling(tmp_path, portrait_video):
    cfg = ExtractConfig(sampling="uniform", num_frames=8)
    row = create_face_videos(portrait_video(), tmp_path, "u", FACE, cfg)
    assert row["status"] == "ok" and row["frames_read"] == 8
    with np.load(tmp_path / "faces" / "u.npz") as side:
        assert set(side["frame_index"].tolist()) <= set(video.uniform_indices(24, 8).tolist())


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "faces").iterdir()}


def test_rerun_skips_done_videos_and_redoes_broken_ones(tmp_path, clips):
    root, labels, ref_out, ref = clips
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = _mtimes(out)
    again = process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False)
    assert again.equals(ref) and _mtimes(out) == before  # nothing redone
    (out / "faces" / "real2.npz").unlink()  # a half-written output: its sidecar is missing
    (out / "faces" / ".tmp-real2.work").mkdir()  # and a stale work folder
    again = process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False)
    assert again.equals(ref)
    after = _mtimes(out)
    assert after["real1.mp4"] == before["real1.mp4"] and after["real2.mp4"] != before["real2.mp4"]
    assert not (out / "faces" / ".tmp-real2.work").exists()
    with pytest.raises(ExtractError, match="extract_config.json"):
        process_videos(root, out, labels_csv=labels, face_cfg=FaceConfig(size=128), progress=False)
    # a folder written by a version with settings since removed: fine where they were at what
    # this version does (FaceConfig.detect_size=0: the full frame), refused where they were not
    settings = out / "extract_config.json"
    old = json.loads(settings.read_text())
    for value, refused in ((0, False), (960, True)):
        old["face"]["detect_size"] = value
        settings.write_text(json.dumps(old))
        if refused:
            with pytest.raises(ExtractError, match=r"face\.detect_size=960"):
                process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False)
        else:
            assert process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False).equals(ref)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dfdetect", "extract", *map(str, args), "--face-size", str(SIZE)]


def test_killed_mid_video_then_rerun_gives_the_same_manifest(tmp_path, portrait):
    src = tmp_path / "videos"
    _write(src / "a.mp4", synth.animate(portrait("obama.jpg"), 12, (240, 240)))
    _write(src / "b.mp4", synth.animate(portrait("biden.jpg"), 150, (320, 240)))  # killed in here
    _write(src / "c.mp4", synth.animate(portrait("astronaut.png"), 12, (240, 240)))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(src, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    work = out / "faces" / ".tmp-b.work"
    deadline = time.monotonic() + 120
    while not (work.is_dir() and any(work.iterdir())) and proc.poll() is None:
        assert time.monotonic() < deadline, "extraction never reached video b"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = read_manifest(out / "manifest.csv")
    assert list(partial["video_id"]) == ["a"]  # only the finished video is recorded
    assert not output_is_valid(out, "faces/b.mp4")  # nothing of b looks like a valid output

    subprocess.run(_cli(src, out), cwd=ROOT, check=True, capture_output=True)
    resumed = read_manifest(out / "manifest.csv")
    ref = process_videos(src, tmp_path / "ref", face_cfg=FACE, progress=False)
    assert resumed.equals(ref)
    for vid in ("a", "b", "c"):
        with np.load(out / "faces" / f"{vid}.npz") as x, np.load(tmp_path / "ref" / "faces" / f"{vid}.npz") as y:
            assert all(np.array_equal(x[k], y[k]) for k in y.files)
    assert not list((out / "faces").glob(".tmp-*"))


def test_shards_with_workers_merge_to_the_full_manifest(tmp_path, clips):
    root, labels, _, ref = clips
    out = tmp_path / "out"
    a = process_videos(root, out, labels_csv=labels, face_cfg=FACE, shard="0/2", workers=2,
                       progress=False)
    b = process_videos(root, out, labels_csv=labels, face_cfg=FACE, shard="1/2", progress=False)
    assert len(a) + len(b) == len(ref) and not set(a["video_id"]) & set(b["video_id"])
    assert (out / "manifest.part-0-of-2.csv").is_file() and not (out / "manifest.csv").exists()
    assert cli.main(["merge", str(out)]) == 0
    assert read_manifest(out / "manifest.csv").equals(ref)


def test_plan_jobs_ids_labels_and_errors(tmp_path):
    for rel in ("x/a.mp4", "x/b.MOV", "c.mp4", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [j.video_id for j in plan_jobs(tmp_path)] == ["c", "x__a", "x__b"]
    (tmp_path / "labels.csv").write_text("file,label\nx/a.mp4,FAKE\n")
    (job,) = plan_jobs(tmp_path, tmp_path / "labels.csv")
    assert (job.video_id, job.label, job.group, job.path) == ("x__a", "FAKE", "a", tmp_path / "x/a.mp4")
    (tmp_path / "c.avi").write_bytes(b"")
    with pytest.raises(ExtractError, match="video_id 'c'"):
        plan_jobs(tmp_path)
    with pytest.raises(ExtractError, match="numbered from 0"):
        process_videos(tmp_path, tmp_path / "out", shard="2/2")
    with pytest.raises(ExtractError, match="i/n"):
        process_videos(tmp_path, tmp_path / "out", shard="half")
    with pytest.raises(ExtractError, match="no such"):
        plan_jobs(tmp_path / "missing")


def test_merge_refuses_a_missing_part(tmp_path):
    pd.DataFrame({"video_id": ["a"], "face_video": [""], "status": ["no_face"]}).to_csv(
        tmp_path / "manifest.part-0-of-2.csv", index=False)
    with pytest.raises(ExtractError, match=r"\[1\] of 2 are missing"):
        merge_parts(tmp_path)
    assert cli.main(["merge", str(tmp_path)]) == 1  # the CLI reports it and fails


def test_rerun_after_augmentation_keeps_the_augmented_rows(tmp_path, clips):
    """Notebook 01 rerun after 02: extraction keeps the rows it did not write (0.1.0 dropped them)."""
    from dfdetect.augment.copies import augment_manifest

    root, labels, ref_out, _ = clips
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    augmented = augment_manifest(out / "manifest.csv", per_video=1, progress=False)
    copies = set(augmented.loc[augmented["source"] == "augment", "video_id"])
    assert copies
    again = process_videos(root, out, labels_csv=labels, face_cfg=FACE, progress=False)
    assert copies <= set(again["video_id"]) and len(again) == len(augmented)
