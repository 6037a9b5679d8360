"""Self-blending of real face clips: mask inside the face, one draw per clip, ratio 0 = identity."""

from __future__ import annotations

import numpy as np
import pytest
from face_fixtures import FACES, face_clip

from dfdetect.augment.selfblend import SelfBlendConfig, face_masks, self_blend, sidecar_landmarks
from dfdetect.augment.selfblend import self_blend as reexported

PORTRAITS = ("grace_hopper.jpg", "obama.jpg", "astronaut.png")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips():
    return {name: face_clip(name, frames=8, size=160, phase=0.5) for name in PORTRAITS}


def test_reexported_from_augment():
    assert reexported is self_blend


@pytest.mark.parametrize("name", PORTRAITS)
@pytest.mark.parametrize("seed", [0, 1])
def test_blended_region_lies_inside_the_face_mask(clips, name, seed):
    clip, kps, _ = clips[name]
    out, mask, p = self_blend(clip, kps, np.random.default_rng(seed))
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert mask.shape == clip.shape[:3] and mask.dtype == np.float32
    assert 0 <= mask.min() and mask.max() <= p.ratio + 1e-6
    changed = np.abs(out.astype(int) - clip).max(axis=-1) > 0
    assert changed.any(), "the blend changed nothing"
    assert not (changed & (mask == 0)).any(), "pixels changed outside the mask"
    # the mask is the face: full weight on the nose, (almost) nothing in the crop's corners and
    # nothing beyond a face-sized neighbourhood of the keypoints
    for t in range(len(clip)):
        nx, ny = np.round(kps[t, 2]).astype(int)
        assert mask[t, ny, nx] > 0.9 * p.ratio
        corners = mask[t, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners < 0.02 * p.ratio).all()
        lo, hi = kps[t].min(axis=0), kps[t].max(axis=0)
        reach = 1.2 * p.face_px
        ys, xs = np.nonzero(mask[t] > 0.01 * p.ratio)
        assert xs.min() > lo[0] - reach and xs.max() < hi[0] + reach
        assert ys.min() > lo[1] - reach and ys.max() < hi[1] + reach


def test_mask_follows_the_moving_face(clips):
    clip, kps, _ = clips["obama.jpg"]
    _, mask, _ = self_blend(clip, kps, np.random.default_rng(3))
    yy, xx = np.mgrid[:mask.shape[1], :mask.shape[2]]
    centroid = np.stack([[(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()] for m in mask])
    face = kps.mean(axis=1)
    assert np.ptp(face, axis=0).max() > 5  # the face does move in this clip
    offset = centroid - face
    assert np.abs(offset - offset.mean(axis=0)).max() < 1.5  # and the mask moves with it


def test_parameters_identical_across_frames_of_a_clip(clips):
    clip, kps, _ = clips["grace_hopper.jpg"]
    static = np.repeat(clip[:1], 6, axis=0)  # the same frame six times
    static_kps = np.repeat(kps[:1], 6, axis=0)
    for seed in range(4):
        out, mask, p = self_blend(static, static_kps, np.random.default_rng(seed))
        assert (out != static).any()
        # any per-frame draw (jitter, shift, mask shape, ratio) would make these frames differ
        assert (out == out[0]).all() and (mask == mask[0]).all()
        assert p.to_dict()["ratio"] == p.ratio  # one parameter record per clip


def test_ratio_zero_returns_the_input(clips):
    clip, kps, _ = clips["obama.jpg"]
    out, mask, p = self_blend(clip, kps, np.random.default_rng(0), SelfBlendConfig(ratios=(0.0,)))
    assert p.ratio == 0.0 and not mask.any()
    np.testing.assert_array_equal(out, clip)


def test_deterministic_for_a_seed(clips):
    clip, kps, _ = clips["astronaut.png"]
    a = self_blend(clip, kps, np.random.default_rng(7))
    b = self_blend(clip, kps, np.random.default_rng(7))
    c = self_blend(clip, kps, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and a[2] != c[2]


def test_boxes_nan_keypoints_and_no_landmarks(clips):
    clip, kps, regions = clips["obama.jpg"]
    rng = np.random.default_rng(0)
    box, _ = FACES["obama.jpg"]
    side = {"box": np.tile(np.asarray(box, np.float32), (len(clip), 1)), "region": regions,
            "keypoints": np.full_like(kps, np.nan)}
    boxes = sidecar_landmarks(side, clip.shape[1])  # keypoints all NaN -> boxes in crop pixels
    assert boxes.shape == (len(clip), 4)
    nose = kps[:, 2]
    assert ((boxes[:, 0] < nose[:, 0]) & (nose[:, 0] < boxes[:, 2])).all()
    assert ((boxes[:, 1] < nose[:, 1]) & (nose[:, 1] < boxes[:, 3])).all()
    out, mask, p = self_blend(clip, boxes, rng)
    assert p.mask == "ellipse" and (mask[:, 0, 0] == 0).all() and out.shape == clip.shape

    holes = kps.copy()
    holes[2:4] = np.nan  # undetected frames take the nearest frame's keypoints
    _, mask, _ = self_blend(clip, holes, np.random.default_rng(1))
    np.testing.assert_array_equal(mask[2], mask[1])
    np.testing.assert_array_equal(mask[3], mask[4])

    _, mask, p = self_blend(clip, None, np.random.default_rng(2))  # centred ellipse
    h = clip.shape[1]
    assert mask[0, h // 2, h // 2] > 0.9 * p.ratio and mask[0, 0, 0] == 0


def test_hull_and_ellipse_masks_differ(clips):
    clip, kps, _ = clips["grace_hopper.jpg"]
    from dfdetect.augment.selfblend import draw_blend_params, face_size

    rng = np.random.default_rng(0)
    p = draw_blend_params(rng, face_size(kps), SelfBlendConfig(mask="hull"))
    hull = face_masks(kps, clip.shape[1:3], p)
    ellipse = face_masks(kps, clip.shape[1:3], type(p)(**{**p.__dict__, "mask": "ellipse"}))
    assert p.mask == "hull" and np.abs(hull - ellipse).max() > 0.5
    with pytest.raises(ValueError, match="'hull', 'ellipse' or 'random'"):
        draw_blend_params(rng, 100.0, SelfBlendConfig(mask="square"))
