"""`python -m dfdetect ...`: parses flags and calls the library; no logic of its own.

Each sub-command has one ``_add_<name>`` function (its flags) and one ``_run_<name>``
function (the library call). Library modules are imported inside ``_run_*`` so that
``--help`` is instant and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from dfdetect import __version__
from dfdetect.augment.copies import augment_manifest
from dfdetect.config import (
    DataConfig,
    ExtractConfig,
    FaceConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    replace,
    to_dict,
)
from dfdetect.data.aggregation import AGGREGATES
from dfdetect.demo.run import DemoConfig, run_demo
from dfdetect.extraction.pipeline import merge_parts, process_videos
from dfdetect.inference.folder import list_videos, predict_folder
from dfdetect.inference.predictor import FAKE, REAL
from dfdetect.models.backbones import list_backbones
from dfdetect.models.checkpoint import export_model
from dfdetect.training.fit import LAST, fit

Runner = Callable[[argparse.Namespace], int]
_PROGRESS: dict[str, str] = {}  # "done": what the running command finished, for Ctrl-C's line


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value
    return parse


def _even_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int_at_least(low)(text)
        if value % 2:
            raise argparse.ArgumentTypeError(f"{value} is odd; H.264 needs an even size")
        return value
    return parse


def _float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {'(' if low_open else '['}"
                                             f"{low}, {high}]")
        return value
    return parse


def _add_extract(sub: argparse._SubParsersAction) -> Runner:

    f, e = FaceConfig(), ExtractConfig()  # the defaults shown here are the configs' own
    p = sub.add_parser("extract", help="crop faces from every video into face videos + manifest.csv")
    p.add_argument("videos", help="folder of videos (searched recursively) or one video file")
    p.add_argument("out", help="output folder: OUT/faces/*.mp4 and OUT/manifest.csv")
    p.add_argument("--labels", help="labels CSV (file,label[,group][,split]); its own path is relative to the "
                   "working directory, the file paths in it are relative to VIDEOS")
    p.add_argument("--size", type=_even_at_least(2), default=f.size,
                   help=f"face crop side in pixels, even ({f.size})")
    p.add_argument("--margin", type=_float_in(0.0, 10.0), default=f.margin,
                   help=f"border around the box, fraction of its side ({f.margin})")
    p.add_argument("--detector", choices=["full", "short"], default=f.model,
                   help="BlazeFace model: full-range (default) or short-range (close-ups only)")
    p.add_argument("--min-score", type=_float_in(0.0, 1.0), default=f.min_score,
                   help=f"detector confidence threshold, in [0, 1] ({f.min_score})")
    p.add_argument("--detect-every", type=_int_at_least(1), default=f.detect_every,
                   help=f"detect every k-th frame, track between; k <= max-gap + 1 ({f.detect_every})")
    p.add_argument("--max-gap", type=_int_at_least(0), default=f.max_gap,
                   help=f"longest gap (frames) bridged by interpolation ({f.max_gap})")
    p.add_argument("--keep", choices=["largest", "most_confident"], default=f.keep_track,
                   help="which face track is the video's face")
    p.add_argument("--all-tracks", action="store_true", help="also write every other face track")
    p.add_argument("--min-track-frames", type=_int_at_least(1), default=f.min_track_frames,
                   help=f"shortest extra track written with --all-tracks ({f.min_track_frames})")
    p.add_argument("--frames", type=_int_at_least(0), default=0,
                   help="N>0: take N frames evenly spaced; 0 (default): every frame")
    p.add_argument("--max-frames", type=_int_at_least(0), default=e.max_frames,
                   help="with every frame: stop after this many (0 = all)")
    p.add_argument("--min-face-frames", type=_int_at_least(1), default=e.min_face_frames,
                   help=f"fewer face frames -> status no_face ({e.min_face_frames})")
    p.add_argument("--workers", type=_int_at_least(1), default=1, help="parallel processes (default 1)")
    p.add_argument("--shard", help="i/n: process only the i-th of n parts (0-based), own manifest "
                   "part; then `dfdetect merge OUT`")
    return _run_extract


def _run_extract(a: argparse.Namespace) -> int:

    face = FaceConfig(model=a.detector, min_score=a.min_score, margin=a.margin, size=a.size,
                      max_gap=a.max_gap, detect_every=a.detect_every, keep_track=a.keep,
                      all_tracks=a.all_tracks, min_track_frames=a.min_track_frames)
    ext = ExtractConfig(sampling="uniform" if a.frames else "all",
                        num_frames=a.frames or ExtractConfig().num_frames,
                        max_frames=a.max_frames, min_face_frames=a.min_face_frames)
    df = process_videos(a.videos, a.out, labels_csv=a.labels, face_cfg=face, extract_cfg=ext,
                        workers=a.workers, shard=a.shard)
    counts = df["status"].value_counts().to_dict()
    print(f"faces written under {a.out}; status counts: {counts}")
    failed = int((df["status"] == "failed").sum())
    if failed:  # not the videos' fault (permissions, a link loop): the batch is not finished
        print(f"dfdetect extract: {failed} video(s) failed (see the error column of "
              f"{a.out}/manifest.csv); fix the cause and rerun to retry them", file=sys.stderr)
        return 1
    return 0 if (df["status"] == "ok").any() else 1


def _add_merge(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("merge", help="merge the manifest parts of `extract --shard i/n` runs")
    p.add_argument("out", help="extraction output folder holding manifest.part-<i>-of-<n>.csv")
    return _run_merge


def _run_merge(a: argparse.Namespace) -> int:

    df = merge_parts(a.out)
    print(f"{len(df)} rows merged into {a.out}/manifest.csv; "
          f"status counts: {df['status'].value_counts().to_dict()}")
    return 0


def _add_augment(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("augment", help="add augmented REAL (or self-blended FAKE) copies to a manifest")
    p.add_argument("manifest", help="manifest.csv written by `dfdetect extract` (updated in place)")
    p.add_argument("--ratio", type=float, default=1.0,
                   help="target REAL:FAKE ratio reached by adding copies (default 1.0 = balanced)")
    p.add_argument("--per-video", type=int, default=0,
                   help="N>0: exactly N copies of every REAL video instead of a ratio")
    p.add_argument("--self-blend", action="store_true",
                   help="add self-blended FAKE copies of REAL videos (e.g. for REAL-only data)")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality of written face videos")
    return _run_augment


def _run_augment(a: argparse.Namespace) -> int:

    df = augment_manifest(a.manifest, ratio=a.ratio, per_video=a.per_video,
                          self_blend=a.self_blend, seed=a.seed, crf=a.crf)
    ok = df[df["status"] == "ok"]
    print(f"{a.manifest}: {ok['label'].value_counts().to_dict()} usable rows "
          f"({(df['source'] == 'augment').sum()} augmented, "
          f"{(df['source'] == 'self_blend').sum()} self-blended)")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("predict", help="score raw videos: one JSON line per video, OUT/predictions.csv")
    p.add_argument("videos", help="a video file or a folder of videos (searched recursively)")
    p.add_argument("--checkpoint", required=True,
                   help="RUN/best.pt or an exported model.safetensors; the face crop, clip length "
                   "and normalisation all come from it")
    p.add_argument("--out", help="write OUT/predictions.csv and, with --heatmaps, "
                   "OUT/heatmaps/<name>.png (an earlier run there is moved to OUT/previous/<time>/)")
    p.add_argument("--heatmaps", action="store_true",
                   help="Grad-CAM grid of the frames used, per video (needs --out)")
    p.add_argument("--heatmap-video", action="store_true", help="also OUT/heatmaps/<name>.mp4")
    p.add_argument("--threshold", type=_float_in(0.0, 1.0), default=0.5,
                   help="FAKE when P(fake) >= this, in [0, 1] (0.5)")
    p.add_argument("--clips", type=_int_at_least(0), default=0,
                   help="clips per face: 0 (default) = one per 15*T frames, at most 4")
    p.add_argument("--aggregate", choices=list(AGGREGATES), default=None,
                   help="how frame/clip scores make the video score (default: the checkpoint's, "
                   "mean of P(fake))")
    p.add_argument("--tta-flip", action="store_true",
                   help="also score every clip mirrored and average (about 2x the model time)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return _run_predict


def _run_predict(a: argparse.Namespace) -> int:
    import json

    done = [0]
    total = len(list_videos(a.videos, exclude=a.out))
    _PROGRESS["done"] = f"0 of {total} videos"

    def show(result) -> None:
        print(json.dumps(result.to_dict()), flush=True)
        done[0] += 1
        saved = f"; their rows are in {a.out}/predictions.csv" if a.out else ""
        _PROGRESS["done"] = f"{done[0]} of {total} videos{saved}"

    df = predict_folder(a.videos, a.checkpoint, a.out, heatmaps=a.heatmaps,
                        heatmap_video=a.heatmap_video, progress=not a.no_progress,
                        device=a.device, on_result=show, threshold=a.threshold,
                        clips=a.clips or None, aggregate=a.aggregate, tta_flip=a.tta_flip)
    if a.out:
        print(f"{len(df)} prediction(s) written to {a.out}/predictions.csv", file=sys.stderr)
    return 0 if df["label"].isin([REAL, FAKE]).any() else 1  # no verdict at all: failure


def _add_train(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("train", help="train the detector on a manifest: RUN_DIR/best.pt, last.pt, "
                       "history.csv, metrics.json and figures")
    p.add_argument("manifest", help="manifest.csv from extract/augment (rows without a split are "
                   "split by group)")
    p.add_argument("run_dir", help="output folder (also where --resume looks for last.pt)")
    p.add_argument("--config", help="JSON of RunConfig fields (e.g. an earlier RUN_DIR/config.json); "
                   "the flags below override it. With --resume: RUN_DIR/config.json by default")
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()  # the defaults shown are the configs'
    p.add_argument("--epochs", type=_int_at_least(0), help=f"maximum epochs (default {t.epochs})")
    p.add_argument("--batch-size", type=_int_at_least(1),
                   help=f"clips per step, per GPU (default {t.batch_size})")
    p.add_argument("--lr", type=_float_in(0.0, 1.0, low_open=True),
                   help=f"AdamW peak learning rate (default {t.lr:g})")
    p.add_argument("--backbone-lr-scale", type=_float_in(0.0, 1.0), help="backbone learning rate = "
                   f"lr * this (default {t.backbone_lr_scale:g}; fine-tuning pretrained weights: 0.1)")
    p.add_argument("--freeze-backbone-epochs", type=_int_at_least(0), help="train only the LSTM and "
                   f"head for the first N epochs (default {t.freeze_backbone_epochs})")
    p.add_argument("--frames", type=_int_at_least(1), help=f"frames per clip, T (default {d.frames})")
    p.add_argument("--size", type=_int_at_least(16),
                   help=f"frame side fed to the model, pixels, >= 16 (default {d.size})")
    p.add_argument("--backbone", help=f"a registered backbone (default {m.backbone}): "
                   f"{', '.join(list_backbones())}")
    p.add_argument("--pretrained", metavar="SOURCE", help=f"backbone weights: imagenet (download), "
                   f"offline (efficientnet_lite0, no download), none, or a .pth/.safetensors PATH "
                   f"(default {m.pretrained})")
    p.add_argument("--freeze-bn", action="store_true", default=None,
                   help="keep the backbone's BatchNorm statistics fixed (small batches)")
    p.add_argument("--hidden", type=_int_at_least(1), help=f"LSTM hidden size (default {m.hidden})")
    p.add_argument("--temporal", choices=["lstm", "none"], help="LSTM over the frames, or none: "
                   f"a frame-level model whose clip logit is the frames' mean (default {m.temporal})")
    p.add_argument("--frozen-layers", type=_int_at_least(0), help="first N backbone stages kept "
                   f"frozen (default {m.frozen_layers})")
    p.add_argument("--train-frames", type=_int_at_least(0), help="frames per training clip "
                   f"(0 = --frames; default {d.train_frames})")
    p.add_argument("--aggregate", choices=list(AGGREGATES),
                   help=f"video score from frame/clip scores (default {d.aggregate})")
    p.add_argument("--time-budget", type=_float_in(0.0, 1e7), help="stop training after this "
                   f"many seconds; the LR schedule ends with it (0 = off; default {t.time_budget:g})")
    p.add_argument("--steps-per-epoch", type=_int_at_least(0), help="batches per epoch drawn "
                   f"from train (0 = one pass; default {t.steps_per_epoch})")
    p.add_argument("--warmup-steps", type=_int_at_least(0), help="LR warm-up in steps (0 = "
                   f"warmup_epochs; default {t.warmup_steps})")
    p.add_argument("--workers", type=_int_at_least(0), help=f"DataLoader workers (default {t.workers})")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt")
    p.add_argument("--self-blend-prob", type=float, help="chance a REAL training clip is "
                   f"self-blended into a FAKE (default {d.self_blend_prob:g})")
    p.add_argument("--balance", choices=["sampler", "batch", "loss", "none"],
                   help=f"class imbalance handling (default {d.balance}; batch: half FAKE per batch)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision (auto)")
    p.add_argument("--seed", type=int, help=f"model initialisation and sampling seed (default {t.seed})")
    p.add_argument("--device", help="torch device (default: this rank's GPU, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return _run_train


# train flag -> (RunConfig section, field)
_TRAIN_FLAGS = {
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "frames": ("data", "frames"), "size": ("data", "size"), "backbone": ("model", "backbone"),
    "pretrained": ("model", "pretrained"), "hidden": ("model", "hidden"),
    "freeze_bn": ("model", "freeze_bn"), "backbone_lr_scale": ("train", "backbone_lr_scale"),
    "freeze_backbone_epochs": ("train", "freeze_backbone_epochs"),
    "workers": ("train", "workers"), "self_blend_prob": ("data", "self_blend_prob"),
    "balance": ("data", "balance"), "amp": ("train", "amp"), "seed": ("train", "seed"),
    "temporal": ("model", "temporal"), "frozen_layers": ("model", "frozen_layers"),
    "train_frames": ("data", "train_frames"), "aggregate": ("data", "aggregate"),
    "time_budget": ("train", "time_budget"), "steps_per_epoch": ("train", "steps_per_epoch"),
    "warmup_steps": ("train", "warmup_steps"),
}


def _run_train(a: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    config = a.config
    if config is None and a.resume and (Path(a.run_dir) / "config.json").is_file():
        config = Path(a.run_dir) / "config.json"
    cfg = to_dict(from_dict(RunConfig, json.loads(Path(config).read_text()) if config else {}))
    for flag, (section, name) in _TRAIN_FLAGS.items():
        if getattr(a, flag) is not None:
            cfg[section][name] = getattr(a, flag)
    run_cfg = from_dict(RunConfig, cfg)  # ConfigError (one line) names a bad field

    def step(epoch: int, n: int) -> None:
        _PROGRESS["done"] = (f"epoch {epoch} of {run_cfg.train.epochs} (step {n}); "
                             f"{a.run_dir}/{LAST} holds the last finished epoch: continue with --resume")

    _PROGRESS["done"] = f"epoch 0 of {run_cfg.train.epochs}"
    result = fit(a.manifest, a.run_dir, run_cfg, resume=a.resume,
                 device=a.device, progress=not a.no_progress, on_step=step)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    scores = result["test"] or result["val"]
    split = "test" if result["test"] else "val"
    print(f"best epoch {result['best_epoch']}: {split} AUC {scores['auc']}, accuracy "
          f"{scores['accuracy']:.3f}, log loss {scores['log_loss']:.4f}; see {a.run_dir}/metrics.json")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("export", help="turn a training checkpoint into OUT/NAME.safetensors + "
                       "OUT/NAME.json (weights and config) for sharing")
    p.add_argument("checkpoint", help="RUN_DIR/best.pt (or last.pt)")
    p.add_argument("out", help="output folder")
    p.add_argument("--name", default="model", help="file name stem (default: model)")
    return _run_export


def _run_export(a: argparse.Namespace) -> int:

    weights, config = export_model(a.checkpoint, a.out, a.name)
    print(f"wrote {weights} and {config}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("demo", help="the whole pipeline offline on a demo set built from the shipped faces")
    p.add_argument("out", nargs="?", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--budget", type=_float_in(1.0, 3600.0), default=None,
                   help=f"training seconds per fold (default {DemoConfig().run.train.time_budget:g})")
    return _run_demo


def _run_demo(a: argparse.Namespace) -> int:

    cfg = DemoConfig(seed=a.seed)
    if a.budget:
        cfg = DemoConfig(seed=a.seed, run=replace(cfg.run, train=replace(cfg.run.train,
                                                                         time_budget=a.budget)))
    run_demo(a.out, cfg)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    """The argument parser and the runner of each sub-command."""
    parser = argparse.ArgumentParser(prog="dfdetect", description="Deepfake video detection.")
    parser.add_argument("--version", action="version", version=f"dfdetect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for add in _COMMANDS:
        runner = add(sub)
        runners[runner.__name__.removeprefix("_run_")] = runner
    return parser, runners


_COMMANDS: list[Callable[[argparse._SubParsersAction], Runner]] = [
    _add_extract,
    _add_merge,
    _add_augment,
    _add_predict,
    _add_train,
    _add_export,
    _add_demo,
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dfdetect`` and the ``dfdetect`` script; returns the exit status."""
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    _PROGRESS.clear()
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        done = _PROGRESS.get("done", "")
        print(f"dfdetect {args.command}: interrupted" + (f" after {done}" if done else ""),
              file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as err:
        # our errors say what to do; a traceback would only hide that (use -v for it)
        if args.verbose:
            raise
        print(f"dfdetect {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1


_OS_ADVICE = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EEXIST: "a file is in the way of a folder: choose another path or move that file",
    errno.ENOTDIR: "a file is in the way of a folder: choose another path or move that file",
    errno.EISDIR: "a folder is where a file was expected: give the file's path",
}


def _one_line(err: BaseException) -> str:
    """The error as one line: ``PATH: reason; what to do`` for OS errors."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        advice = _OS_ADVICE.get(err.errno or 0, "")
        text = f"{where}{err.strerror}" + (f"; {advice}" if advice and advice not in err.strerror else "")
    else:
        text = str(err)
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
