"""Face manipulations: they change the face only, follow it, and are clip-consistent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfdetect.demo import fakes

SIZE = 256  # test clips are SIZE x SIZE


def _face(cropper, image):
    boxes = cropper.detect(image)
    assert boxes, "the detector must find the sample face"
    return boxes[0]


@pytest.fixture(scope="module")
def target(cropper, portrait):
    """Grace Hopper's photo, its face box and keypoints."""
    image = portrait("grace_hopper.jpg")
    return image, _face(cropper, image)


@pytest.fixture(scope="module")
def donor(cropper, portrait):
    """Obama's photo and keypoints (the face swapped in)."""
    image = portrait("obama.jpg")
    return image, _face(cropper, image).keypoints


def _camera(box, t: int, zoom: float = 0.0) -> np.ndarray:
    """Affine (2, 3) from photo to clip frame t: the face centred, then moved and zoomed."""
    s = SIZE * 0.45 / box.width * (1 + zoom * np.sin(t / 3))
    cx, cy = box.center
    return np.array([[s, 0, SIZE / 2 - s * cx + 3 * t], [0, s, SIZE / 2 - s * cy + 2 * t]])


def moving_clip(image, box, frames: int = 8, zoom: float = 0.0, gains=None):
    """The photo moved by known transforms: ``(T, S, S, 3)`` frames and exact keypoints."""
    clip, kps = [], []
    for t in range(frames):
        m = _camera(box, t, zoom)
        frame = cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
        if gains is not None:
            frame = np.clip(frame * gains[t], 0, 255).astype(np.uint8)
        clip.append(frame)
        kps.append(box.keypoints @ m[:, :2].T + m[:, 2])
    return np.stack(clip), np.stack(kps)


def _box_of(mask: np.ndarray, level: float) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > level)
    return xs.min(), ys.min(), xs.max(), ys.max()


# --------------------------------------------------------------------------- geometry


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (4, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = fakes.similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m, np.hstack([rot, t[:, None]]), atol=1e-9)


def test_smooth_series_keeps_length_constants_and_lines():
    line = np.arange(10, dtype=float)[:, None] * np.array([1.0, -2.0])
    out = fakes.smooth_series(line, 5)
    assert out.shape == line.shape
    np.testing.assert_allclose(out[2:-2], line[2:-2])  # a moving average keeps straight lines
    np.testing.assert_allclose(fakes.smooth_series(np.ones((6, 3)), 5), 1.0)
    noisy = line + np.random.default_rng(0).normal(0, 1, line.shape)
    assert np.abs(np.diff(fakes.smooth_series(noisy, 5), 2, axis=0)).mean() < \
        np.abs(np.diff(noisy, 2, axis=0)).mean() / 2


# --------------------------------------------------------------------------- face swap


def test_swap_changes_the_face_and_leaves_the_background(target, donor):
    clip, kps = moving_clip(*target)
    fake = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(0))
    assert fake.frames.shape == clip.shape and fake.frames.dtype == np.uint8
    assert fake.masks.shape == clip.shape[:3] and fake.masks.dtype == np.float32
    assert fake.kind == fakes.SWAP
    for t in range(len(clip)):
        inside, outside = fake.masks[t] > 0.9, fake.masks[t] == 0
        diff = np.abs(fake.frames[t].astype(int) - clip[t]).mean(-1)
        assert diff[inside].mean() > 15, "the face must really change"
        assert outside.mean() > 0.5 and (diff[outside] == 0).all(), "far pixels must not change"


def test_swap_mask_covers_the_face_and_lies_around_its_box(target, donor):
    clip, kps = moving_clip(*target)
    fake = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(0))
    for t in range(len(clip)):
        eyes_nose_mouth = np.rint(kps[t, :4]).astype(int)
        assert (fake.masks[t][eyes_nose_mouth[:, 1], eyes_nose_mouth[:, 0]] > 0.9).all()
        x0, y0, x1, y1 = _box_of(fake.masks[t], 0.5)
        face_x = kps[t, :4, 0]
        width = face_x.max() - face_x.min()  # eye to eye: the face box is ~2.5x this wide
        cx, cy = kps[t, :4].mean(0)
        assert cx - 2 * width < x0 and x1 < cx + 2 * width
        assert cy - 2.5 * width < y0 and y1 < cy + 2.5 * width


def test_swap_parameters_are_the_same_on_every_frame(target, donor):
    """A moving, zooming clip: the swapped face moves with it and its colour shift stays put."""
    clip, kps = moving_clip(*target, frames=10, zoom=0.08)
    fake = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(3))
    core = fake.masks > 0.9
    shifts = np.stack([(fake.frames[t][core[t]].astype(float) - clip[t][core[t]]).mean(0)
                       for t in range(len(clip))])  # (T, 3) mean RGB change in the face
    assert np.abs(shifts).max() > 5
    assert shifts.std(0).max() < 1.5, f"colour shift varies between frames: {shifts.round(1)}"
    # drawing parameters per frame (the bug this guards against) makes the shift jump
    per_frame = np.stack([
        fakes.face_swap(clip[t:t + 1], kps[t:t + 1], *donor, rng=np.random.default_rng(t)).frames[0]
        for t in range(len(clip))])
    jumpy = np.stack([(per_frame[t][core[t]].astype(float) - clip[t][core[t]]).mean(0)
                      for t in range(len(clip))])
    assert jumpy.std(0).max() > shifts.std(0).max() * 2


def test_swap_follows_the_lighting_of_the_target(target, donor):
    gains = np.linspace(0.7, 1.2, 8)
    clip, kps = moving_clip(*target, gains=gains)
    fake = fakes.face_swap(clip, kps, *donor, params={**fakes.draw_swap_params(
        np.random.default_rng(0)), "color_strength": 1.0, "stats_window": 1})
    core = fake.masks > 0.9
    swapped = np.array([fake.frames[t][core[t]].mean() for t in range(8)])
    original = np.array([clip[t][core[t]].mean() for t in range(8)])
    slope = np.polyfit(original, swapped, 1)[0]  # 1 = the swapped face brightens as much
    assert 0.7 < slope < 1.3, f"swapped face brightness {swapped.round()} vs {original.round()}"


def test_swap_is_deterministic_and_replayable(target, donor):
    clip, kps = moving_clip(*target, frames=4)
    a = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(7))
    b = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(7))
    c = fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(8))
    replay = fakes.face_swap(clip, kps, *donor, params=a.params)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.frames, replay.frames)
    assert a.params != c.params and not np.array_equal(a.frames, c.frames)


# --------------------------------------------------------------------------- reenactment


def test_reenact_moves_the_mouth_only_following_its_signal(target):
    clip, kps = moving_clip(*target, frames=1)
    still = np.repeat(clip, 24, 0)  # a still face: every change comes from the manipulation
    keypoints = np.repeat(kps, 24, 0)
    fake = fakes.face_reenact(still, keypoints, rng=np.random.default_rng(0), fps=24)
    assert fake.kind == fakes.REENACT
    mouth, eyes = np.rint(kps[0, 3]).astype(int), np.rint(kps[0, :2]).astype(int)
    assert (fake.masks[:, mouth[1], mouth[0]] > 0.9).all()
    assert (fake.masks[:, eyes[:, 1], eyes[:, 0]] == 0).all(), "the eyes are not edited"
    diff = np.abs(fake.frames.astype(int) - still).mean(-1)  # (T, H, W)
    assert (diff[fake.masks == 0] == 0).all()
    x0, y0, x1, y1 = _box_of(fake.masks[0], 0.5)
    change = diff[:, y0:y1, x0:x1].mean((1, 2))  # how much the lower face moved, per frame
    opening, _ = fakes.mouth_motion(fake.params, 24, 24)
    assert change.max() > 3
    assert np.corrcoef(change, opening)[0, 1] > 0.8, "the edit follows the drawn mouth motion"


def test_reenact_follows_a_moving_face(target):
    clip, kps = moving_clip(*target, frames=8, zoom=0.08)
    fake = fakes.face_reenact(clip, kps, rng=np.random.default_rng(1), fps=24)
    for t in range(8):
        centre = np.array(_box_of(fake.masks[t], 0.5)).reshape(2, 2).mean(0)
        below_mouth = kps[t, 3] + [0, 0.1 * np.ptp(kps[t, :2, 0])]
        assert np.hypot(*(centre - below_mouth)) < 0.5 * np.ptp(kps[t, :2, 0])


def test_reenact_is_deterministic(target):
    clip, kps = moving_clip(*target, frames=4)
    a = fakes.face_reenact(clip, kps, rng=np.random.default_rng(5))
    b = fakes.face_reenact(clip, kps, params=a.params)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)


# --------------------------------------------------------------------------- both


def test_a_detector_still_finds_the_face_in_fakes(cropper, target, donor):
    clip, kps = moving_clip(*target, frames=3)
    for fake in (fakes.face_swap(clip, kps, *donor, rng=np.random.default_rng(0)),
                 fakes.face_reenact(clip, kps, rng=np.random.default_rng(0))):
        for frame, original in zip(fake.frames, clip):
            found, truth = cropper.detect(frame), cropper.detect(original)[0]
            assert found, f"{fake.kind}: no face found in a fake frame"
            box = found[0]
            iw = min(box.x2, truth.x2) - max(box.x1, truth.x1)
            ih = min(box.y2, truth.y2) - max(box.y1, truth.y1)
            assert iw > 0 and ih > 0 and iw * ih / (box.area + truth.area - iw * ih) > 0.5


def test_bad_inputs_raise(target, donor):
    clip, kps = moving_clip(*target, frames=2)
    bad = kps.copy()
    bad[1, 3] = np.nan
    with pytest.raises(fakes.FakeError, match="interpolate"):
        fakes.face_swap(clip, bad, *donor)
    with pytest.raises(fakes.FakeError, match="T = 2"):
        fakes.face_reenact(clip, kps[:1])
    with pytest.raises(fakes.FakeError, match="uint8"):
        fakes.face_reenact(clip.astype(np.float32), kps)
