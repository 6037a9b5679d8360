"""The accuracy contract of extraction (issue #13): the pipeline's boxes are the detector's boxes.

Extraction overlaps decoding, detection and encoding on threads, runs BlazeFace through LiteRT on
192x192 samples of the decoded YUV planes, and may track between detections, all for speed.
Whatever it does, with default settings the face it keeps must be where 0.1.0's detector (MediaPipe's
Tasks FaceDetector on the full-resolution RGB frame) finds it: in >= 99% of frames the face is
present in both and the boxes overlap with IoU >= 0.9. Real people in real video (the shipped
talking-head clip and two of Intel's signer clips, full-range), first frames only, to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE

from dfdetect.config import ExtractConfig, FaceConfig
from dfdetect.extraction import manifest as mf
from dfdetect.extraction.blazeface import whole_pixels
from dfdetect.extraction.faces import cut_square
from dfdetect.extraction.pipeline import create_face_videos
from dfdetect.extraction.tracking import iou
from dfdetect.media.video import iter_frames, read_all_frames

FRAMES = 48
VIDEOS = ("WolfgangLanger_Pexels.mp4", "asl_book.mkv", "asl_thanks.mkv")


@pytest.mark.parametrize("name", VIDEOS)
def test_default_extraction_keeps_the_full_resolution_detection(name, cropper, mediapipe_detector,
                                                                tmp_path):
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
        found = mediapipe_detector("full", frame)
        truth = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0] if found else None
        box = kept.get(index)
        if truth is None:
            agree += box is None
        elif box is not None and iou(truth, whole_pixels(box)) >= 0.9:
            agree += 1
    assert frames == FRAMES
    assert agree / frames >= 0.99, f"{name}: {agree}/{frames} frames agree with full-resolution detection"


@pytest.mark.parametrize("name", ["WolfgangLanger_Pexels.mp4", "asl_book.mkv"])  # video / full range
def test_face_videos_have_the_colours_of_the_source(name, cropper, tmp_path):
    """Crops are cut from the decoded YUV planes (full range mapped to video range, the matrix
    tag kept): decoded, they show what the source frame shows, converted to RGB as a whole."""
    source = SAMPLE / name
    if not source.is_file():
        pytest.skip(f"{source} is not shipped")
    row = create_face_videos(source, tmp_path, "v", FaceConfig(), ExtractConfig(max_frames=8),
                             cropper=cropper)
    assert row["status"] == mf.OK, row
    with np.load(mf.sidecar_path(tmp_path / row["face_video"])) as side:
        regions = dict(zip(side["frame_index"].tolist(), side["region"]))
    faces = dict(zip(sorted(regions), read_all_frames(tmp_path / row["face_video"])))
    for index, frame in iter_frames(source, max_frames=8):
        expected = cut_square(frame, tuple(regions[index]), FaceConfig().size).astype(int)
        diff = faces[index].astype(int) - expected
        assert np.abs(diff.mean((0, 1))).max() < 1.5, diff.mean((0, 1))  # no shift of level or hue
        assert np.abs(diff).mean() < 4, np.abs(diff).mean()  # H.264 at crf 18, 4:2:0
