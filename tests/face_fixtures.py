"""Face videos with known keypoints, made from the real portraits in dfdetect/demo/sample (test helper).

Each clip is a moving, slightly rotating and zooming square crop around a portrait's face, so
its BlazeFace keypoints in every frame follow exactly from the crop's affine map. The keypoints
of the still photos were measured once with dfdetect.extraction.faces.FaceCropper (full-range model).
Writes what extraction writes: faces/<video_id>.mp4, its .npz sidecar and manifest.csv.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dfdetect.demo import synth
from dfdetect.extraction import manifest
from dfdetect.media import video

SAMPLE = Path(__file__).resolve().parents[1] / "dfdetect" / "demo" / "sample"

# portrait -> (box x1, y1, x2, y2; keypoints: right eye, left eye, nose, mouth, right ear, left ear)
FACES = {
    "astronaut.png": ((173, 67, 276, 170),
                      ((203, 103), (248, 106), (224, 132), (223, 149), (179, 108), (271, 112))),
    "grace_hopper.jpg": ((166, 130, 365, 329),
                         ((227, 192), (307, 192), (271, 234), (271, 274), (181, 215), (346, 214))),
    "obama.jpg": ((354, 133, 641, 420),
                  ((448, 220), (552, 224), (502, 287), (499, 341), (387, 250), (607, 258))),
    "obama2.jpg": ((141, 271, 491, 621),
                   ((250, 375), (376, 385), (281, 452), (288, 524), (222, 419), (490, 442))),
    "biden.jpg": ((424, 228, 758, 562),
                  ((541, 325), (655, 354), (607, 421), (581, 480), (418, 327), (681, 383))),
    "camera.png": ((200, 122, 277, 199),
                   ((238, 145), (249, 151), (255, 172), (242, 182), (196, 135), (233, 148))),
}
PORTRAITS = tuple(FACES)  # every shipped portrait, in a fixed order
_IMAGES: dict[str, np.ndarray] = {}


def face_clip(name: str, frames: int = 16, size: int = 224, phase: float = 0.0, move: float = 0.04,
              roll: float = 3.0, margin: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A face clip of portrait ``name`` and its per-frame keypoints.

    Returns:
        ``clip (T, size, size, 3) uint8`` RGB, ``keypoints (T, 6, 2) float32`` in crop pixels and
        ``regions (T, 4) int32`` (the square of the photo each frame shows, like extraction's).
    """
    if name not in _IMAGES:
        _IMAGES[name] = synth.load_rgb(SAMPLE / name)
    img = _IMAGES[name]
    box, kp = (np.asarray(v, np.float64) for v in FACES[name])
    centre, side = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]).max() * (1 + 2 * margin)
    clip, kps, regions = [], [], []
    for t in np.linspace(0, 1, frames, endpoint=False):
        ang = 2 * np.pi * t + phase
        c = centre + move * side * np.array([np.sin(ang), np.cos(0.8 * ang)])
        scale = size / side * (1 + 0.04 * np.sin(ang))
        m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), roll * np.sin(0.7 * ang), scale)
        m[:, 2] += size / 2 - c
        frame = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
        gain = 1 + 0.1 * np.sin(0.5 * ang)
        clip.append(np.clip(frame * gain, 0, 255).astype(np.uint8))
        kps.append(kp @ m[:, :2].T + m[:, 2])
        half = side / 2 / (1 + 0.04 * np.sin(ang))
        regions.append(np.round([c[0] - half, c[1] - half, c[0] + half, c[1] + half]))
    return (np.stack(clip), np.stack(kps).astype(np.float32), np.stack(regions).astype(np.int32))


def write_face_video(faces_dir: Path, video_id: str, name: str, frames: int = 16, size: int = 224,
                     phase: float = 0.0) -> tuple[str, int]:
    """Write ``faces_dir/<video_id>.mp4`` and its sidecar; return (path relative to the manifest, frames)."""
    clip, kps, regions = face_clip(name, frames, size, phase)
    out = faces_dir / f"{video_id}.mp4"
    np.savez(out.with_suffix(".npz"), frame_index=np.arange(frames, dtype=np.int64),
             box=np.tile(np.asarray(FACES[name][0], np.float32), (frames, 1)), keypoints=kps,
             score=np.full(frames, 0.9, np.float32), interpolated=np.zeros(frames, bool),
             region=regions, read_index=np.arange(frames, dtype=np.int64))
    video.write_video(out, clip, fps=25)
    return f"faces/{video_id}.mp4", frames


def write_face_dataset(root: Path, rows: list[dict]) -> Path:
    """Face videos + sidecars + manifest.csv under ``root``.

    Args:
        rows: ``{"video_id", "portrait", "label", "group"[, "frames", "phase", "split", "status"]}``.

    Returns:
        The manifest's path.
    """
    faces = root / "faces"
    faces.mkdir(parents=True, exist_ok=True)
    table = []
    for r in rows:
        status = r.get("status", manifest.OK)
        rel, n = ("", 0)
        if status == manifest.OK:
            rel, n = write_face_video(faces, r["video_id"], r["portrait"], r.get("frames", 16),
                                      r.get("size", 224), r.get("phase", 0.0))
        table.append({"video_id": r["video_id"], "file": f"{r['video_id']}.mp4", "label": r["label"],
                      "group": r["group"], "split": r.get("split", ""), "face_video": rel,
                      "frames_read": n, "frames_with_face": n, "status": status,
                      "error": "" if status == manifest.OK else "test row", "source": "extract"})
    import pandas as pd

    path = root / manifest.MANIFEST_NAME
    manifest.write_manifest(pd.DataFrame(table), path)
    return path


def blend_artefact(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same face with a visible blend: a soft disc of colour-swapped, blurred pixels near the centre."""
    size = clip.shape[1]
    cx, cy = size * (0.5 + rng.uniform(-0.1, 0.1, 2))
    yy, xx = np.mgrid[:size, :size]
    radius = size * rng.uniform(0.15, 0.22)
    disc = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    mask = np.clip(1.6 * disc, 0, 1)[..., None]  # opaque centre, soft edge
    target = np.stack([cv2.GaussianBlur(f[:, :, ::-1], (5, 5), 0) for f in clip]).astype(np.float32)
    return np.clip(clip * (1 - mask) + target * mask, 0, 255).astype(np.uint8)


def write_blend_manifest(root: Path, groups: list[tuple[str, float, str]], frames: int = 8,
                         size: int = 48, seed: int = 0) -> Path:
    """Face videos of real portraits: per (portrait, phase, split) a REAL clip and its blended FAKE.

    Each pair is one group (split "" lets split_manifest choose). Returns manifest.csv's path.
    """
    rng = np.random.default_rng(seed)
    (root / "faces").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, phase, split in groups:
        clip = face_clip(name, frames, size, phase=phase)[0]
        group = f"{Path(name).stem}_{phase:g}"
        for label, pixels in (("REAL", clip), ("FAKE", blend_artefact(clip, rng))):
            vid = f"{group}_{label.lower()}"
            video.write_video(root / "faces" / f"{vid}.mp4", pixels, fps=25)
            rows.append({"video_id": vid, "file": f"{vid}.mp4", "label": label, "group": group,
                         "split": split, "face_video": f"faces/{vid}.mp4", "frames_read": frames,
                         "frames_with_face": frames, "status": "ok", "source": "extract"})
    manifest.write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return root / "manifest.csv"
