"""video.py: probing, uniform indices, seeking reads that equal sequential decoding, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from dfdetect.media import video


def test_probe_real_video(real_video):
    info = video.probe(real_video)
    assert (info.frames, info.width, info.height) == (472, 640, 360)
    assert info.fps == pytest.approx(23.976, abs=1e-3)


def test_uniform_indices_cover_the_video_and_repeat_for_short_ones():
    idx = video.uniform_indices(472, 20)
    assert idx.shape == (20,) and idx[0] > 0 and idx[-1] < 472 and np.all(np.diff(idx) > 0)
    short = video.uniform_indices(5, 12)
    assert short.shape == (12,) and set(short) == set(range(5)) and np.all(np.diff(short) >= 0)


@pytest.mark.parametrize("indices", [[0, 200, 201, 400, 471, 5], list(range(0, 472, 59)), [300, 3, 3]])
def test_sparse_reads_equal_sequential_decoding(real_video, indices):
    """Seeking (keyframes every 72 frames here, more than SEEK_GAP) must land on the exact frames."""
    every = video.read_all_frames(real_video)
    got = video.read_frames(real_video, indices)
    assert got.shape == (len(indices), 360, 640, 3)
    for k, i in enumerate(indices):
        assert np.array_equal(got[k], every[i]), f"frame {i} differs"


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50])
def test_bad_files_name_the_file(tmp_path, content):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(video.VideoError, match="clip.mp4"):
        video.probe(bad)
    with pytest.raises(video.VideoError, match="clip.mp4"):
        video.read_frames(bad, [0])


def test_writer_is_atomic_and_roundtrips(tmp_path, portrait):
    from dfdetect.demo import synth

    frames = synth.animate(portrait("grace_hopper.jpg"), 10, (64, 64))
    out = tmp_path / "face.mp4"
    with pytest.raises(RuntimeError), video.VideoWriter(out, fps=25) as writer:
        writer.write(frames[0])
        raise RuntimeError("killed mid-video")
    assert list(tmp_path.iterdir()) == [], "a failed write must leave nothing behind"
    assert video.write_video(out, frames, fps=25, crf=0) == 10
    back = video.read_all_frames(out)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 8  # crf 0: only yuv420p chroma subsampling (a BGR swap gives ~40)
