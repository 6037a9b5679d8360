"""Shared fixtures: the real faces shipped in dfdetect/demo/sample and tiny videos generated from them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from dfdetect.demo import synth
from dfdetect.media import video

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "dfdetect" / "demo" / "sample"
REAL_VIDEO = SAMPLE / "WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """Folder of real face photos and one real video (see its FACES_LICENCES.md)."""
    return SAMPLE


@pytest.fixture(scope="session")
def real_video() -> Path:
    """A real 640x360 talking-head video (472 frames)."""
    return REAL_VIDEO


@pytest.fixture(scope="session")
def portrait():
    """Load a shipped portrait as RGB: ``portrait("obama.jpg") -> (H, W, 3) uint8``."""
    return lambda name: synth.load_rgb(SAMPLE / name)


@pytest.fixture(scope="session")
def portrait_video(tmp_path_factory):
    """Write an animated-portrait mp4 and return its path.

    ``portrait_video("grace_hopper.jpg", frames=24, size=(256, 256))``; cached per arguments.
    """
    cache: dict = {}
    folder = tmp_path_factory.mktemp("portrait_videos")

    def make(name: str = "grace_hopper.jpg", frames: int = 24, size=(256, 256), phase: float = 0.0) -> Path:
        key = (name, frames, tuple(size), phase)
        if key not in cache:
            img = synth.load_rgb(SAMPLE / name)
            clip = synth.animate(img, frames, size, synth.CameraPath(phase=phase))
            out = folder / f"{Path(name).stem}_{frames}_{size[0]}x{size[1]}_{phase:g}.mp4"
            video.write_video(out, clip, fps=24)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def face_cropper():
    """One FaceCropper per FaceConfig for the whole session: ``face_cropper(FaceConfig(size=96))``.

    Detector creation costs ~0.5 s; the croppers are closed when the session ends.
    """
    from dfdetect.config import FaceConfig
    from dfdetect.extraction.faces import FaceCropper

    made: dict = {}

    def get(cfg: FaceConfig | None = None) -> FaceCropper:
        cfg = cfg or FaceConfig()
        if cfg not in made:
            made[cfg] = FaceCropper(cfg)
        return made[cfg]

    yield get
    for cropper in made.values():
        cropper.close()


@pytest.fixture(scope="session")
def cropper(face_cropper):
    """A FaceCropper with the default FaceConfig."""
    return face_cropper()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on tiny tensors runs far faster single-threaded (no thread start-up per op); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mediapipe_detector():
    """MediaPipe's own FaceDetector (a test dependency) on a shipped model: the reference that
    dfdetect's BlazeFace runner reproduces. ``detect(model, rgb)`` -> ``[(box, keypoints, score)]``
    in frame pixels, best first (boxes in whole pixels, as MediaPipe gives them)."""
    vision = pytest.importorskip("mediapipe.tasks.python.vision")
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions

    from dfdetect.extraction.faces import MODEL_FILES

    made = {}

    def detect(model: str, frame: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        if model not in made:
            data = resources.files("dfdetect").joinpath("assets", MODEL_FILES[model]).read_bytes()
            made[model] = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=data), min_detection_confidence=0.5))
        h, w = frame.shape[:2]
        out = []
        for d in made[model].detect(Image(image_format=ImageFormat.SRGB, data=frame)).detections:
            b = d.bounding_box
            box = np.array([b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height], float)
            out.append((box, np.array([[k.x * w, k.y * h] for k in d.keypoints]),
                        d.categories[0].score))
        return sorted(out, key=lambda f: -f[2])

    yield detect
    for detector in made.values():
        detector.close()
