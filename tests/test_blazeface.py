"""BlazeFace through LiteRT gives MediaPipe's faces (issue #13): tested against MediaPipe's Tasks API.

MediaPipe (a test dependency only) runs the same shipped model files through its own graph; the
two must agree on real people in real video, for both models: the same number of faces in every
frame, keypoints within a fraction of a pixel, scores within 0.02, and boxes as close as
MediaPipe's whole-pixel boxes allow.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SAMPLE

from dfdetect.config import FaceConfig
from dfdetect.extraction.blazeface import SPECS, anchor_centres, letterbox_matrix, weighted_nms
from dfdetect.extraction.faces import FaceModelError
from dfdetect.extraction.tracking import iou
from dfdetect.media.video import decode_frames, to_rgb, to_yuv

VIDEOS = ("WolfgangLanger_Pexels.mp4", "asl_book.mkv", "asl_thanks.mkv", "asl_milk.mkv",
          "head-pose-face-detection-female-and-male.gif")
FRAMES = 30  # per video


@pytest.fixture(scope="module")
def real_frames():
    """``(rgb, yuv)`` of the first frames of real videos (talking head, signers, two people)."""
    out = []
    for name in VIDEOS:
        for _, frame in decode_frames(SAMPLE / name, max_frames=FRAMES):
            out.append((to_rgb(frame), to_yuv(frame)))
    return out


@pytest.mark.parametrize("model", ["full", "short"])
def test_litert_blazeface_finds_mediapipes_faces(model, face_cropper, mediapipe_detector, real_frames):
    cropper = face_cropper(FaceConfig(model=model))
    same_count, point_err, score_err, ious, faces = 0, [], [], [], 0
    for rgb, _ in real_frames:
        ours, ref = cropper.detect(rgb), mediapipe_detector(model, rgb)
        if len(ours) != len(ref):
            continue
        same_count += 1
        for box, points, score in ref:  # two people may swap places in the order (equal scores)
            a = max(ours, key=lambda f: iou(f.as_array(), box))
            faces += 1
            point_err.append(np.abs(a.keypoints - points).max())
            score_err.append(abs(a.score - score))
            ious.append(iou(a.as_array(), box))
    assert same_count == len(real_frames), f"{same_count}/{len(real_frames)} frames, same faces found"
    assert faces >= len(real_frames) * 0.9
    # the same up to resampling details (measured: median 0.09 px, 99th percentile 1.2 px);
    # MediaPipe's boxes are whole pixels, its keypoints are not
    assert np.median(point_err) < 0.25 and np.percentile(point_err, 99) < 2.0, np.max(point_err)
    assert max(score_err) < 0.02
    assert np.mean(np.array(ious) >= 0.9) >= 0.99 and min(ious) > 0.8, min(ious)


def test_the_yuv_planes_give_the_faces_of_the_rgb_frame(cropper, real_frames):
    """Extraction detects on the decoded planes above 720p; here on 640x480 planes (full-range signer
    clips among them), where the faces are smallest in BlazeFace's input: the faces
    are those FFmpeg's RGB conversion of the whole frame gives, within about a grey level."""
    ious, points = [], []
    for rgb, yuv in real_frames:
        if yuv.rgb is not None:  # an RGB source (the GIF): detect_yuv reads its RGB frame
            continue
        from_rgb, from_yuv = cropper.detect(rgb), cropper.detect_yuv(yuv)
        assert len(from_rgb) == len(from_yuv)
        for a in from_rgb:
            b = max(from_yuv, key=lambda f: iou(f.as_array(), a.as_array()))
            ious.append(iou(a.as_array(), b.as_array()))
            points.append(np.abs(a.keypoints - b.keypoints).max() / a.width)
    ious = np.array(ious)  # the accuracy contract of extraction (IoU >= 0.9 in >= 99% of faces)
    assert np.mean(ious >= 0.9) >= 0.99 and ious.min() > 0.8 and ious.mean() > 0.97, ious.min()
    assert np.median(points) < 0.02, np.median(points)  # ears of faces in profile jitter most


def test_bgr_frames_are_turned_around_for_the_model(cropper, real_frames):
    rgb = real_frames[0][0]
    a, b = cropper.detect(rgb), cropper.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), color="bgr")
    assert len(a) == len(b) == 1
    assert np.allclose(a[0].as_array(), b[0].as_array(), atol=0.01)


def test_anchors_cover_the_models_grids():
    full, short = anchor_centres(SPECS["full"]), anchor_centres(SPECS["short"])
    assert full.shape == (48 * 48, 2) and short.shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
    assert np.allclose(full[:2], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48]])
    assert np.allclose(short[:3], [[0.5 / 16, 0.5 / 16], [0.5 / 16, 0.5 / 16], [1.5 / 16, 0.5 / 16]])
    assert np.allclose(short[512:518], 0.5 / 8)  # six anchors on the first cell of the 8x8 grid


def test_letterbox_centres_the_frame_in_the_square():
    m = letterbox_matrix(1080, 1920, 192)  # (H, W)
    corners = m @ np.array([[0, 0, 1], [1920, 1080, 1]], float).T
    assert np.allclose(corners[:2].T, [[0, 42], [192, 150]])
    assert np.allclose(letterbox_matrix(640, 480, 128) @ [480, 640, 1], [112, 128, 1])


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    points = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)  # keypoints = the corners
    faces = weighted_nms(boxes, points, np.array([0.6, 0.9, 0.7]))
    assert [round(f[2], 2) for f in faces] == [0.9, 0.7]  # best score of each group, best first
    assert np.allclose(faces[0][0], [0.6, 0, 10.6, 10])  # (0.6 * 0 + 0.9 * 1) / 1.5 = 0.6
    assert np.allclose(faces[0][1], [[0.6, 0], [10.6, 10]])
    assert np.allclose(faces[1][0], boxes[2])


def test_a_damaged_model_file_is_named(monkeypatch):
    from dfdetect.extraction import faces

    class Damaged:
        def joinpath(self, *parts):
            return self

        def read_bytes(self):
            return b"not a model"

    monkeypatch.setattr(faces.resources, "files", lambda _: Damaged())
    with pytest.raises(FaceModelError, match=r"dfdetect/assets/face_detection_full_range_sparse\.tflite"):
        faces.FaceCropper(FaceConfig())
