"""The accuracy contract of extraction (issue #13): the pipeline's boxes are the detector's boxes.

Extraction overlaps decoding, detection and encoding on threads, runs BlazeFace through LiteRT (on
192x192 samples of the decoded YUV planes above 1280x720, of FFmpeg's RGB frame up to it), and may
track between detections, all for speed.
Whatever it does, with default settings the face it keeps must be where 0.1.0's detector (MediaPipe's
Tasks FaceDetector on the full-resolution RGB frame) finds it: in >= 99% of frames the face is
present in both and the boxes overlap with IoU >= 0.9. Real people in real video (the shipped
talking-head clip and two of Intel's signer clips, full-range), first frames only, to stay fast.
"""

from __future__ import annotations

from importlib import resources

import av
import cv2
import numpy as np
import pytest
from conftest import SAMPLE

from dfdetect.config import ExtractConfig, FaceConfig
from dfdetect.demo import synth
from dfdetect.extraction import manifest as mf
from dfdetect.extraction.blazeface import SPECS, BlazeFace, whole_pixels
from dfdetect.extraction.faces import MODEL_FILES, cut_square
from dfdetect.extraction.pipeline import create_face_videos
from dfdetect.extraction.tracking import iou
from dfdetect.media.video import decode_frames, iter_frames, read_all_frames, to_rgb, to_yuv

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


def _hd_clip(path, frames: int = 6) -> None:
    """A 1920x1080 H.264 clip of a real portrait, converted and tagged BT.709 as HD video is."""
    face = cv2.resize(synth.load_rgb(SAMPLE / "obama.jpg"), (720, 540))
    room = cv2.resize(synth.load_rgb(SAMPLE / "astronaut.png"), (1920, 1080))  # colour all over
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.colorspace = 1
        stream.options = {"crf": "18"}
        for i in range(frames):
            frame = synth.paste(room.copy(), face, 500 + 40 * i, 200 + 10 * i)
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(rgb.reformat(format="yuv420p", dst_colorspace=1)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_hd_bt709_video_is_detected_and_cropped_from_its_planes(cropper, mediapipe_detector, tmp_path):
    """Above 1280x720 the detector reads the YUV planes, with the matrix the file is tagged with
    (FFmpeg's RGB conversion reads it too): same faces as MediaPipe on the RGB frame, same colours."""
    clip = tmp_path / "hd.mp4"
    _hd_clip(clip)
    assert next(decode_frames(clip))[1].colorspace == 1  # the premise: a BT.709 file
    row = create_face_videos(clip, tmp_path, "v", FaceConfig(), ExtractConfig(), cropper=cropper)
    assert row["status"] == mf.OK and row["frames_with_face"] == 6, row
    face_video = tmp_path / row["face_video"]
    assert next(decode_frames(face_video))[1].colorspace == 1  # the crops keep their matrix
    with np.load(mf.sidecar_path(face_video)) as side:
        boxes, regions = side["box"], side["region"]
    for (index, frame), face, box, region in zip(iter_frames(clip), read_all_frames(face_video),
                                                 boxes, regions, strict=True):
        (truth, _, _), = mediapipe_detector("full", frame)
        assert iou(truth, whole_pixels(box)) >= 0.9, index
        diff = face.astype(int) - cut_square(frame, tuple(region), FaceConfig().size)
        assert np.abs(diff.mean((0, 1))).max() < 1.5, diff.mean((0, 1))
    model = BlazeFace(resources.files("dfdetect").joinpath("assets", MODEL_FILES["full"]).read_bytes(),
                      SPECS["full"])
    for _, frame in decode_frames(clip):  # what the detector reads: the RGB frame, from the planes
        yuv = to_yuv(frame)
        from_rgb = model.input_rgb(to_rgb(frame))[0].astype(int)
        from_yuv = model.input_yuv(yuv.y, yuv.u, yuv.v, yuv.full_range, yuv.colorspace)[0]
        assert np.abs(from_rgb - from_yuv).mean() < 0.9  # measured 0.58; read as BT.601: 1.34
