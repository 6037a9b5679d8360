"""From a raw video file to a verdict, with exactly the preprocessing the model was trained with.

``predict(video, "RUN/best.pt")`` reads everything it needs from the checkpoint: the face
detector, crop margin and size (``config["face"]``), clip length, input size and normalisation
(``config["data"]``), the architecture and the calibration temperature. Nothing is re-typed.

How a video is read (the rules the result refers to):

* **Sampling.** ``clips * T`` frame indices are spread evenly over the *whole* video
  (:func:`dfdetect.media.video.uniform_indices`) and read with :func:`dfdetect.media.video.iter_frames`,
  which seeks to the keyframe before a far-away frame instead of decoding everything between;
  only the sampled frames are converted to RGB and detected. By
  default ``clips = ceil(frames / (15 * T))`` capped at :data:`MAX_CLIPS`: one clip per 15*T
  frames (10 s at 30 fps for T = 20, the span of a DFDC training video). Clip ``j`` is made
  of the sampled frames in the ``j``-th of ``clips`` equal windows, so each clip looks like an
  evaluation clip of training (T frames evenly spread over its span).
* **Faces.** The checkpoint's detector runs on every sampled frame and
  :func:`dfdetect.extraction.tracking.track_faces` links detections into tracks (one per person); faces are
  cut with the checkpoint's ``FaceConfig`` (margin, size), then resized and normalised by
  :func:`dfdetect.data.dataset.preprocess_clip`, the Dataset's own function. Only frames where the face
  was *detected* are used (no box interpolated over the seconds between samples). A clip window
  with fewer than T such frames repeats them in order, as the Dataset does for short videos.
* **Several people.** Every track with at least ``min_track_frames`` detections is scored
  (its frame scores for a frame-level model, else its clip scores, aggregated by the
  ``aggregate`` rule of :mod:`dfdetect.data.aggregation`; the checkpoint's
  ``DataConfig.aggregate``, mean of P(fake), by default). The video is
  **FAKE if any track is**: its score is the highest track score and ``track`` names that
  track. Tracks are never joined across long gaps, so one person may yield two tracks.
* **No face** (no track long enough): label ``NO_FACE``, score None and a message, never a
  guess. **Unreadable file:** label ``ERROR`` with the reason.

Per-frame scores are the model's own decomposition of its logit: the LSTM output at frame
``t`` through the linear head, ``sigmoid(head(h_t) / temperature)``. With the default
``pooling="mean"`` the clip logit is exactly the mean of these frame logits; with
``pooling="last"`` they are the running score after frames ``1..t`` (with a bidirectional LSTM
they also see later frames). No extra forward pass. Frame-level models
(``temporal="none"``) score each frame on its own and the clip logit is their mean.

**Test-time flip** (``tta_flip=True``): every clip is also scored mirrored left-right and
the two logits are averaged (frame by frame): about twice the model time
(``bench/tta_cost.py`` measures it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dfdetect.config import RunConfig, replace
from dfdetect.data.aggregation import AGGREGATES, aggregate
from dfdetect.data.preprocess import preprocess_clip
from dfdetect.data.sampling import UniformClipSampler, clip_windows
from dfdetect.extraction.faces import FaceCropper
from dfdetect.extraction.tracking import track_faces
from dfdetect.inference.gradcam import grad_cam
from dfdetect.media.files import permission_denied
from dfdetect.media.video import VideoError, iter_frames, probe, uniform_indices
from dfdetect.models.checkpoint import load_model
from dfdetect.viz import heatmap_figure

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

# verdicts: strings in predictions.csv (the integer labels 0 = REAL, 1 = FAKE live in dfdetect.labels)
REAL, FAKE, NO_FACE, ERROR = "REAL", "FAKE", "NO_FACE", "ERROR"
MAX_CLIPS = 4  # default cap on clips per track (memory and time grow linearly with it)
CLIP_SPAN = 15  # default: one clip per CLIP_SPAN * T frames of video
BATCH_CLIPS = 8  # clips per forward pass



@dataclass(frozen=True)
class TrackScore:
    """One face track's verdict.

    Attributes:
        track: Track id (order of appearance in the video).
        score: P(fake) aggregated over its clips.
        clip_scores: P(fake) of each clip, in time order.
        frame_indices: Source frame numbers fed to the model, clip after clip (``clips * T``).
        frame_scores: P(fake) of each of those frames (see the module docstring).
        detections: Sampled frames in which this face was detected.
    """

    track: int
    score: float
    clip_scores: list[float]
    frame_indices: list[int]
    frame_scores: list[float]
    detections: int


@dataclass
class Heatmap:
    """Grad-CAM of the deciding track (``predict(..., heatmaps=True)``).

    Attributes:
        faces: ``(N, S, S, 3) uint8`` RGB face crops (``S`` = the checkpoint's face size), N = clips*T.
        cams: ``(N, S, S) float32`` maps in ``[0, 1]`` (one scale per clip).
        frame_indices: ``(N,)`` source frame numbers.
        frame_scores: ``(N,)`` per-frame P(fake).
        clip_scores: P(fake) of each clip.
    """

    faces: np.ndarray
    cams: np.ndarray
    frame_indices: np.ndarray
    frame_scores: np.ndarray
    clip_scores: list[float]

    def figure(self, title: str = ""):
        """The grid: frames in order with their heatmap and P(fake) (a matplotlib Figure)."""

        clip_len = len(self.faces) // max(len(self.clip_scores), 1)
        cols = min(clip_len, 10)  # one row per clip when it fits
        return heatmap_figure(self.faces, self.cams, self.frame_scores, self.frame_indices,
                              title=title, cols=cols)


@dataclass
class VideoPrediction:
    """The verdict on one video.

    Attributes:
        file: The video, as given (relative to the folder in folder mode).
        label: "REAL", "FAKE", "NO_FACE" or "ERROR".
        score: P(fake) of the deciding track; None for NO_FACE / ERROR.
        confidence: Probability of the returned label (``score`` or ``1 - score``); None likewise.
        clip_scores: P(fake) per clip of the deciding track.
        frame_scores: P(fake) per frame used by the deciding track.
        frame_indices: Source frame numbers of those frames.
        frames_read: Sampled frames decoded from the video.
        frames_used: Distinct frames fed to the model for the deciding track.
        video_frames: Frames in the video (from the container).
        faces: Face tracks found (scored or not).
        track: Id of the track that decided the verdict (highest score), or None.
        tracks: Every scored track (:class:`TrackScore` as dicts).
        aggregate: The clip aggregation rule.
        threshold: FAKE when ``score >= threshold``.
        message: Why there is no score, or notes (e.g. several people).
        seconds: Wall time spent on this video, and ``timings`` split by stage.
        heatmap_file: The saved heatmap grid, relative to the output folder (folder mode).
        heatmap: Grad-CAM data when asked for (not serialised); :meth:`Heatmap.figure`.
    """

    file: str
    label: str
    score: float | None = None
    confidence: float | None = None
    clip_scores: list[float] = field(default_factory=list)
    frame_scores: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    frames_read: int = 0
    frames_used: int = 0
    video_frames: int = 0
    faces: int = 0
    track: int | None = None
    tracks: list[dict] = field(default_factory=list)
    aggregate: str = "mean"
    threshold: float = 0.5
    message: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    heatmap_file: str = ""
    heatmap: Heatmap | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (no heatmap arrays; floats rounded to 6 digits)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name != "heatmap":
                out[name] = _plain(getattr(self, name))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if math.isfinite(value) else None
    return value


NOT_FINITE = ("model output is not finite (NaN or infinite P(fake)): the checkpoint diverged "
              "(NaN weights or temperature); retrain with a lower --lr or --amp off")


def decide(score: float, threshold: float = 0.5) -> tuple[str, float]:
    """``(label, confidence)`` for P(fake) ``score``: FAKE when ``score >= threshold``.

    Raises:
        ValueError: ``score`` is NaN or infinite (a NaN compares False and would read REAL).
    """
    if not math.isfinite(score):
        raise ValueError(NOT_FINITE)
    return (FAKE, score) if score >= threshold else (REAL, 1.0 - score)


def _note(res: VideoPrediction, text: str) -> None:
    res.message = f"{res.message}; {text}" if res.message else text


def default_clips(frames: int, clip_len: int, max_clips: int = MAX_CLIPS) -> int:
    """Clips for a video of ``frames`` frames: one per ``CLIP_SPAN * clip_len``, 1..max_clips."""
    return int(min(max_clips, max(1, math.ceil(frames / (CLIP_SPAN * clip_len)))))


class _CroppingDetector:
    """The detector handed to :func:`track_faces`: detects with the cropper and keeps a crop of
    every detection at once, so no frame is held after it has been read (a track's box on a
    frame where it was detected is that detection's box, so the crop can be found again).
    """

    def __init__(self, cropper: Any):
        self.cropper = cropper
        self.position_of: dict[int, int] = {}  # id(frame) -> position, set as frames are read
        self.crops: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # position -> (box, crop)
        self.seconds = {"detect": 0.0, "crop": 0.0}

    def detect(self, frame: np.ndarray, color: str = "rgb") -> list:
        t0 = time.perf_counter()
        boxes = self.cropper.detect(frame, color=color)
        t1 = time.perf_counter()
        crops = [(b.as_array(), self.cropper.crop(frame, b, color=color)) for b in boxes]
        self.crops[self.position_of[id(frame)]] = crops
        self.seconds["detect"] += t1 - t0
        self.seconds["crop"] += time.perf_counter() - t1
        return boxes

    def crop_at(self, position: int, box: np.ndarray) -> np.ndarray:
        for b, crop in self.crops.get(position, []):
            if np.allclose(b, box):
                return crop
        raise RuntimeError(f"no crop kept for the box at sampled position {position}")


@dataclass
class _Sample:
    tracks: list  # FaceTrack
    detector: _CroppingDetector
    frames_read: int
    video_frames: int
    clips: int
    timings: dict[str, float]
    frames_wanted: int = 0  # distinct frames sampled; more than frames_read: the file ends early
    last_read: int = -1  # source number of the last frame decoded


@dataclass
class _Candidate:
    track: Any  # FaceTrack
    frame_indices: np.ndarray  # (C*T,)
    faces: np.ndarray  # (C*T, S, S, 3) uint8
    clips: torch.Tensor  # (C, T, 3, s, s)


class Predictor:
    """A loaded model, its run config and a face detector, reused across videos.

    Args:
        model: A trained :class:`dfdetect.models.detector.DeepfakeDetector` (put in eval mode).
        run_cfg: The config it was trained with (``load_model`` returns both).

    Example:
        >>> with Predictor.from_checkpoint("runs/r1/best.pt") as p:  # doctest: +SKIP
        ...     print(p.predict("clip.mp4").to_dict())
    """

    def __init__(self, model: nn.Module, run_cfg: RunConfig):
        self.model = model.eval()
        self.cfg = run_cfg
        self.device = next(model.parameters()).device
        self.temperature = float(model.temperature)
        # every sampled frame is detected; gaps count in sampled frames (see tracking.py)
        self.track_cfg = replace(run_cfg.face, detect_every=1)
        self._cropper = None
        self.sampler = UniformClipSampler()  # frames of a clip inside each window: evaluation's rule

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None) -> Predictor:
        """Load a ``.pt`` checkpoint or an exported ``.safetensors`` (see ``load_model``).

        Raises:
            CheckpointError: The file cannot be read (the message says what to do).
        """

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, run_cfg = load_model(path, device)
        if torch.device(device).type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # faster CPU convolutions
        return cls(model, run_cfg)

    @property
    def cropper(self):
        """The checkpoint's face detector (loaded on first use)."""
        if self._cropper is None:

            self._cropper = FaceCropper(self.cfg.face)
        return self._cropper

    def close(self) -> None:
        """Release the face detector."""
        if self._cropper is not None:
            self._cropper.close()
            self._cropper = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(
        self, video: str | Path, *, threshold: float = 0.5, clips: int | None = None,
        max_clips: int = MAX_CLIPS, aggregate: str | None = None,
        min_track_frames: int | None = None, heatmaps: bool = False, name: str | None = None,
        tta_flip: bool = False,
    ) -> VideoPrediction:
        """Score one video (see the module docstring for the rules).

        Args:
            video: A video file in any container FFmpeg reads.
            threshold: FAKE when P(fake) >= threshold.
            clips: Clips per face track; None = by length (1 per 15*T frames, <= ``max_clips``).
            max_clips: Cap of the automatic clip count.
            aggregate: Video aggregation rule, a key of
                :data:`dfdetect.data.aggregation.AGGREGATES`; None = the checkpoint's
                ``DataConfig.aggregate``.
            min_track_frames: Detections a track needs to be scored; default ``max(2, T // 4)``.
            heatmaps: Also compute Grad-CAM of the deciding track (``result.heatmap``).
            name: ``file`` of the result (default ``str(video)``).
            tta_flip: Also score every clip mirrored and average the logits (~2x model time).

        Returns:
            A :class:`VideoPrediction`; unreadable files give label ERROR, videos without a
            usable face NO_FACE (neither raises).
        """
        aggregate = aggregate or self.cfg.data.aggregate
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r}: use one of {sorted(AGGREGATES)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold}: give a P(fake) threshold in [0, 1]")
        if clips is not None and (not isinstance(clips, int) or clips < 1):
            raise ValueError(f"clips={clips!r}: give a number of clips >= 1 (None = by length)")
        start = time.perf_counter()
        res = VideoPrediction(file=name or str(video), label=ERROR, aggregate=aggregate,
                              threshold=threshold)
        try:
            sample = self._read(Path(video), clips, max_clips)
        except VideoError as err:
            res.message = str(err)
        except PermissionError:  # the file is fine; re-encoding (VideoError's advice) would not help
            res.message = permission_denied(video)
        else:
            res.frames_read, res.video_frames = sample.frames_read, sample.video_frames
            res.faces, res.timings = len(sample.tracks), sample.timings
            self._score(res, sample, min_track_frames, heatmaps, tta_flip)
            if sample.frames_read < sample.frames_wanted:
                _note(res, f"only {sample.frames_read} of {sample.frames_wanted} sampled frames "
                      f"could be decoded: the file ends after frame {sample.last_read} of the "
                      f"{sample.video_frames} its header announces (truncated?), so the verdict "
                      "covers only that part; re-encode or copy the file again")
        res.seconds = time.perf_counter() - start
        res.timings["total"] = res.seconds
        return res

    def _read(self, path: Path, clips: int | None, max_clips: int) -> _Sample:
        """Sample frames evenly, detect and crop faces, link them into tracks."""

        t0 = time.perf_counter()
        if path.is_file():
            with open(path, "rb") as fh:  # PermissionError here; FFmpeg would call it a bad file
                fh.read(1)
        info = probe(path)
        clip_len = self.cfg.data.frames
        clips = int(clips) if clips else default_clips(info.frames, clip_len, max_clips)
        indices = uniform_indices(info.frames, clips * clip_len)
        detector = _CroppingDetector(self.cropper)
        decode = [time.perf_counter() - t0]

        def stream() -> Iterator[tuple[int, np.ndarray]]:
            wanted, position = set(indices.tolist()), 0
            frames = iter_frames(path, indices)
            while True:
                t = time.perf_counter()
                item = next(frames, None)
                decode[0] += time.perf_counter() - t
                if item is None:
                    return
                if item[0] in wanted:
                    detector.position_of[id(item[1])] = position
                    position += 1
                    yield item

        result = track_faces(stream(), detector, self.track_cfg)
        if result.frames_read == 0:
            raise VideoError(f"{path}: no frame could be decoded; re-encode the file")
        timings = {"decode": decode[0], **detector.seconds}
        last = int(result.read_index[-1]) if len(result.read_index) else -1
        return _Sample(result.tracks, detector, result.frames_read, info.frames, clips, timings,
                       frames_wanted=len(set(indices.tolist())), last_read=last)

    def _candidate(self, track: Any, sample: _Sample, min_frames: int) -> _Candidate | None:
        """The clips of one track (detected frames only), or None when it is too short."""

        detected = ~track.interpolated
        pos, boxes, index = track.positions[detected], track.boxes[detected], track.frame_index[detected]
        if len(pos) < min_frames:
            return None
        clip_len, picks = self.cfg.data.frames, []
        for window in clip_windows(sample.frames_read, sample.clips):
            inside = np.flatnonzero((pos >= window.start) & (pos < window.stop))
            if len(inside):  # fewer than T: frames repeat in order (the Dataset's rule)
                picks.append(inside[self.sampler(len(inside), clip_len)])
        sel = np.concatenate(picks)
        faces = np.stack([sample.detector.crop_at(int(pos[k]), boxes[k]) for k in sel])
        tensors = [preprocess_clip(faces[i:i + clip_len], self.cfg.data)
                   for i in range(0, len(sel), clip_len)]
        return _Candidate(track, index[sel], faces, torch.stack(tensors))

    def _forward(self, clips: torch.Tensor, tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(N, T, 3, s, s) -> (P(fake) (N,), per-frame P(fake) (N, T))`` in one pass per batch
        (two with ``tta_flip``: the mirrored clips' logits are averaged in)."""
        logits, frame = forward_logits(self.model, clips, self.device, tta_flip)
        t = self.temperature
        return (torch.sigmoid(logits / t).cpu().numpy(), torch.sigmoid(frame / t).cpu().numpy())

    def _score(self, res: VideoPrediction, sample: _Sample, min_track_frames: int | None,
               heatmaps: bool, tta_flip: bool = False) -> None:
        """Score every long-enough track; fill ``res`` from the highest-scoring one."""
        clip_len = self.cfg.data.frames
        min_frames = min_track_frames or max(2, clip_len // 4)
        t0 = time.perf_counter()
        cands = [c for t in sample.tracks if (c := self._candidate(t, sample, min_frames))]
        t1 = time.perf_counter()
        res.timings["preprocess"] = t1 - t0
        if not cands:
            most = max((t.detected for t in sample.tracks), default=0)
            res.label = NO_FACE
            res.message = (f"no face: the longest face track has {most} detection(s) in "
                           f"{sample.frames_read} sampled frames, {min_frames} needed "
                           f"(detector {self.cfg.face.model!r}, min_score {self.cfg.face.min_score})")
            hint = _more_sampling_hint(most, sample, min_frames, clip_len)
            if hint:
                res.message += f"; {hint}"
            return
        scores, frame_scores = self._forward(torch.cat([c.clips for c in cands]), tta_flip)
        res.timings["model"] = time.perf_counter() - t1
        if not np.isfinite(scores).all():
            res.label, res.message = ERROR, NOT_FINITE
            return
        start, per_frame = 0, self.model.frame_level
        for c in cands:
            n = len(c.clips)
            votes = frame_scores[start:start + n] if per_frame else scores[start:start + n]
            res.tracks.append(TrackScore(
                track=int(c.track.track_id), score=aggregate(votes, res.aggregate),
                clip_scores=scores[start:start + n].tolist(), frame_indices=c.frame_indices.tolist(),
                frame_scores=frame_scores[start:start + n].reshape(-1).tolist(),
                detections=int(c.track.detected)).__dict__)
            start += n
        best = max(range(len(cands)), key=lambda i: res.tracks[i]["score"])  # FAKE if any is
        top = res.tracks[best]
        res.score, res.track = top["score"], top["track"]
        res.label, res.confidence = decide(res.score, res.threshold)
        res.clip_scores, res.frame_scores = top["clip_scores"], top["frame_scores"]
        res.frame_indices = top["frame_indices"]
        res.frames_used = len(set(top["frame_indices"]))
        if len(cands) > 1:
            res.message = (f"{len(cands)} faces scored; track {res.track} has the highest P(fake) "
                           "and decides (a video is FAKE if any face is)")
        if heatmaps:
            t2 = time.perf_counter()
            res.heatmap = self._heatmap(cands[best], top)
            res.timings["gradcam"] = time.perf_counter() - t2

    def _heatmap(self, cand: _Candidate, top: dict) -> Heatmap:

        size = self.cfg.face.size
        cam = grad_cam(self.model, cand.clips.to(self.device), size=(size, size))
        return Heatmap(faces=cand.faces, cams=cam.cams.reshape(-1, size, size),
                       frame_indices=cand.frame_indices, clip_scores=top["clip_scores"],
                       frame_scores=np.asarray(top["frame_scores"], dtype=np.float32))


@torch.inference_mode()
def forward_logits(model: nn.Module, clips: torch.Tensor, device: torch.device,
                   tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip and frame logits of preprocessed clips, ``BATCH_CLIPS`` at a time.

    Args:
        model: A DeepfakeDetector (``frame_logits``), in eval mode.
        clips: ``(N, T, 3, s, s)`` normalised frames.
        device: The model's device.
        tta_flip: Average in the logits of the clips mirrored left-right.

    Returns:
        ``(clip logits (N,), frame logits (N, T))``, float32 on the CPU.
    """
    clip_out, frame_out = [], []
    for c in clips.split(BATCH_CLIPS):
        c = c.to(device)
        clip, frame = model.frame_logits(c)
        if tta_flip:
            clip_f, frame_f = model.frame_logits(c.flip(-1))
            clip, frame = (clip + clip_f) / 2, (frame + frame_f) / 2
        clip_out.append(clip.float().reshape(-1).cpu())
        frame_out.append(frame.float().cpu())
    return torch.cat(clip_out), torch.cat(frame_out)


def _more_sampling_hint(most: int, sample: _Sample, min_frames: int, clip_len: int) -> str:
    """How many clips would likely find enough detections, when the video has more frames."""
    if most == 0 or sample.frames_read >= sample.video_frames:
        return ""  # no face at all, or every frame was already read: more sampling cannot help
    rate = most / sample.frames_read  # share of sampled frames where the face was found
    clips = math.ceil(min_frames / rate / clip_len)
    clips = min(max(clips, sample.clips + 1), math.ceil(sample.video_frames / clip_len))
    if clips <= sample.clips:
        return ""
    return (f"the face was found in {most} of {sample.frames_read} sampled frames: sample more "
            f"with --clips {clips} (clips={clips}; {clips * clip_len} frames of the "
            f"{sample.video_frames})")


def resolve_predictor(model_or_checkpoint: Any, run_cfg: RunConfig | None,
             device: str | torch.device | None) -> tuple[Predictor, bool]:
    """``(predictor, owned)``: owned predictors are closed by the caller."""
    if isinstance(model_or_checkpoint, Predictor):
        return model_or_checkpoint, False
    if isinstance(model_or_checkpoint, (str, Path)):
        return Predictor.from_checkpoint(model_or_checkpoint, device), True
    if isinstance(model_or_checkpoint, tuple) and len(model_or_checkpoint) == 2:
        model_or_checkpoint, run_cfg = model_or_checkpoint  # what load_model returns
    if isinstance(model_or_checkpoint, nn.Module):
        if run_cfg is None:
            raise TypeError("a bare model does not say how it was trained: pass run_cfg=, the "
                            "(model, run_cfg) pair from load_model, or the checkpoint path")
        model = model_or_checkpoint.to(device) if device is not None else model_or_checkpoint
        return Predictor(model, run_cfg), True
    raise TypeError(f"expected a checkpoint path, a Predictor or (model, run_cfg), got "
                    f"{type(model_or_checkpoint).__name__}")


def predict(
    video: str | Path, model_or_checkpoint: Any, *, threshold: float = 0.5,
    clips: int | None = None, aggregate: str | None = None, heatmaps: bool = False,
    device: str | torch.device | None = None, run_cfg: RunConfig | None = None,
    tta_flip: bool = False,
) -> VideoPrediction:
    """Score one raw video with a trained model: ``video -> VideoPrediction``.

    Args:
        video: A video file.
        model_or_checkpoint: A checkpoint / export path (loaded here, on ``device``), a
            :class:`Predictor` (reuse it for many videos), or ``(model, run_cfg)``.
        threshold: FAKE when P(fake) >= threshold.
        clips: Clips per face track; None = by the video's length.
        aggregate: A rule of :mod:`dfdetect.data.aggregation` ("mean", "logit_mean", "median",
            "max", "confident"); None = the checkpoint's (mean of P(fake) by default).
        heatmaps: Compute Grad-CAM of the deciding track (``result.heatmap.figure()``).
        device: For a path: where to load the model (default CUDA if available).
        run_cfg: With a bare model: the config it was trained with.
        tta_flip: Also score the mirrored clips and average the logits (~2x model time).

    Returns:
        :class:`VideoPrediction` (ERROR / NO_FACE are results, not exceptions).
    """
    predictor, owned = resolve_predictor(model_or_checkpoint, run_cfg, device)
    try:
        return predictor.predict(video, threshold=threshold, clips=clips, aggregate=aggregate,
                                 heatmaps=heatmaps, tta_flip=tta_flip)
    finally:
        if owned:
            predictor.close()
