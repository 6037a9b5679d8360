"""The installed environment: OpenCV, dependency consistency, the CLI and the shipped models."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CV2_USE = re.compile(r"\bcv2\.([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])")


def _cv2_names() -> set[str]:
    """Every ``cv2.<name>`` the package and the benchmarks use (read from their source)."""
    files = [*(ROOT / "dfdetect").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    return {m for f in files for m in CV2_USE.findall(f.read_text(encoding="utf-8"))}


def test_cv2_imports_and_has_what_we_use():
    import cv2

    names = _cv2_names()
    assert {"resize", "cvtColor", "INTER_AREA"} <= names  # the scan itself works
    missing = []
    for dotted in sorted(names):
        obj = cv2
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(dotted)
    assert not missing, f"cv2 {cv2.__version__} lacks {missing}"
    assert Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml").is_file()


def test_one_opencv_distribution():
    # opencv-python, -headless and -contrib all write cv2/: two installed break each other
    dists = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    opencv = sorted(d for d in dists if d.startswith("opencv"))
    assert opencv == ["opencv-contrib-python"], opencv


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                         check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_help_lists_every_subcommand():
    from dfdetect.cli import build_parser

    out = subprocess.run([sys.executable, "-m", "dfdetect", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    commands = set(build_parser()[1])
    assert {"extract", "merge"} <= commands
    for name in commands:
        assert re.search(rf"^\s+{name}\s", out.stdout, re.MULTILINE), f"{name} missing from --help"


@pytest.mark.parametrize("name", ["face_detection_full_range_sparse.tflite",
                                  "face_detection_short_range.tflite"])
def test_models_ship_inside_the_package_unchanged(name):
    assets = resources.files("dfdetect").joinpath("assets")
    readme = assets.joinpath("README.md").read_text(encoding="utf-8")
    expected = re.search(rf"\| {re.escape(name)} \|.*\| ([0-9a-f]{{64}}) \|", readme).group(1)
    assert hashlib.sha256(assets.joinpath(name).read_bytes()).hexdigest() == expected
    assert "Apache License" in assets.joinpath("LICENSE-mediapipe-Apache-2.0.txt").read_text()


def test_import_has_no_side_effects_and_public_names_resolve():
    """`import dfdetect` changes nothing (environment, sys.path, logging) and loads no LiteRT,
    MediaPipe or TensorFlow (LiteRT is loaded only when a FaceCropper is made); every public name exists."""
    # third-party imports set variables of their own (cv2: QT_*, torch: KMP_*): import them first
    code = ("import logging, os, sys, av, cv2, matplotlib, pandas, torch, torchvision; "
            "env, path = dict(os.environ), list(sys.path); "
            "handlers = list(logging.getLogger().handlers); import dfdetect; "
            "assert dict(os.environ) == env and sys.path == path, 'environment changed'; "
            "assert logging.getLogger().handlers == handlers, 'logging configured'; "
            "heavy = [m for m in ('ai_edge_litert', 'mediapipe', 'tensorflow') if m in sys.modules]; "
            "assert not heavy, heavy; [getattr(dfdetect, n) for n in dfdetect.__all__]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_code_is_ruff_clean():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                          "dfdetect", "tests", "bench"], cwd=root, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
