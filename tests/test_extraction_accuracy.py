"""The accuracy contract of extraction (issue #13): the pipeline's boxes are the detector's boxes.

Extraction overlaps decoding, detection and encoding on threads and may later detect on smaller
frames or track between detections, all for speed. Whatever it does, with default settings the
face it keeps must be where BlazeFace finds it on the full-resolution frame: in >= 99% of frames
the face is present in both and the boxes overlap with IoU >= 0.9. Real people in real video
(the shipped talking-head clip and two of Intel's signer clips), first frames only, to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE

from dfdetect.config import ExtractConfig, FaceConfig
from dfdetect.extraction import manifest as mf
from dfdetect.extraction.pipeline import create_face_videos
from dfdetect.media.video import iter_frames

FRAMES = 48
VIDEOS = ("WolfgangLanger_Pexels.mp4", "asl_book.mkv", "asl_thanks.mkv")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("name", VIDEOS)
def test_default_extraction_keeps_the_full_resolution_detection(name, cropper, tmp_path):
    source = SAMPLE / name
    if not source.is_file():
        pytest.skip(f"{source} is not shipped")
    row = create_face_videos(source, tmp_path, "v", FaceConfig(), ExtractConfig(max_frames=FRAMES),
                             cropper=cropper)
    assert row["status"] == mf.OK, row
    with np.load(mf.sidecar_path(tmp_path / row["face_video"])) as side:
        kept = dict(zip(side["frame_index"].tolist(), side["box"]))
    agree = 0
    frames = 0
    for index, frame in iter_frames(source, max_frames=FRAMES):
        frames += 1
        found = cropper.detect(frame)
        truth = max(found, key=lambda b: b.area).as_array() if found else None
        box = kept.get(index)
        if truth is None:
            agree += box is None
        elif box is not None and _iou(truth, box) >= 0.9:
            agree += 1
    assert frames == FRAMES
    assert agree / frames >= 0.99, f"{name}: {agree}/{frames} frames agree with full-resolution detection"
