"""`python -m dfdetect ...`: parses flags and calls the library; no logic of its own.

Each sub-command has one ``_add_<name>`` function (its flags) and one ``_run_<name>``
function (the library call). Library modules are imported inside ``_run_*`` so that
``--help`` is instant and a broken optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from dfdetect import __version__

Runner = Callable[[argparse.Namespace], int]


def _add_extract(sub: argparse._SubParsersAction) -> Runner:
    p = sub.add_parser("extract", help="crop faces from every video into face videos + manifest.csv")
    p.add_argument("videos", help="folder of videos (searched recursively) or one video file")
    p.add_argument("out", help="output folder: OUT/faces/*.mp4 and OUT/manifest.csv")
    p.add_argument("--labels", help="labels CSV (file,label[,group][,split]) relative to VIDEOS")
    p.add_argument("--size", type=int, default=224, help="face crop side in pixels (default 224)")
    p.add_argument("--margin", type=float, default=0.3, help="border around the box (default 0.3)")
    p.add_argument("--detector", choices=["full", "short"], default="full",
                   help="BlazeFace model: full-range (default) or short-range (close-ups only)")
    p.add_argument("--detect-every", type=int, default=1, help="detect every k-th frame, track between")
    p.add_argument("--max-gap", type=int, default=5, help="longest gap (frames) bridged by interpolation")
    p.add_argument("--keep", choices=["largest", "most_confident"], default="largest",
                   help="which face track is the video's face")
    p.add_argument("--all-tracks", action="store_true", help="also write every other face track")
    p.add_argument("--frames", type=int, default=0,
                   help="N>0: take N frames evenly spaced; 0 (default): every frame")
    p.add_argument("--max-frames", type=int, default=0, help="with every frame: stop after this many")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--shard", help="i/n: process only the i-th of n parts (0-based), own manifest part")
    return _run_extract


def _run_extract(a: argparse.Namespace) -> int:
    from dfdetect.config import ExtractConfig, FaceConfig
    from dfdetect.extract import process_videos

    face = FaceConfig(model=a.detector, margin=a.margin, size=a.size, max_gap=a.max_gap,
                      detect_every=a.detect_every, keep_track=a.keep, all_tracks=a.all_tracks)
    ext = ExtractConfig(sampling="uniform" if a.frames else "all", num_frames=a.frames or 32,
                        max_frames=a.max_frames)
    df = process_videos(a.videos, a.out, labels_csv=a.labels, face_cfg=face, extract_cfg=ext,
                        workers=a.workers, shard=a.shard)
    counts = df["status"].value_counts().to_dict()
    print(f"faces written under {a.out}; status counts: {counts}")
    return 0 if (df["status"] == "ok").any() else 1


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
    try:
        return runners[args.command](args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # our errors say what to do; a traceback would only hide that (use -v for it)
        if args.verbose:
            raise
        print(f"dfdetect {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
