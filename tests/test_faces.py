"""FaceCropper and the tracker, on real faces (dfdetect/demo/sample) and on scripted detections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from face_fixtures import PORTRAITS

from dfdetect.config import FaceConfig
from dfdetect.demo import synth
from dfdetect.extraction.faces import FaceBox, FaceCropper, crop_region, cut_square, to_crop_pixels
from dfdetect.extraction.tracking import (
    FaceTracker,
    check_tracking_config,
    select_track,
    track_faces,
)
from dfdetect.media import video

# --- detection on real faces --------------------------------------------------------------------

@pytest.mark.parametrize("name", PORTRAITS)
def test_detects_the_face_in_each_photo(cropper, portrait, name):
    img = portrait(name)
    boxes = cropper.detect(img)
    assert boxes, f"no face found in {name}"
    best = boxes[0]
    h, w = img.shape[:2]
    assert best.score >= 0.5
    assert 0 <= best.x1 < best.x2 <= w and 0 <= best.y1 < best.y2 <= h
    assert 0.05 * min(h, w) < best.width < min(h, w)  # a face, not a speck or the whole photo
    eyes, mouth = best.keypoints[:2], best.keypoints[3]
    assert best.keypoints.shape == (6, 2)
    for x, y in [*eyes, mouth]:  # eyes and mouth lie inside the box, eyes above the mouth
        assert best.x1 <= x <= best.x2 and best.y1 <= y <= best.y2
    assert eyes[:, 1].max() < mouth[1]
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)


def test_bgr_is_explicit_and_gives_the_same_faces(cropper, portrait):
    rgb = portrait("obama.jpg")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    a, b = cropper.detect(rgb)[0], cropper.detect(bgr, color="bgr")[0]
    assert np.allclose(a.as_array(), b.as_array(), atol=1)
    assert np.array_equal(cropper.crop(rgb, a), cropper.crop(bgr, a, color="bgr"))  # RGB out
    with pytest.raises(ValueError, match="rgb"):
        cropper.detect(rgb, color="RGBA")
    with pytest.raises(ValueError, match="uint8"):
        cropper.detect(rgb.astype(np.float32))


def test_no_face_in_an_empty_frame(cropper, rng):
    noise = cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (0, 0), 5)
    assert cropper.detect(noise) == []


def test_real_video_face_found_in_95_percent_of_frames(cropper, real_video):
    cfg = FaceConfig()  # detect on every frame
    result = track_faces(video.iter_frames(real_video), cropper, cfg)
    kept = select_track(result.tracks, cfg.keep_track)
    assert result.frames_read == 472
    assert kept is not None
    assert kept.detected / result.frames_read >= 0.95, (kept.detected, result.frames_read)
    assert len(kept) >= kept.detected  # bridged frames come on top and are flagged
    assert np.array_equal(kept.frame_index, np.sort(kept.frame_index))


def test_threads_detecting_at_once_each_get_an_interpreter_and_the_same_faces(real_video):
    frames = [f for _, f in video.iter_frames(real_video, max_frames=24)]
    with FaceCropper() as cropper:
        alone = [cropper.detect(f) for f in frames]
        with ThreadPoolExecutor(3) as pool:
            for _ in range(3):  # three threads at once, three times: interpreters are reused
                together = list(pool.map(cropper.detect, frames))
                assert together == alone
        assert 1 < len(cropper._idle) <= 3  # one per thread that overlapped another, kept
    with pytest.raises(RuntimeError, match="closed"):
        cropper.detect(frames[0])


# --- cropping ---------------------------------------------------------------------------------

def test_crop_is_square_with_margin_and_size():
    box = FaceBox(100, 50, 200, 170, 0.9, np.zeros((6, 2), np.float32))  # 100 x 120
    x1, y1, x2, y2 = crop_region(box, (480, 640, 3), margin=0.3)
    assert x2 - x1 == y2 - y1 == 192  # longer side 120 * (1 + 2 * 0.3)
    assert (x1 + x2) / 2 == 150 and (y1 + y2) / 2 == 110  # centred on the box
    with FaceCropper(FaceConfig(size=64, margin=0.3)) as small:
        frame = np.full((480, 640, 3), 7, np.uint8)
        face = small.crop(frame, box)
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8


def test_crop_pads_outside_the_frame_with_black():
    frame = np.full((100, 100, 3), 200, np.uint8)
    region = (-20, -10, 60, 70)  # 80 x 80 square sticking out left and top
    face = cut_square(frame, region, 80)  # no resampling at this size
    assert (face[:10] == 0).all() and (face[:, :20] == 0).all()
    assert (face[10:, 20:] == 200).all()
    pts = to_crop_pixels(np.array([[-20, -10], [60, 70], [20, 30]]), region, 40)
    assert np.allclose(pts, [[0, 0], [40, 40], [20, 20]])


def test_crop_shrinks_like_area_averaging(portrait):
    img = portrait("grace_hopper.jpg")  # 512 x 600
    region = (6, 60, 6 + 500, 60 + 500)
    part = img[60:560, 6:506].astype(np.float32)
    ours = cut_square(img, region, 224).astype(np.float32)
    ref = cv2.resize(part, (224, 224), interpolation=cv2.INTER_AREA)
    nearest = cv2.resize(part, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert np.abs(ours - ref).mean() < 1.5  # grey levels
    assert np.abs(ours - ref).mean() < np.abs(nearest - ref).mean() / 2  # no aliasing


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="even"):
        FaceCropper(FaceConfig(size=223))
    with pytest.raises(ValueError, match="model"):
        FaceCropper(FaceConfig(model="tiny"))
    with pytest.raises(ValueError, match="max_gap"):
        check_tracking_config(FaceConfig(detect_every=8, max_gap=5))
    with pytest.raises(ValueError, match="keep_track"):
        check_tracking_config(FaceConfig(keep_track="first"))


# --- tracking on scripted detections ------------------------------------------------------------

class Scripted:
    """A stand-in detector: frame ``i`` (a 1x1 array holding i) yields ``script[i]``."""

    def __init__(self, script: dict[int, list[tuple[float, float, float]]]):
        self.script, self.calls = script, []

    def detect(self, frame, color="rgb"):
        i = int(frame[0, 0, 0])
        self.calls.append(i)
        return [FaceBox(x, y, x + s, y + s, 0.9, np.full((6, 2), x, np.float32))
                for x, y, s in self.script.get(i, [])]


def run(script, n, **cfg):
    frames = ((i, np.full((1, 1, 3), i, np.uint8)) for i in range(n))
    det = Scripted(script)
    return track_faces(frames, det, FaceConfig(**cfg)), det


def test_short_gap_is_bridged_and_flagged():
    script = {i: [(10 + i, 10, 50)] for i in range(20) if i not in (6, 7, 8)}
    result, _ = run(script, 20, max_gap=3)
    (track,) = result.tracks
    assert list(track.frame_index) == list(range(20))
    assert list(np.flatnonzero(track.interpolated)) == [6, 7, 8]
    assert np.allclose(track.boxes[7], [17, 10, 67, 60])  # halfway between frames 5 and 9


def test_long_gap_ends_the_track_and_its_frames_get_no_box():
    script = {i: [(10, 10, 50)] for i in range(30) if not 8 <= i < 20}
    result, _ = run(script, 30, max_gap=3)
    first, second = result.tracks
    assert list(first.frame_index) == list(range(8))
    assert list(second.frame_index) == list(range(20, 30))
    assert not first.interpolated.any() and not second.interpolated.any()
    assert list(result.read_index) == list(range(30))  # the missing frames were read


def test_detect_every_k_bridges_between_detections_and_rechecks_after_a_miss():
    script = {i: [(10, 10, 50)] for i in range(23) if i != 12}
    result, det = run(script, 23, detect_every=4, max_gap=3)
    (track,) = result.tracks
    # 12 misses: look back at the skipped 11 (found), then at 13 (found), then every 4th again
    assert det.calls == [0, 4, 8, 12, 11, 13, 16, 20]
    assert list(track.frame_index) == list(range(21))  # no box after the last detection (20)
    assert list(np.flatnonzero(~track.interpolated)) == [0, 4, 8, 11, 13, 16, 20]


def test_detect_every_k_follows_a_fast_face_through_the_skipped_frames():
    script = {i: [(10 + 8 * i, 10, 50)] for i in range(16)}  # 8 px a frame: IoU(0, 5) < 0.3
    result, det = run(script, 16, detect_every=5, max_gap=5)
    (track,) = result.tracks  # not split into a new track at every detection
    assert det.calls[:4] == [0, 5, 4, 3]  # 5 misses frame 0's box; found at 3, then 5 matches
    assert list(track.frame_index) == list(range(16))


def test_two_faces_keep_rule_and_identity():
    big, small = (10, 10, 80), (200, 10, 40)
    script = {i: [big, small] for i in range(20)}
    script.update({i: [small] for i in range(20, 40)})  # the big face leaves, the small stays
    result, _ = run(script, 40, max_gap=2)
    assert len(result.tracks) == 2
    by_x = {int(t.boxes[0][0]): t for t in result.tracks}
    assert len(by_x[10]) == 20 and len(by_x[200]) == 40
    # sum of areas: 20 * 80^2 > 40 * 40^2; sum of scores: 40 * 0.9 > 20 * 0.9
    assert select_track(result.tracks, "largest") is by_x[10]
    assert select_track(result.tracks, "most_confident") is by_x[200]
    for track in result.tracks:  # each track keeps one identity: its x never jumps
        assert np.ptp(track.boxes[:, 0]) == 0


def test_tracker_holds_at_most_max_gap_plus_one_frames():
    script = {i: [(10, 10, 50)] for i in range(100) if i % 7}
    det = Scripted(script)
    tracker = FaceTracker(det, FaceConfig(max_gap=3))
    held = 0
    for i in range(100):
        tracker.push(i, np.full((1, 1, 3), i, np.uint8))
        tracker.pop_settled()
        held = max(held, len(tracker._frames))
    assert held <= 4


# --- a real two-person clip ---------------------------------------------------------------------

def test_two_person_clip_keeps_one_identity(cropper, portrait):
    left, right = portrait("obama.jpg"), portrait("biden.jpg")
    left = cv2.resize(left, (230, 287))
    right = cv2.resize(right[:1100], (150, 170))
    frames = []
    for t in range(24):
        canvas = np.full((300, 480, 3), 90, np.uint8)
        canvas = synth.paste(canvas, left, 20 + t, 6)
        frames.append(synth.paste(canvas, right, 300 - t, 60))
    result = track_faces(enumerate(frames), cropper, FaceConfig())
    kept = select_track(result.tracks, "largest")
    assert len(result.tracks) >= 2, "both people should be found"
    assert len(kept) >= 22
    cx = (kept.boxes[:, 0] + kept.boxes[:, 2]) / 2
    assert (cx < 250).all()  # every kept box is on the left person (the larger face)
    other = max((t for t in result.tracks if t is not kept), key=len)
    assert ((other.boxes[:, 0] + other.boxes[:, 2]) / 2 > 250).all()
