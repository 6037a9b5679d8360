"""The environment as Colab users meet it: worker processes after decoding, TensorFlow, OpenCV.

Colab runs Python 3.13 (PyAV 19), has TensorFlow installed and several OpenCV distributions
sharing one ``cv2/`` folder. Each test here failed on 0.1.0 in that setting.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from face_fixtures import write_face_dataset

# Decode in the parent first (this starts FFmpeg's threads), then start worker processes. With a
# fork context this hung forever on PyAV 19 (Python 3.12+); the script must finish in time.
FORK_AFTER_DECODE = textwrap.dedent("""
    import sys
    from pathlib import Path

    from dfdetect.media import video
    from dfdetect.config import DataConfig
    from dfdetect.data.dataset import FrameSequenceDataset
    from dfdetect.data.loaders import make_loader


    def main():
        manifest = Path(sys.argv[1])
        frames = video.read_all_frames(next((manifest.parent / "faces").glob("*.mp4")))
        assert frames.ndim == 4
        cfg = DataConfig(frames=4, size=32)
        cached = FrameSequenceDataset(manifest, cfg, train=False, cache=True, cache_workers=2)
        decoding = FrameSequenceDataset(manifest, cfg, train=False, cache=False)
        for ds in (cached, decoding):
            batches = list(make_loader(ds, batch_size=2, train=False, workers=2))
            assert sum(len(b["label"]) for b in batches) == len(ds), len(ds)
        print("finished")


    if __name__ == "__main__":  # spawned workers import this file
        main()
""")


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    return write_face_dataset(root, [
        {"video_id": f"v{i}", "portrait": p, "label": lab, "group": f"g{i}", "frames": 8, "size": 64}
        for i, (p, lab) in enumerate([("obama.jpg", "REAL"), ("biden.jpg", "FAKE"),
                                      ("grace_hopper.jpg", "REAL"), ("astronaut.png", "FAKE")])])


@pytest.mark.slow
def test_worker_processes_start_after_decoding_without_hanging(small_manifest: Path, tmp_path: Path):
    script = tmp_path / "fork_after_decode.py"
    script.write_text(FORK_AFTER_DECODE)
    try:
        done = subprocess.run([sys.executable, str(script), str(small_manifest)], capture_output=True,
                              text=True, timeout=240, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("frame cache / 2-worker loader hung after decoding in the parent process")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished" in done.stdout


def test_every_worker_pool_uses_spawn(small_manifest: Path):
    from dfdetect.config import DataConfig
    from dfdetect.data.dataset import FrameSequenceDataset
    from dfdetect.data.loaders import make_loader
    from dfdetect.media.files import mp_context

    assert mp_context().get_start_method() == "spawn"
    ds = FrameSequenceDataset(small_manifest, DataConfig(frames=2, size=16), cache=False)
    loader = make_loader(ds, batch_size=2, train=False, workers=2)
    assert loader.multiprocessing_context.get_start_method() == "spawn"


def _stand_in_tensorflow(folder: Path, marker: Path) -> Path:
    """A fake ``tensorflow`` package that records being imported (as MediaPipe would import it)."""
    pkg = folder / "tensorflow"
    (pkg / "tools" / "docs").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f"import os\nopen({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n")
    (pkg / "tools" / "__init__.py").write_text("")
    (pkg / "tools" / "docs" / "__init__.py").write_text("")
    (pkg / "tools" / "docs" / "doc_controls.py").write_text("def do_not_generate_docs(x):\n    return x\n")
    return folder


@pytest.mark.slow
def test_extraction_workers_do_not_import_tensorflow(tmp_path: Path, portrait_video, monkeypatch):
    from dfdetect.extraction.pipeline import process_videos

    marker = tmp_path / "tensorflow-imported.txt"
    site = _stand_in_tensorflow(tmp_path / "site", marker)
    # the stand-in is real bait: MediaPipe (0.1.0's detector) imports it whenever it is there
    pytest.importorskip("mediapipe.tasks.python.vision")  # a test dependency
    probe = subprocess.run([sys.executable, "-c", "import mediapipe.tasks.python.vision"],
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True,
                           text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert marker.is_file(), "MediaPipe no longer imports tensorflow; this test lost its bait"
    marker.unlink()

    monkeypatch.syspath_prepend(str(site))  # spawned workers inherit sys.path
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, name in enumerate(["obama.jpg", "biden.jpg"]):
        (videos / f"v{i}.mp4").write_bytes(Path(portrait_video(name, frames=8)).read_bytes())
    manifest = process_videos(videos, tmp_path / "out", workers=2, progress=False)
    assert (manifest["status"] == "ok").all(), manifest[["video_id", "status", "error"]]
    assert not marker.exists(), f"extraction workers imported tensorflow: {marker.read_text()}"


def test_broken_opencv_stops_the_batch_before_marking_videos(tmp_path: Path, portrait_video, monkeypatch):
    from dfdetect.extraction.faces import BrokenEnvironmentError
    from dfdetect.extraction.pipeline import process_videos

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v.mp4").write_bytes(Path(portrait_video("obama.jpg", frames=8)).read_bytes())
    # what Colab leaves after `pip uninstall opencv-python`: a cv2 without its compiled module
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    with pytest.raises(BrokenEnvironmentError, match="force-reinstall --no-deps opencv"):
        process_videos(videos, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists(), "an environment failure was recorded"
