"""The offline demo data set: small labelled REAL and FAKE videos made from the shipped real faces.

REAL clips are segments of real video (a talking head; Intel's sample videos of five signers
and two people turning their heads, CC BY 4.0) and still portraits filmed by a smooth virtual
camera (pan, zoom, roll, lighting; :mod:`dfdetect.demo.synth`): 13 people in all. FAKE clips are made
from REAL clips by the two manipulations of :mod:`dfdetect.demo.fakes`: a face swap (another
person's face, colour-matched and blended) and a mouth reenactment (lip-sync-like warp). The
``group`` of a clip is the person its REAL footage shows, so a group-aware split never puts a
fake in another split than the clip it was made from (obama.jpg and obama2.jpg are one group,
and so are all the clips of one signer). :mod:`dfdetect.demo.folds` splits by these people.

The set shows that the pipeline works end to end; it is far too small and its fakes far too
simple to say anything about accuracy on real deepfakes. Nothing is copied or downloaded:
the faces are read from the package data ``dfdetect/demo/sample`` (licences in its
FACES_LICENCES.md), found with :mod:`importlib.resources` so any install has them.

Layout of ``out_dir``: ``videos/*.mp4``, ``labels.csv`` (``file,label,group,manipulation,donor``,
``file`` relative to ``videos/``) and ``demo.json`` (the settings it was built with).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfdetect.demo import fakes, synth
from dfdetect.extraction.faces import FaceCropper
from dfdetect.labels import FAKE, REAL, int_to_label
from dfdetect.media import video
from dfdetect.media.files import atomic_write_text, remove_stale_temporaries

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(str(importlib.resources.files("dfdetect.demo") / "sample"))  # package data
REAL_VIDEO = "WolfgangLanger_Pexels.mp4"
HEAD_POSE_PAIR = "head-pose-face-detection-female-and-male.gif"  # two people side by side
ASL_SIGNERS = {  # Intel's ASL clips by signer (read by eye, one frame each; see FACES_LICENCES.md)
    "signer_a": ("again", "brother", "help", "no", "student", "yes"),
    "signer_b": ("bird", "milk", "please", "sorry", "thanks"),
    "signer_c": ("book", "learn", "school", "walk"),
    "signer_d": ("eat", "night", "sister"),
    "signer_e": ("hungry", "want"),
}
IDENTITIES = {  # source -> the person it shows (the group of every clip made from it)
    REAL_VIDEO: "pexels_woman", "astronaut.png": "collins", "grace_hopper.jpg": "hopper",
    "obama.jpg": "obama", "obama2.jpg": "obama", "biden.jpg": "biden", "camera.png": "cameraman",
    "head-pose-face-detection-female.gif": "headpose_woman",
    "head-pose-face-detection-male.gif": "headpose_man",
    f"{HEAD_POSE_PAIR}#left": "headpose_woman", f"{HEAD_POSE_PAIR}#right": "headpose_man",
    **{f"asl_{word}.mkv": signer for signer, words in ASL_SIGNERS.items() for word in words},
}
PORTRAITS = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg",
             "camera.png")
# real video other than REAL_VIDEO: "FILE" (its largest face) or "FILE#left" / "FILE#right"
# (the leftmost / rightmost face of a two-person video)
VIDEOS = (*sorted(k for k in IDENTITIES if k.startswith("asl_")),
          "head-pose-face-detection-female.gif", "head-pose-face-detection-male.gif",
          f"{HEAD_POSE_PAIR}#left", f"{HEAD_POSE_PAIR}#right")
DONORS = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "biden.jpg", REAL_VIDEO,
          "asl_again.mkv", "asl_bird.mkv", "asl_book.mkv", "asl_eat.mkv", "asl_hungry.mkv",
          "head-pose-face-detection-female.gif", "head-pose-face-detection-male.gif")  # frontal
PROFILE = ("camera.png",)  # turned heads: a frontal face swapped onto them is implausible
NONE = "none"  # the manipulation of REAL clips
LABELS_NAME = "labels.csv"
SETTINGS_NAME = "demo.json"
VERSION = 2  # bump when the clips this module makes change, so old folders are not mixed in


def source_file(source: str) -> str:
    """The sample file of a source key (``"FILE#left"`` -> ``"FILE"``)."""
    return source.split("#", 1)[0]


def _face_side(source: str) -> str:
    return source.split("#", 1)[1] if "#" in source else "largest"


class DemoDataError(RuntimeError):
    """The demo data set cannot be built; the message says what to do."""


@dataclass(frozen=True)
class DemoSpec:
    """What the demo data set contains."""

    frames: int = 32  # frames per clip (shorter sources give shorter clips)
    size: tuple[int, int] = (320, 320)  # clip (width, height), even numbers (H.264)
    fps: float = 24.0  # frame rate of every clip
    video_segments: int = 4  # REAL clips cut from the talking-head video (evenly spaced)
    videos: tuple[str, ...] = VIDEOS  # other real videos (keys of VIDEOS) cut into REAL clips
    video_max_segments: int = 2  # REAL clips per other video, at most (non-overlapping)
    portraits: tuple[str, ...] = PORTRAITS  # photos animated into REAL clips
    portrait_clips: int = 2  # REAL clips per photo, each with its own camera path
    face_fraction: float = 0.4  # face box side / clip side when filming a photo
    crf: int = 20  # H.264 quality of the written clips


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the demo set.

    Attributes:
        name: File stem, unique.
        label: "REAL" or "FAKE".
        group: Person of the REAL footage (see the module docstring).
        manipulation: "none", "swap" or "reenact".
        source: Sample file the REAL footage comes from.
        index: Segment (video) or camera path (photo) number.
        target: For a FAKE, the name of the REAL clip it is made from ("" for REAL).
    """

    name: str
    label: str
    group: str
    manipulation: str
    source: str
    index: int
    target: str = ""


@dataclass(frozen=True)
class DemoData:
    """A built demo data set.

    Attributes:
        root: The output folder.
        videos: Folder of the clips.
        labels_csv: The labels CSV (``file`` relative to ``videos``).
        table: Its rows (``file,label,group,manipulation,donor``).
    """

    root: Path
    videos: Path
    labels_csv: Path
    table: pd.DataFrame


def plan_demo(spec: DemoSpec = DemoSpec()) -> list[ClipPlan]:
    """List the clips of the demo set (no I/O; the same for every seed).

    Every real-video segment gets one fake of each kind (its real motion suits both); the
    clips of a photo alternate swap and reenact (turned heads are only reenacted). The number
    of segments of the other videos comes from their length (:data:`VIDEO_FRAMES`).

    Returns:
        REAL clips, each followed by the FAKE clips made from it.
    """
    unknown = sorted(set(spec.portraits) - set(PORTRAITS))
    if unknown:
        raise DemoDataError(f"unknown portrait(s) {unknown}; choose from {list(PORTRAITS)}")
    unknown = sorted(set(spec.videos) - set(VIDEOS))
    if unknown:
        raise DemoDataError(f"unknown video(s) {unknown}; choose from {list(VIDEOS)}")
    plans: list[ClipPlan] = []
    for i in range(spec.video_segments):
        real = ClipPlan(f"real_video_s{i}", int_to_label(REAL), IDENTITIES[REAL_VIDEO], NONE,
                        REAL_VIDEO, i)
        plans += [real, *(_fake(real, kind) for kind in fakes.MANIPULATIONS)]
    for source in spec.videos:
        stem = Path(source_file(source)).stem.removeprefix("head-pose-face-detection-")
        stem += f"_{_face_side(source)}" if "#" in source else ""
        for i in range(video_segments(source, spec)):
            real = ClipPlan(f"real_{stem}_s{i}", int_to_label(REAL), IDENTITIES[source], NONE,
                            source, i)
            plans += [real, *(_fake(real, kind) for kind in fakes.MANIPULATIONS)]
    for photo in spec.portraits:
        stem = Path(photo).stem
        for k in range(spec.portrait_clips):
            real = ClipPlan(f"real_{stem}_c{k}", int_to_label(REAL), IDENTITIES[photo], NONE,
                            photo, k)
            kind = fakes.REENACT if photo in PROFILE else fakes.MANIPULATIONS[k % 2]
            plans += [real, _fake(real, kind)]
    return plans


VIDEO_FRAMES = {  # frames of the shipped videos (plan_demo needs no I/O); checked by a test
    "asl_again.mkv": 77, "asl_bird.mkv": 63, "asl_book.mkv": 109, "asl_brother.mkv": 65,
    "asl_eat.mkv": 47, "asl_help.mkv": 58, "asl_hungry.mkv": 49, "asl_learn.mkv": 61,
    "asl_milk.mkv": 51, "asl_night.mkv": 68, "asl_no.mkv": 66, "asl_please.mkv": 73,
    "asl_school.mkv": 72, "asl_sister.mkv": 87, "asl_sorry.mkv": 73, "asl_student.mkv": 52,
    "asl_thanks.mkv": 51, "asl_walk.mkv": 89, "asl_want.mkv": 47, "asl_yes.mkv": 65,
    "head-pose-face-detection-female.gif": 23, "head-pose-face-detection-male.gif": 62,
    HEAD_POSE_PAIR: 56,
}


def video_segments(source: str, spec: DemoSpec) -> int:
    """REAL clips cut from a source of :data:`VIDEOS`: as many non-overlapping clips of
    ``spec.frames`` as fit, 1 to ``spec.video_max_segments`` (a shorter video gives one
    shorter clip)."""
    frames = VIDEO_FRAMES[source_file(source)]
    return int(min(max(frames // spec.frames, 1), spec.video_max_segments))


def _fake(real: ClipPlan, kind: str) -> ClipPlan:
    name = f"fake_{kind}_{real.name.removeprefix('real_')}"
    return dataclasses.replace(real, name=name, label=int_to_label(FAKE), manipulation=kind,
                               target=real.name)


def clip_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator of one clip: depends on the seed and the clip's name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# --------------------------------------------------------------------------- sources


def track_keypoints(frames: np.ndarray, cropper: Any, window: int = 5) -> np.ndarray:
    """Keypoints of the largest face in every frame, gaps interpolated, smoothed over time.

    Args:
        frames: ``(T, H, W, 3) uint8`` RGB.
        cropper: A :class:`dfdetect.extraction.faces.FaceCropper`.
        window: Moving-average length in frames.

    Returns:
        ``(T, 6, 2) float64`` frame pixels.

    Raises:
        DemoDataError: No face in any frame.
    """
    kps = np.full((len(frames), 6, 2), np.nan)
    for t, frame in enumerate(frames):
        boxes = cropper.detect(frame)
        if boxes:
            kps[t] = max(boxes, key=lambda b: b.area).keypoints
    found = ~np.isnan(kps).any(axis=(1, 2))
    if not found.any():
        raise DemoDataError("no face found in a demo clip; is dfdetect/demo/sample intact?")
    idx = np.arange(len(frames))
    flat = kps.reshape(len(frames), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(idx, idx[found], flat[found, j])
    return fakes.smooth_series(flat.reshape(kps.shape), window)


class _Sources:
    """The sample faces, loaded once: photos with their face, the video's segments, donors."""

    def __init__(self, sample_dir: Path, spec: DemoSpec, cropper: Any):
        self.dir, self.spec, self.cropper = sample_dir, spec, cropper
        self._photos: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
        self._donors: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def photo(self, name: str) -> tuple[np.ndarray, np.ndarray, Any]:
        """``(image (H, W, 3), keypoints (6, 2), box)`` of a sample photo."""
        if name not in self._photos:
            image = synth.load_rgb(self.dir / name)
            boxes = self.cropper.detect(image)
            if not boxes:
                raise DemoDataError(f"{self.dir / name}: no face found; is dfdetect/demo/sample intact?")
            box = max(boxes, key=lambda b: b.area)
            self._photos[name] = (image, box.keypoints.astype(np.float64), box)
        return self._photos[name]

    def donor(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image, keypoints (6, 2))`` of a face to swap in (a video's middle frame for it)."""
        if name in PORTRAITS:
            return self.photo(name)[:2]
        if name not in self._donors:
            path = self.dir / source_file(name)
            middle = video.probe(path).frames // 2
            frame = next(f for i, f in video.iter_frames(path) if i >= middle)
            box = _pick(self.cropper.detect(frame), _face_side(name))
            if box is None:
                raise DemoDataError(f"{path}: no face in its middle frame; is dfdetect/demo/sample intact?")
            self._donors[name] = (frame, box.keypoints.astype(np.float64))
        return self._donors[name]

    def film_photo(self, plan: ClipPlan, rng: np.random.Generator) -> np.ndarray:
        """Film a photo with a camera path drawn from ``rng``: ``(T, H, W, 3) uint8``."""
        image, _, box = self.photo(plan.source)
        spec = self.spec
        # the square of the photo the clip sees: the face at face_fraction of it, but kept
        # inside the photo with room for the camera's motion (beyond it the frame is mirrored)
        h, w = image.shape[:2]
        side = min(max(box.width, box.height) / spec.face_fraction, 0.85 * min(h, w))
        centre = (float(np.clip(box.center[0], side / 2, w - side / 2)),  # a little chin and neck
                  float(np.clip(box.center[1] + 0.1 * box.height, side / 2, h - side / 2)))
        path = synth.CameraPath(
            pan=rng.uniform(0.02, 0.05), zoom=rng.uniform(0.04, 0.08), roll=rng.uniform(2, 5),
            light=rng.uniform(0.1, 0.2), cycles=rng.uniform(0.6, 1.2),
            phase=2 * np.pi * plan.index / max(spec.portrait_clips, 1) + rng.uniform(0, 0.5),
        )
        scale = min(spec.size) / side
        ts = np.linspace(0, 1, spec.frames, endpoint=False)
        return np.stack([synth.camera_frame(image, t, spec.size, path, centre, scale) for t in ts])

    def video_segment(self, source: str, index: int, segments: int) -> np.ndarray:
        """Segment ``index`` of ``segments`` (evenly spaced) of a real video, scaled and cropped
        around its face: ``(T, H, W, 3) uint8`` (T = ``spec.frames``, or all the frames of a
        shorter video)."""
        path, spec = self.dir / source_file(source), self.spec
        total = video.probe(path).frames
        if source == REAL_VIDEO and total < spec.frames:
            raise DemoDataError(f"{path}: {total} frames, fewer than the {spec.frames} asked for")
        length = min(spec.frames, total)
        starts = np.linspace(0, total - length, max(segments, 1)).round()
        start = int(starts[index])
        # stream from the start (no seeking): the files are short and decoding them is cheap
        raw = [f for i, f in video.iter_frames(path, max_frames=start + length) if i >= start]
        return self._crop_to_face(np.stack(raw[:length]), _face_side(source))

    def _crop_to_face(self, frames: np.ndarray, side: str = "largest") -> np.ndarray:
        """Scale so the face is about ``face_fraction`` of the clip (never enlarging beyond the
        source's resolution unless the frame must cover the clip) and crop around it."""
        width, height = self.spec.size
        h, w = frames.shape[1:3]
        cover = max(height / h, width / w)
        first = _pick(self.cropper.detect(frames[0]), side)
        face = max(first.width, first.height) if first is not None else min(h, w) / 3
        scale = max(cover, min(1.0, self.spec.face_fraction * min(width, height) / face))
        size = (max(int(np.ceil(w * scale)), width), max(int(np.ceil(h * scale)), height))
        resized = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        box = _pick(self.cropper.detect(resized[0]), side)
        cx, cy = box.center if box is not None else (size[0] / 2, size[1] / 2)
        x0 = int(np.clip(cx - width / 2, 0, size[0] - width))
        y0 = int(np.clip(cy - height / 2, 0, size[1] - height))
        return np.ascontiguousarray(resized[:, y0:y0 + height, x0:x0 + width])


def _pick(boxes: list, side: str) -> Any:
    """The face a source means: the largest, or the leftmost / rightmost (None if no face)."""
    if not boxes:
        return None
    if side == "left":
        return min(boxes, key=lambda b: b.center[0])
    if side == "right":
        return max(boxes, key=lambda b: b.center[0])
    return max(boxes, key=lambda b: b.area)


# --------------------------------------------------------------------------- building


def choose_donor(plan: ClipPlan, seed: int) -> str:
    """The sample file whose face a swap clip receives (another person; "" for other clips)."""
    if plan.manipulation != fakes.SWAP:
        return ""
    choices = [d for d in DONORS if IDENTITIES[d] != plan.group]
    return choices[int(clip_rng(seed, plan.name + "/donor").integers(len(choices)))]


def _render_real(plan: ClipPlan, sources: _Sources, seed: int) -> np.ndarray:
    if plan.source == REAL_VIDEO:
        return sources.video_segment(REAL_VIDEO, plan.index, sources.spec.video_segments)
    if plan.source in PORTRAITS:
        return sources.film_photo(plan, clip_rng(seed, plan.name))
    return sources.video_segment(plan.source, plan.index, video_segments(plan.source, sources.spec))


def _render_fake(plan: ClipPlan, real: np.ndarray, keypoints: np.ndarray, sources: _Sources,
                 seed: int) -> fakes.FakeClip:
    rng = clip_rng(seed, plan.name)
    if plan.manipulation == fakes.SWAP:
        image, donor_kp = sources.donor(choose_donor(plan, seed))
        return fakes.face_swap(real, keypoints, image, donor_kp, rng=rng)
    return fakes.face_reenact(real, keypoints, rng=rng, fps=sources.spec.fps)


def _build_real_and_fakes(real: ClipPlan, derived: list[ClipPlan], sources: _Sources,
                          videos: Path, seed: int) -> None:
    """Write a REAL clip and the FAKE clips made from it, skipping files already there."""
    frames = _render_real(real, sources, seed)  # deterministic: rebuilt even when written
    spec = sources.spec
    if not (videos / f"{real.name}.mp4").exists():
        video.write_video(videos / f"{real.name}.mp4", frames, fps=spec.fps, crf=spec.crf, deterministic=True)
    missing = [p for p in derived if not (videos / f"{p.name}.mp4").exists()]
    if not missing:
        return
    keypoints = track_keypoints(frames, sources.cropper)
    for plan in missing:
        fake = _render_fake(plan, frames, keypoints, sources, seed)
        video.write_video(videos / f"{plan.name}.mp4", fake.frames, fps=spec.fps, crf=spec.crf, deterministic=True)


def _check_settings(out: Path, spec: DemoSpec, seed: int) -> None:
    """Refuse to mix clips built with other settings into ``out``; record the settings."""
    settings = json.loads(json.dumps({"version": VERSION, "seed": seed,
                                      "spec": dataclasses.asdict(spec)}))
    path = out / SETTINGS_NAME
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            raise DemoDataError(
                f"{out} holds a demo data set built with other settings ({old}); delete the "
                f"folder or choose another one to build with {settings}"
            )
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def labels_table(plans: list[ClipPlan], seed: int) -> pd.DataFrame:
    """The labels CSV's rows: ``file,label,group,manipulation,donor`` (donor: who is swapped in)."""
    rows = [{"file": f"{p.name}.mp4", "label": p.label, "group": p.group,
             "manipulation": p.manipulation,
             "donor": IDENTITIES.get(choose_donor(p, seed), "")} for p in plans]
    return pd.DataFrame(rows, columns=["file", "label", "group", "manipulation", "donor"])


def _check_inputs(spec: DemoSpec, sample: Path) -> Path:
    """Check the spec and that the sample faces are there; return the sample folder."""
    if spec.size[0] % 2 or spec.size[1] % 2 or spec.frames < 1:
        raise DemoDataError(f"size must be even (H.264) and frames >= 1, got size {spec.size}, "
                            f"frames {spec.frames}")
    needed = {REAL_VIDEO, *spec.portraits, *map(source_file, (*spec.videos, *DONORS))}
    missing = sorted(n for n in needed if not (sample / n).is_file())
    if missing:
        raise DemoDataError(f"{sample}: missing {missing}; run from a clone of the repository "
                            "(dfdetect/demo/sample ships with it) or pass sample_dir")
    return sample


def build_demo_dataset(
    out_dir: str | Path, *, seed: int = 0, spec: DemoSpec | None = None,
    sample_dir: str | Path | None = None, progress: bool = True, **changes: Any,
) -> DemoData:
    """Build (or finish building) the demo data set in ``out_dir``.

    Deterministic for a seed; a rerun reuses the clips already written (each is written
    atomically, so an interrupted run leaves no half-written file).

    Args:
        out_dir: Output folder (``videos/``, ``labels.csv``, ``demo.json``).
        seed: Seed of every random choice (camera paths, donors, manipulation parameters).
        spec: What to build (default :class:`DemoSpec`).
        sample_dir: Folder of the shipped faces (default the package's ``dfdetect/demo/sample``).
        progress: Show a progress bar.
        **changes: Fields of ``spec`` to change, e.g. ``frames=32`` or ``size=(256, 256)``.

    Returns:
        The DemoData (paths and the labels table).

    Raises:
        DemoDataError: ``out_dir`` was built with other settings, or the sample faces are missing.
    """
    spec = dataclasses.replace(spec or DemoSpec(), **changes)
    sample = _check_inputs(spec, Path(sample_dir) if sample_dir is not None else SAMPLE_DIR)
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    _check_settings(out, spec, seed)
    remove_stale_temporaries(videos)
    plans = plan_demo(spec)
    reals = [p for p in plans if p.manipulation == NONE]
    derived = {r.name: [p for p in plans if p.target == r.name] for r in reals}
    todo = [r for r in reals
            if any(not (videos / f"{p.name}.mp4").exists() for p in [r, *derived[r.name]])]
    if todo:

        with FaceCropper() as cropper:
            sources = _Sources(sample, spec, cropper)
            for real in tqdm(todo, desc="demo clips", disable=not progress):
                _build_real_and_fakes(real, derived[real.name], sources, videos, seed)
    table = labels_table(plans, seed)
    labels_csv = out / LABELS_NAME
    atomic_write_text(labels_csv, table.to_csv(index=False))
    counts = table["label"].value_counts()
    log.info("demo data set in %s: %d REAL and %d FAKE clips (%d sources (re)built now)", out,
             counts.get("REAL", 0), counts.get("FAKE", 0), len(todo))
    return DemoData(root=out, videos=videos, labels_csv=labels_csv, table=table)
