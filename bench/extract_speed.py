"""Face extraction speed and memory on 1280x720 and 1920x1080 H.264 videos made from a real face.

Prints, in one run (each measurement in a fresh process, so peak RSS is its own; decoding and
extraction take turns three times and the fastest run of each is kept, since other work on a
shared machine only ever slows a run down; CPU time over all threads is printed beside wall time):

* decode-only ms/frame: OpenCV's decoder (``cv2.VideoCapture``, BGR arrays: the reference the
  targets are written against), PyAV decoding alone, and decoding to RGB arrays (``video.iter_frames``),
  which every pixel consumer needs and is the floor for extraction;
* dfdetect extraction ms/frame on every frame (``create_face_videos``: detect, track, crop, write
  the H.264 face video), with ``detect_every=1`` and with the fast setting, and its ratio to decoding;
* a baseline: OpenCV's Haar cascade (offline, ships with OpenCV) run on every frame;
* peak RSS of extraction for a 10 s and a 60 s video (it must not grow with length);
* a folder of FOLDER_VIDEOS 10 s 1080p videos through ``python -m dfdetect extract`` with 1 and
  2 workers: videos/s and the speed-up (issue #13's target: >= 1.8x on 2 cores), and the same
  with every process held to one core (``taskset``): how the work scales with processes;
* accuracy: on the real videos (../shared/faces/intel-sample-videos and the shipped talking head),
  at their own size and upscaled to 1080p (where the detector reads the YUV planes), the frames
  where extraction's detector and MediaPipe's Tasks FaceDetector on the full-resolution RGB
  frame (0.1.0's detector) agree: both find none, or largest boxes with IoU >= 0.9 (needs
  ``mediapipe``, a test dependency; tests/test_extraction_accuracy.py checks the whole pipeline).

Target (issue #13): extraction with default settings <= 1.5x OpenCV's decode-only wall time. Usage: ``python bench/extract_speed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from dfdetect.config import FaceConfig
from dfdetect.demo import synth
from dfdetect.extraction.blazeface import whole_pixels
from dfdetect.extraction.faces import FaceCropper
from dfdetect.extraction.pipeline import DECODE_THREADS, RGB_DETECT_PIXELS, create_face_videos
from dfdetect.extraction.tracking import iou
from dfdetect.media import video
from dfdetect.media.video import decode_frames, iter_frames, to_rgb, to_yuv

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "dfdetect" / "demo" / "sample"
FACE = SAMPLE / "grace_hopper.jpg"
FPS = 25
FAST_EVERY = 5  # detect_every of the fast setting (the default max_gap=5 allows up to 6)
REPEAT = 2  # timed runs per mode (fastest kept)
FOLDER_VIDEOS = 4  # DFDC-like videos in the small folder (the large one has 3x as many)
HAAR_FRAMES = 40  # the Haar baseline is slow at 1080p: time it on the first frames only


def make_video(path: Path, seconds: float, size=(1920, 1080)) -> None:
    """A 1080p H.264 video: a real portrait, animated (pan, zoom, roll, light), on a backdrop."""
    w, h = size
    face = synth.load_rgb(FACE)
    backdrop = cv2.resize(synth.load_rgb(SAMPLE / "camera.png"), (w, h))
    backdrop = cv2.GaussianBlur(backdrop, (0, 0), 9)  # out-of-focus room behind the person
    n = int(seconds * FPS)
    with video.VideoWriter(path, fps=FPS, crf=23) as writer:
        for i in range(n):
            t = i / n
            k = h / 1080  # the person scales with the frame: the same framing at 720p and 1080p
            ph, pw = int(640 * k), int(560 * k)
            person = synth.camera_frame(face, t, (pw, ph), synth.CameraPath(pan=0.05, cycles=2),
                                        scale=1.1)
            x = int(w * 0.35 + w * 0.1 * np.sin(2 * np.pi * t))
            writer.write(synth.paste(backdrop, person, x, (h - ph) // 2))


def loop_video(src: Path, dst: Path, times: int) -> None:
    """Concatenate ``src`` with itself by copying packets (no re-encoding): a long video, fast."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        packets = [p for p in inp.demux(s_in) if p.size]
        span = max(p.pts for p in packets) + packets[-1].duration or 1
        for k in range(times):
            for p in packets:
                p.pts, p.dts = p.pts + (span if k else 0), p.dts + (span if k else 0)
                p.stream = s_out
                out.mux(p)


# --- measurements, each run in a child process -------------------------------------------------

def _decode_raw(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = sum(1 for _ in c.decode(s))
    return n, n


def _decode_opencv(path: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, n


def _decode_rgb(path: Path) -> tuple[int, int]:
    n = sum(1 for _ in iter_frames(path))
    return n, n


def _extract(path: Path, every: int, clock: list) -> tuple[int, int]:
    cfg = FaceConfig(detect_every=every)
    with FaceCropper(cfg) as cropper, tempfile.TemporaryDirectory() as out:
        cropper.detect(np.zeros((64, 64, 3), np.uint8))  # model set-up is once per batch: not timed
        clock[:] = [time.perf_counter(), time.process_time()]
        row = create_face_videos(path, out, "bench", cfg, cropper=cropper)
    assert row["status"] == "ok", row
    return row["frames_read"], row["frames_with_face"]


def _haar(path: Path) -> tuple[int, int]:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = 0
    for _, frame in iter_frames(path, max_frames=HAAR_FRAMES):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        found += len(cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60))) > 0
    return HAAR_FRAMES, found


def child(mode: str, path: Path) -> None:
    """Run one measurement; print JSON: wall and CPU ms per frame, frames, faces, peak RSS (MiB)."""
    clock = [time.perf_counter(), time.process_time()]
    fns = {"opencv": _decode_opencv, "raw": _decode_raw, "rgb": _decode_rgb, "haar": _haar,
           "extract1": lambda p: _extract(p, 1, clock),
           "extract": lambda p: _extract(p, FAST_EVERY, clock)}
    frames, faces = fns[mode](path)
    wall, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    print(json.dumps({"ms": 1000 * wall / frames, "cpu_ms": 1000 * cpu / frames, "frames": frames,
                      "faces": faces,
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(mode: str, path: Path) -> dict:
    """Run ``child(mode, path)`` in a fresh process and return what it printed."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_interleaved(modes: list[str], path: Path, repeat: int) -> dict[str, dict]:
    """Fastest of ``repeat`` runs per mode, the modes taking turns.

    On a shared machine other work only ever slows a run down, and taking turns exposes every
    mode to the same conditions, so the fastest runs are the fairest comparison.
    """
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(repeat):
        for mode in modes:
            runs[mode].append(measure(mode, path))
    return {m: {**min(r, key=lambda x: x["ms"]), "cpu_ms": min(x["cpu_ms"] for x in r)}
            for m, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s and 6 s videos (a smoke test)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "VIDEO"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], Path(a.child[1]))
    short, times = (2, 3) if a.quick else (10, 6)
    for size in ((1280, 720), (1920, 1080)):
        run_size(size, short, times)
    run_folder(short)
    run_accuracy(a.quick)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def run_folder(seconds: int) -> None:
    """``dfdetect extract`` over folders of 1080p videos with 1 and 2 workers (whole processes).

    Each setting runs on FOLDER_VIDEOS and on 3x as many videos: the difference of the two wall
    times is the steady-state rate (process start-up and imports cancel out); start-up is the
    rest. The same with every process held to one core (``taskset``, two ``--shard`` processes)
    shows how the work scales with processes when a worker has one core to itself.
    """
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        small.mkdir()
        large.mkdir()
        make_video(small / "v0.mp4", seconds)
        data = (small / "v0.mp4").read_bytes()
        for i in range(3 * FOLDER_VIDEOS):  # distinct files, same content: equal work per video
            if i < FOLDER_VIDEOS:
                (small / f"v{i}.mp4").write_bytes(data)
            (large / f"v{i}.mp4").write_bytes(data)

        def run(*commands: list[str]) -> float:
            t0 = time.perf_counter()
            procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for c in commands]
            for p in procs:
                assert p.wait() == 0, p.stderr.read().decode()[-2000:]
            return time.perf_counter() - t0

        def setting(name: str, make) -> tuple[float, float]:
            """(steady-state videos/s, start-up s) of one way of running the batch."""
            walls = [run(*make(folder, Path(tmp) / f"{name}-{folder.name}")) for folder in (small, large)]
            rate = 2 * FOLDER_VIDEOS / (walls[1] - walls[0])
            return rate, walls[0] - FOLDER_VIDEOS / rate

        def extract(folder: Path, out: Path, *extra: str) -> list[str]:
            return [sys.executable, "-m", "dfdetect", "extract", str(folder), str(out), *extra]

        res = {
            "1 worker": setting("w1", lambda f, o: [extract(f, o)]),
            "2 workers": setting("w2", lambda f, o: [extract(f, o, "--workers", "2")]),
            "1 process on 1 core": setting("p1", lambda f, o: [["taskset", "-c", "0", *extract(f, o)]]),
            "2 shard processes, 1 core each": setting("p2", lambda f, o: [
                ["taskset", "-c", str(i), *extract(f, o, "--shard", f"{i}/2")] for i in (0, 1)]),
        }
        worker = "import dfdetect.extraction.pipeline as p; p.FaceCropper()"  # what a worker loads
        start = run([sys.executable, "-c", worker])
        print(f"\nfolders of {FOLDER_VIDEOS} and {3 * FOLDER_VIDEOS} x {seconds} s 1080p videos, "
              "`dfdetect extract` (whole processes):")
        for name, (rate, startup) in res.items():
            print(f"  {name:32s} {rate:.3f} videos/s in steady state, start-up {startup:4.1f} s")
        print(f"  2 workers / 1 worker, steady state: {res['2 workers'][0] / res['1 worker'][0]:.2f}x; "
              f"one core per process, 2 / 1: {res['2 shard processes, 1 core each'][0] / res['1 process on 1 core'][0]:.2f}x")
        print(f"  start-up of one worker process (imports, detector): {start:.1f} s")


def upscale(src: Path, dst: Path, height: int = 1080) -> None:
    """``src`` re-encoded at ``height`` lines (bicubic, crf 18): a real video at 1080p."""
    info = video.probe(src)
    size = (round(info.width * height / info.height / 2) * 2, height)
    with video.VideoWriter(dst, fps=info.fps or FPS, crf=18) as writer:
        for _, frame in iter_frames(src):
            writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))


def agreement(path: Path, cropper: FaceCropper, reference) -> tuple[int, int, int, int]:
    """``(frames, frames agreeing, frames with a face: ours, reference)`` for one video.

    "Ours" is what extraction's detector sees and finds (the decoded planes, or the RGB frame up
    to 1280x720, as in :func:`create_face_videos`); the largest face of each frame is compared.
    Tracking and the keep rule come after and are unchanged since 0.1.0.
    """
    frames = agree = ours_n = ref_n = 0
    for _, decoded in decode_frames(path, threads=DECODE_THREADS):  # one decode, both views
        frames += 1
        frame = to_rgb(decoded)
        yuv = to_yuv(decoded, with_rgb=decoded.width * decoded.height <= RGB_DETECT_PIXELS)
        ours = cropper.detect_yuv(yuv)
        found = reference.detect(mp_image(frame)).detections
        ours_n, ref_n = ours_n + bool(ours), ref_n + bool(found)
        if not found or not ours:
            agree += not found and not ours
            continue
        b = max(found, key=lambda d: d.bounding_box.width * d.bounding_box.height).bounding_box
        truth = np.array([b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height], float)
        agree += iou(truth, whole_pixels(max(ours, key=lambda f: f.area).as_array())) >= 0.9
    return frames, agree, ours_n, ref_n


def mp_image(frame: np.ndarray):
    from mediapipe import Image, ImageFormat

    return Image(image_format=ImageFormat.SRGB, data=frame)


def run_accuracy(quick: bool) -> None:
    """Extraction's kept face vs MediaPipe's detector on the full-resolution frames (0.1.0's)."""
    try:
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        print("\naccuracy: skipped (pip install mediapipe, a test dependency, to compare with it)")
        return
    from dfdetect.extraction.faces import MODEL_FILES

    model = (ROOT / "dfdetect" / "assets" / MODEL_FILES["full"]).read_bytes()
    reference = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=model), min_detection_confidence=0.5))
    shared = ROOT.parent / "shared" / "faces" / "intel-sample-videos"
    videos = sorted(shared.glob("*.mkv")) + sorted(shared.glob("*.gif")) + [SAMPLE / "WolfgangLanger_Pexels.mp4"]
    videos = [v for v in videos if v.is_file()][:3 if quick else None]
    print(f"\naccuracy: extraction (defaults) vs MediaPipe's FaceDetector on full frames, {len(videos)} real videos")
    print(f"{'':34s} {'frames':>6s} {'agree':>7s}   frames with a face (ours / MediaPipe)")
    with FaceCropper() as cropper, tempfile.TemporaryDirectory() as tmp:
        for label, make in (("at their own size (<= 640x480)", None), ("upscaled to 1080p (YUV path)", upscale)):
            total = np.zeros(4, int)
            for v in videos:
                if make is not None:
                    if v.suffix == ".gif":
                        continue  # RGB sources are detected on RGB at any size
                    make(v, Path(tmp) / f"{v.stem}.mp4")
                    v = Path(tmp) / f"{v.stem}.mp4"
                total += agreement(v, cropper, reference)
            frames, agree, ours, theirs = total
            print(f"{label:34s} {frames:6d} {agree / frames:7.2%}   {ours} / {theirs}")
    reference.close()


def run_size(size: tuple[int, int], short: int, times: int) -> None:
    """Every measurement on one frame size: a ``short`` s video and one ``times`` as long."""
    with tempfile.TemporaryDirectory() as tmp:
        v_short, v_long = Path(tmp) / "short.mp4", Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        make_video(v_short, short, size)
        loop_video(v_short, v_long, times)
        print(f"\ntest videos: {size[0]}x{size[1]} H.264 {FPS} fps, {short} s and {short * times} s "
              f"(made in {time.perf_counter() - t0:.0f} s)")
        best = measure_interleaved(["opencv", "raw", "rgb", "extract1", "extract"], v_short, REPEAT)
        rows = [("decode only (OpenCV VideoCapture, BGR)", best["opencv"]),
                ("decode only (PyAV, no conversion)", best["raw"]),
                ("decode to RGB arrays (PyAV, video.iter_frames)", best["rgb"]),
                ("dfdetect extraction, defaults (detect every frame)", best["extract1"]),
                (f"dfdetect extraction, detect_every={FAST_EVERY}", best["extract"]),
                (f"baseline: decode + OpenCV Haar every frame ({HAAR_FRAMES} frames)",
                 measure("haar", v_short))]
        floor, cpu_floor = rows[0][1]["ms"], rows[0][1]["cpu_ms"]
        cores = len(os.sched_getaffinity(0))
        print(f"{'':62s} {'ms/frame':>8s} {'x OpenCV':>8s} {'CPU ms':>7s} {'x OpenCV':>8s} "
              f"{'bound':>6s}")
        for name, r in rows:
            print(f"{name:62s} {r['ms']:8.2f} {r['ms'] / floor:8.2f} {r['cpu_ms']:7.2f} "
                  f"{r['cpu_ms'] / cpu_floor:8.2f} {r['cpu_ms'] / cores / floor:6.2f}")
        print(f"(x OpenCV = time / OpenCV decode-only, wall and CPU (all threads); bound = CPU ms / "
              f"{cores} cores / OpenCV wall: the lowest 'x OpenCV' this work could reach with every "
              f"core busy all the time; fastest of {REPEAT} interleaved runs)")
        print(f"faces: extraction kept {rows[4][1]['faces']}/{rows[4][1]['frames']} frames "
              f"({rows[3][1]['faces']} detecting every frame); Haar found a face in "
              f"{rows[5][1]['faces']}/{HAAR_FRAMES}")
        long_r = measure("extract1", v_long)
        print(f"peak RSS of extraction (defaults): {short} s video "
              f"{rows[3][1]['rss_mib']:.0f} MiB, {short * times} s video {long_r['rss_mib']:.0f} MiB "
              f"({long_r['ms']:.2f} ms/frame on the long one)")


if __name__ == "__main__":
    main()
