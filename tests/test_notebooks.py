"""The four notebooks: clean (no outputs, no function/class definitions) and executed headless in order.

They run on a small demo data set with the same papermill parameters mechanism a user would use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
NAMES = ["01_face_extraction", "02_augmentation", "03_training", "04_inference"]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_all_four_notebooks_exist_in_order():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean(path: Path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for i, cell in enumerate(code):
        src = "".join(cell["source"])
        assert not cell.get("outputs"), f"{path.name} code cell {i} was committed with outputs"
        assert cell.get("execution_count") is None, f"{path.name} code cell {i} has an execution count"
        assert not re.search(r"^\s*(async\s+)?(def|class)\s", src, re.MULTILINE), (
            f"{path.name} code cell {i} defines a function or class; move it into the package"
        )
        assert "lambda" not in src, f"{path.name} code cell {i} defines a lambda"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_layout(path: Path):
    cells = _cells(path)
    title = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and title.startswith("# ")
    badge = f"colab.research.google.com/github/dfdetect/dfdetect/blob/main/notebooks/{path.name}"
    assert badge in title, f"{path.name}: the Open-in-Colab badge must point at this notebook"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    install = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert "in_colab" in install or "google.colab" in install, "the install cell must run only on Colab"
    assert "torch" not in install.replace("torchvision", ""), "never reinstall Colab's torch"
    from dfdetect.colab import INSTALL_SPEC, REPOSITORY

    assert f'%pip install -q "{INSTALL_SPEC}"' in install, f"install dfdetect from {INSTALL_SPEC}"
    assert "@main" not in install, "install a released tag, not a moving branch"
    assert f"colab.research.google.com/github/{REPOSITORY.removeprefix('github.com/')}/blob/main/notebooks/{path.name}" in title
    assert "No restart is needed" in install


@pytest.fixture(scope="module")
def demo_videos(tmp_path_factory) -> Path:
    """A reduced demo data set (real faces, REAL and FAKE clips) laid out as a user's Drive folder."""
    from dfdetect.demo.dataset import build_demo_dataset

    root = tmp_path_factory.mktemp("drive")
    build_demo_dataset(root / "demo", seed=0, progress=False, frames=16, size=(192, 192),
                       video_segments=2, portrait_clips=1, videos=())
    return root


@pytest.mark.slow
def test_notebooks_run_in_order_headless(demo_videos: Path):
    """01 -> 02 -> 03 -> 04 with papermill parameters, each reading what the previous one wrote."""
    import papermill as pm

    root = demo_videos
    common = {"DATA_ROOT": str(root)}
    params = {
        "01_face_extraction": {"VIDEOS_DIR": "demo/videos", "LABELS_CSV": "demo/labels.csv",
                               "FACE_SIZE": 96},  # WORKERS: the default (1), as on Colab
        "02_augmentation": {"SELF_BLEND": 1},
        "03_training": {"FRAMES": 4, "SIZE": 64, "BACKBONE": "resnet18", "PRETRAINED": "none",
                        "HIDDEN": 32, "EPOCHS": 1, "BATCH_SIZE": 4},  # WORKERS: the default
        "04_inference": {"VIDEOS": "demo/videos", "OUT_DIR": "predictions"},
    }
    for path in NOTEBOOKS:
        out = root / f"executed_{path.name}"
        pm.execute_notebook(str(path), str(out), parameters={**common, **params[path.stem]},
                            kernel_name="python3", cwd=str(root), progress_bar=False)
    assert (root / "faces" / "manifest.csv").is_file()
    assert (root / "runs" / "resnext_lstm" / "best.pt").is_file()
    predictions = (root / "predictions" / "predictions.csv").read_text().splitlines()
    assert len(predictions) - 1 == len(list((root / "demo" / "videos").glob("*.mp4")))
    assert list((root / "predictions" / "heatmaps").glob("*.png"))
