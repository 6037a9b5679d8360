"""Issue #14, extraction side: one test per fault (stale rows, sideways faces, two writers,
orphaned workers, infrastructure failures, truncation, variable frame rate, vocabulary,
unchecked arguments, link loops).

Tiny real inputs only: short videos of the shipped portraits, written with PyAV. Where the fault
is an environment one a test cannot cause as root (permission denied) or safely (a full disk),
the OS error is raised at the call it would come from; dead and orphaned workers are real
processes killed with SIGKILL.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import dfdetect.extraction.pipeline as pipeline_mod
import dfdetect.media.video as video_mod
from dfdetect.cli import main
from dfdetect.config import ConfigError, ExtractConfig, FaceConfig
from dfdetect.demo import synth
from dfdetect.extraction.manifest import read_manifest
from dfdetect.extraction.pipeline import ExtractError, create_face_videos, process_videos
from dfdetect.media import video

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "dfdetect" / "demo" / "sample"
SIZE = 64  # small face crops keep the tests fast
FACE = FaceConfig(size=SIZE)


def portrait_clip(frames: int, name: str = "grace_hopper.jpg", size=(160, 160)) -> np.ndarray:
    return synth.animate(synth.load_rgb(SAMPLE / name), frames, size, synth.CameraPath())


def write(path: Path, frames: np.ndarray, fps: float = 24, **container_options: str) -> Path:
    """Frames -> H.264 mp4 (``container_options``: muxer options, e.g. movflags)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options=container_options) as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


def noise_clip(n: int, size=(160, 160)) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)])


def loop(src: Path, dst: Path, times: int) -> Path:
    """``src`` repeated ``times`` times by copying packets (a long video without re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        packets = [p for p in inp.demux(s_in) if p.size]
        span = max(p.pts for p in packets) + (packets[-1].duration or 1)
        for k in range(times):
            for p in packets:
                p.pts, p.dts = p.pts + (span if k else 0), p.dts + (span if k else 0)
                p.stream = s_out
                out.mux(p)
    return dst


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "dfdetect", "extract", *map(str, args), "--face-size", str(SIZE)]


@pytest.fixture(scope="module")
def face_mp4(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("src") / "face.mp4", portrait_clip(12))


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    """Three videos that each take a worker several seconds (killed in the middle)."""
    root = tmp_path_factory.mktemp("long")
    short = write(root.parent / f"{root.name}-piece.mp4", portrait_clip(60, size=(320, 240)))
    for name in ("a", "b", "c"):
        loop(short, root / f"{name}.mp4", 30)  # ~1,800 frames: seconds even at 0.2.0's speed
    return root


# ------------------------------------------------------------------ 1. a fixed video is redone


def test_a_replaced_video_is_extracted_again(tmp_path, face_mp4):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "v.mp4").write_bytes(b"")  # a failed download
    out = tmp_path / "out"
    row = process_videos(src, out, face_cfg=FACE, progress=False).iloc[0]
    assert row["status"] == "unreadable" and "re-download" in row["error"]
    assert row["source_stamp"] == f"0:{(src / 'v.mp4').stat().st_mtime_ns}"
    (src / "v.mp4").write_bytes(face_mp4.read_bytes())  # downloaded again
    row = process_videos(src, out, face_cfg=FACE, progress=False).iloc[0]
    assert row["status"] == "ok" and (out / row["face_video"]).is_file()
    before = (out / row["face_video"]).stat().st_mtime_ns
    again = process_videos(src, out, face_cfg=FACE, progress=False).iloc[0]  # unchanged: kept
    assert again.equals(row) and (out / row["face_video"]).stat().st_mtime_ns == before


def test_a_permission_problem_is_retried_not_called_a_bad_video(tmp_path, face_mp4, monkeypatch):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "v.mp4").write_bytes(face_mp4.read_bytes())
    real_open = open

    def denied(path, *a, **k):  # what open() raises for a file mode 000 (root ignores chmod)
        if Path(path).name == "v.mp4":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(video_mod, "open", denied, raising=False)
    row = process_videos(src, tmp_path / "out", face_cfg=FACE, progress=False).iloc[0]
    assert row["status"] == "failed" and "v.mp4: permission denied" in row["error"]
    assert "re-encode" not in row["error"] and "chmod" in row["error"]
    monkeypatch.undo()  # permissions fixed: size and mtime did not change, the row is redone
    row = process_videos(src, tmp_path / "out", face_cfg=FACE, progress=False).iloc[0]
    assert row["status"] == "ok"


# ------------------------------------------------------------------ 2. rotation metadata


def test_display_rotation_is_applied(tmp_path):
    upright = portrait_clip(12, size=(128, 192))  # a portrait frame, 128 wide, 192 high
    stored = np.ascontiguousarray(np.rot90(upright, 1, axes=(1, 2)))  # the phone stores it sideways
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = stored.shape[2], stored.shape[1], "yuv420p"
        s.set_display_rotation(-90)  # what phones write: PyAV then reports frame.rotation == -90
        for f in stored:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == -90
    info = video.probe(path)
    assert (info.width, info.height) == (128, 192)
    frames = video.read_frames(path, [0, 5])  # prediction's decode (iter_frames) is this one
    assert frames.shape == (2, 192, 128, 3)
    err = np.abs(frames.astype(int) - upright[[0, 5]]).mean()
    turned_wrong_way = np.abs(frames.astype(int) - upright[[0, 5], ::-1, ::-1]).mean()
    assert err < 8 and err < turned_wrong_way / 3
    row = create_face_videos(path, tmp_path / "out", "phone", FACE)
    assert row["status"] == "ok"
    with np.load(tmp_path / "out" / "faces" / "phone.npz") as side:
        kps, boxes = side["keypoints"], side["box"]
    eyes_y, mouth_y = kps[:, :2, 1].mean(axis=1), kps[:, 3, 1]
    assert (eyes_y < mouth_y - SIZE / 8).all(), "faces are upright: eyes above the mouth"
    assert (boxes[:, 2] <= 128 + 2).all()  # boxes in the upright frame's pixels


# ------------------------------------------------------------------ 3. two writers


def test_a_second_extract_on_the_same_folder_is_refused(tmp_path, long_videos, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen(cli(long_videos, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "faces").glob(".tmp-*.work")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started"
            time.sleep(0.02)
        t0 = time.monotonic()
        assert main(["extract", str(long_videos), str(out), "--face-size", str(SIZE)]) == 1
        assert time.monotonic() - t0 < 5, "refused at once, not after waiting or working"
        line = one_line_error(capsys)
        assert f"{out}: another `dfdetect extract` (pid {first.pid})" in line
        assert "use another output folder" in line
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.kill()
        first.wait()
    # a kill leaves no stale lock: the next run is accepted; shards of one folder run side by side
    with pipeline_mod.lock_output(out, (0, 2)), pipeline_mod.lock_output(out, (1, 2)):
        with pytest.raises(ExtractError, match="another"), pipeline_mod.lock_output(out, (0, 2)):
            pass
        with pytest.raises(ExtractError, match="another"), pipeline_mod.lock_output(out):
            pass
    with pipeline_mod.lock_output(out):
        pass


# ------------------------------------------------------------------ 4. orphaned workers


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (nobody reaped it yet)


def _busy_workers(proc: subprocess.Popen, out: Path, n: int = 2) -> list[int]:
    """Wait until ``proc`` has ``n`` pool workers working on videos; their pids."""
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the workers never started"
        workers = [p for p in _children(proc.pid)
                   if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if len(workers) >= n and len(list((out / "faces").glob(".tmp-*.work"))) >= n:
            return workers
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_extract_leaves_no_workers(tmp_path, long_videos):
    out = tmp_path / "out"
    proc = subprocess.Popen(cli(long_videos, out, "--workers", 2), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = _busy_workers(proc, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 2  # each worker is seconds away from finishing its video
    while any(_alive(p) for p in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.02)


# ------------------------------------------------------------------ 5. infrastructure failures


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_dead_worker_is_a_failure_retried_on_rerun(tmp_path, long_videos):
    out = tmp_path / "out"
    proc = subprocess.Popen(cli(long_videos, out, "--workers", 2), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.kill(_busy_workers(proc, out)[0], signal.SIGKILL)  # e.g. the kernel's OOM killer
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "worker process died" in lines[-1] and str(out) in lines[-1]
    df = read_manifest(out / "manifest.csv")
    assert len(df) and set(df["status"]) == {"failed"}, "not a property of the videos"
    assert df["error"].str.contains("worker died").all()
    jobs = {j.video_id: j for j in pipeline_mod.plan_jobs(long_videos)}
    for row in df.to_dict("records"):  # a rerun retries them
        assert not pipeline_mod._is_done(row, jobs[row["video_id"]], out)


def test_a_full_disk_stops_the_batch_and_is_retried(tmp_path, face_mp4, monkeypatch, capsys):
    src = tmp_path / "videos"
    for name in ("a", "b", "c"):
        src.mkdir(exist_ok=True)
        (src / f"{name}.mp4").write_bytes(face_mp4.read_bytes())
    out = tmp_path / "out"
    publish = pipeline_mod._publish

    def fills_up(writer, read_index, faces_dir, name):  # the disk fills while b is written
        if name == "b":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return publish(writer, read_index, faces_dir, name)

    monkeypatch.setattr(pipeline_mod, "_publish", fills_up)
    with pytest.raises(pipeline_mod.BatchStoppedError, match=r"stopped after 2 of 3 video\(s\): the disk is full"):
        process_videos(src, out, face_cfg=FACE, progress=False)
    df = read_manifest(out / "manifest.csv").set_index("video_id")
    assert df["status"].to_dict() == {"a": "ok", "b": "failed"}  # c never started
    assert "No space left on device" in df.loc["b", "error"]
    assert not list((out / "faces").glob("b.*")) and not list((out / "faces").glob(".tmp-*"))
    assert main(["extract", str(src), str(out), "--face-size", str(SIZE)]) == 1
    assert "the disk is full" in one_line_error(capsys)
    monkeypatch.undo()  # space freed
    df = process_videos(src, out, face_cfg=FACE, progress=False)
    assert set(df["status"]) == {"ok"} and len(df) == 3


def test_a_full_disk_at_start_is_one_line_naming_the_folder(tmp_path, face_mp4, monkeypatch, capsys):
    def full(path, text):  # write() on a full disk: errno 28, no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline_mod, "atomic_write_text", full)
    out = tmp_path / "out"
    assert main(["extract", str(face_mp4), str(out), "--face-size", str(SIZE)]) == 1
    line = one_line_error(capsys)
    assert f"cannot write the output folder {out}" in line and "free space" in line


# ------------------------------------------------------------------ 6. truncated videos


def test_a_truncated_video_says_so_in_its_row(tmp_path):
    full = write(tmp_path / "full.mp4", portrait_clip(48), movflags="faststart")  # index first
    cut = tmp_path / "videos" / "cut.mp4"
    cut.parent.mkdir()
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])  # the download stopped half-way
    row = process_videos(cut.parent, tmp_path / "out", face_cfg=FACE, progress=False).iloc[0]
    assert row["status"] == "ok" and 4 <= row["frames_read"] < 40
    assert f"only {row['frames_read']} of the 48 frames could be decoded" in row["error"]
    assert "cut.mp4" in row["error"] and "truncated" in row["error"]


# ------------------------------------------------------------------ 7. variable frame rate


def test_variable_frame_rate_indices_never_repeat(tmp_path):
    clip = portrait_clip(48)
    path = tmp_path / "vfr.mp4"
    steps = np.random.default_rng(0).choice([10, 40, 80], size=48)  # ms between frames
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 160, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for f, pts in zip(clip, np.concatenate([[0], np.cumsum(steps[:-1])]), strict=True):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            c.mux(s.encode(frame))
        c.mux(s.encode())
    assert [i for i, _ in video.iter_frames(path)] == list(range(48))
    wanted = video.uniform_indices(48, 8)  # prediction's sampling: every sampled frame is read
    got = list(video.iter_frames(path, wanted))
    assert [i for i, _ in got] == wanted.tolist()
    errors = np.abs(clip.astype(int) - got[3][1]).mean(axis=(1, 2, 3))
    assert errors.argmin() == wanted[3]  # and it is that frame
    row = create_face_videos(path, tmp_path / "out", "vfr", FACE)
    with np.load(tmp_path / "out" / "faces" / "vfr.npz") as side:
        assert list(side["read_index"]) == list(range(48))
        assert len(set(side["frame_index"].tolist())) == len(side["frame_index"]) == row["frames_with_face"]


# ------------------------------------------------------------------ 8. one vocabulary


def test_a_fooled_detector_is_no_face_not_too_short(tmp_path):
    clip = noise_clip(40)
    clip[14] = portrait_clip(1)[0]  # one frame with a face (or a false detection) in noise
    src = write(tmp_path / "videos" / "noise.mp4", clip)
    write(tmp_path / "videos" / "two.mp4", portrait_clip(2))  # too short for any verdict
    df = process_videos(src.parent, tmp_path / "out", face_cfg=FACE, progress=False).set_index("video_id")
    assert df["status"].to_dict() == {"noise": "no_face", "two": "too_short"}
    assert "no face: found in 1 of 40 frames read, 4 needed" in df.loc["noise", "error"]
    assert "only 2 frame(s) read, fewer than min_face_frames=4" in df.loc["two", "error"]
    assert "--num-frames" not in df.loc["noise", "error"]  # every frame was read: no hint
    row = create_face_videos(src, tmp_path / "out_uniform", "noise", FACE,
                             ExtractConfig(sampling="uniform", num_frames=10))  # frame 14 is one
    assert row["status"] == "no_face" and row["frames_with_face"] == 1
    assert "found in 1 of 10 frames read" in row["error"]
    assert "sampling more frames may find enough: e.g. --num-frames 40 (of 40)" in row["error"]


# ------------------------------------------------------------------ 9. unchecked arguments


@pytest.mark.parametrize("flag", [["--num-frames", "-5"], ["--max-frames", "-1"], ["--workers", "0"],
                                  ["--min-score", "1.5"], ["--face-size", "-2"], ["--face-size", "97"],
                                  ["--detect-every", "0"], ["--min-face-frames", "0"]])
def test_bad_extract_arguments_are_refused(flag, tmp_path, face_mp4, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["extract", str(face_mp4), str(tmp_path / "out"), *flag])
    assert exc.value.code == 2 and flag[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_extract_settings_are_refused_by_the_configs():
    with pytest.raises(ConfigError, match=r"ExtractConfig.num_frames = -5: must be an integer >= 1"):
        ExtractConfig(sampling="uniform", num_frames=-5)
    with pytest.raises(ConfigError, match=r"ExtractConfig.max_frames"):
        ExtractConfig(max_frames=-1)
    with pytest.raises(ConfigError, match=r"FaceConfig.min_score = 1.5"):
        FaceConfig(min_score=1.5)
    with pytest.raises(ConfigError, match=r"FaceConfig.detect_every = 0"):
        FaceConfig(detect_every=0)
    with pytest.raises(ExtractError, match="workers=0"):
        process_videos(".", "out", workers=0)


# ------------------------------------------------------------------ 10. symbolic link loops


def test_a_symlink_loop_is_named_not_skipped(tmp_path, face_mp4, caplog):
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    (src / "good.mp4").write_bytes(face_mp4.read_bytes())
    (src / "loop.mp4").symlink_to("loop.mp4")  # points at itself
    (src / "gone.mp4").symlink_to("nowhere/clip.mp4")  # dangling
    (src / "sub" / "up").symlink_to("..", target_is_directory=True)  # a folder loop
    df = process_videos(src, tmp_path / "out", face_cfg=FACE, progress=False).set_index("video_id")
    assert df.loc["good", "status"] == "ok"
    assert "loop.mp4: a symbolic link loop" in df.loc["loop", "error"]
    assert "gone.mp4: a symbolic link to nowhere/clip.mp4, which does not exist" in df.loc["gone", "error"]
    assert "no such file" not in " ".join(df["error"])
    assert any("sub/up: skipped, a symbolic link back to" in r.getMessage() for r in caplog.records)
    with pytest.raises(video.VideoError, match="loop.mp4: a symbolic link loop"):
        video.probe(src / "loop.mp4")  # prediction says the same
