"""Metrics (video-level aggregation, DFDC log loss, calibration) and the figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dfdetect import viz as plots
from dfdetect.training.metrics import (
    Predictions,
    binary_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability,
    video_metrics,
)


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def test_binary_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.2, 0.8, 0.4])
    m = binary_metrics(labels, scores)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]  # rows true REAL/FAKE, cols predicted
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (fake, real) pairs ordered right
    ll_fake = -np.mean(np.log([0.8, 0.4]))
    ll_real = -np.mean(np.log([0.9, 0.4, 0.8]))
    assert m["log_loss"] == pytest.approx((2 * ll_fake + 3 * ll_real) / 5)
    assert m["balanced_log_loss"] == pytest.approx((ll_fake + ll_real) / 2)
    assert m["n"] == 5 and m["n_fake"] == 2


def test_one_class_gives_nan_auc_not_an_error():
    m = binary_metrics(np.array([1, 1]), np.array([0.7, 0.9]))
    assert math.isnan(m["auc"]) and math.isnan(m["balanced_log_loss"]) and m["accuracy"] == 1.0


def test_confident_wrong_answers_are_clipped_not_infinite():
    m = binary_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 10


def test_video_level_aggregation_is_mean_probability_per_video_id():
    preds = Predictions(video_ids=np.array(["b", "a", "b", "c"]), labels=np.array([1, 0, 1, 0]),
                        logits=_logit([0.9, 0.2, 0.45, 0.4]))
    ids, labels, scores = preds.by_video()
    assert ids.tolist() == ["a", "b", "c"] and labels.tolist() == [0, 1, 0]
    assert scores == pytest.approx([0.2, 0.675, 0.4])
    m = video_metrics(preds)
    assert m["n"] == 3 and m["clip_n"] == 4  # several clips per video: clip-level too
    assert m["accuracy"] == 1.0 and m["clip_accuracy"] == pytest.approx(3 / 4)


def test_one_clip_per_video_has_no_clip_metrics():
    preds = Predictions(np.array(["a", "b"]), np.array([0, 1]), _logit([0.3, 0.8]))
    m = video_metrics(preds)
    assert "clip_auc" not in m and m["auc"] == 1.0
    assert m["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)


def test_conflicting_labels_within_a_video_raise():
    preds = Predictions(np.array(["a", "a"]), np.array([0, 1]), np.zeros(2))
    with pytest.raises(ValueError, match="different labels"):
        preds.by_video()


def test_ece_zero_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < probs).astype(int)
    assert expected_calibration_error(labels, probs) < 0.02
    over = np.where(probs > 0.5, 0.99, 0.01)
    assert expected_calibration_error(labels, over) > 0.2
    r = reliability(labels, probs, bins=5)
    assert r["count"].sum() == 20000 and len(r["confidence"]) == 5


def test_temperature_scaling_undoes_overconfidence():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, 5000)
    labels = (rng.uniform(size=5000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    logits = 3.0 * true_logits  # an overconfident model
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    preds = Predictions(np.arange(5000).astype(str), labels, logits)
    m = video_metrics(preds, calibrated=t)
    assert m["ece_calibrated"] < m["ece"] / 2 and m["log_loss_calibrated"] < m["log_loss"]


def test_temperature_needs_both_classes():
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1, 1])) == 1.0


def _history() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.3], "val_loss": [0.7, 0.6, 0.5],
                         "train_accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.5, 0.6, 0.8],
                         "train_auc": [0.5, 0.8, 0.95], "val_auc": [0.5, 0.7, 0.9]})


def test_figures_are_returned_and_saved_as_png(tmp_path):
    import matplotlib.pyplot as plt

    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.2, 0.6, 0.7, 0.9, 0.4])
    figs = {
        "curves": plots.training_curves(_history()),
        "cm": plots.confusion_matrix_figure(binary_metrics(labels, scores)["confusion_matrix"]),
        "roc": plots.roc_figure(labels, scores),
        "roc1": plots.roc_figure(np.array([1, 1]), np.array([0.2, 0.3])),
        "rel": plots.reliability_figure({"model": reliability(labels, scores),
                                         "T = 2": reliability(labels, scores ** 2)}),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []  # nothing registered with pyplot: no global figure state
    assert len(figs["curves"].axes) == 3 and len(figs["curves"].axes[0].lines) == 2
    assert [t.get_text() for t in figs["cm"].axes[0].texts] == ["1", "1", "1", "2"]
    assert "AUC = 0.833" in figs["roc"].axes[0].get_legend().get_texts()[0].get_text()


def test_clip_figure_undoes_normalisation():
    import torch

    from dfdetect.config import DataConfig

    cfg = DataConfig(frames=12, size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    rgb = np.linspace(0, 1, 12 * 3 * 16 * 16, dtype=np.float32).reshape(12, 3, 16, 16)
    mean, std = np.array(cfg.mean)[:, None, None], np.array(cfg.std)[:, None, None]
    item = {"frames": torch.from_numpy(((rgb - mean) / std).astype(np.float32)),
            "label": torch.tensor(1), "video_id": "v7"}
    fig = plots.clip_figure(item, cfg, columns=5)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 12 and len(fig.axes) == 15  # 3 rows of 5
    np.testing.assert_allclose(shown[3].images[0].get_array(), rgb[3].transpose(1, 2, 0), atol=1e-5)
    assert fig._suptitle.get_text().startswith("v7: FAKE")


def test_face_grid_shows_usable_face_videos(tmp_path):
    from face_fixtures import write_face_dataset

    rows = [{"video_id": f"v{i}", "portrait": "obama.jpg", "label": "REAL" if i else "FAKE",
             "group": f"g{i}", "frames": 6, "size": 64} for i in range(3)]
    rows.append({"video_id": "bad", "portrait": "obama.jpg", "label": "REAL", "group": "b",
                 "status": "no_face"})
    fig = plots.face_grid(write_face_dataset(tmp_path, rows), count=12, columns=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split("\n") for ax in shown] == [["v0", "FAKE"], ["v1", "REAL"], ["v2", "REAL"]]
    assert shown[0].images[0].get_array().shape == (64, 64, 3)


def test_ap_eer_and_accuracy_at_threshold_by_hand():
    # ranked by score: F F R F R R. AUC: 8 of 9 (FAKE, REAL) pairs ordered.
    # AP: precision 1, 1, then 3/4 at the three FAKEs -> (1 + 1 + 0.75) / 3.
    # EER: at threshold 0.7 one REAL of three passes and one FAKE of three is missed -> 1/3.
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
    m = binary_metrics(labels, scores)
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["ap"] == pytest.approx(2.75 / 3)
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(5 / 6)  # 0.7 is called FAKE at 0.5
    assert binary_metrics(labels, scores, threshold=0.75)["accuracy"] == pytest.approx(5 / 6)
    assert binary_metrics(labels, scores, threshold=0.65)["accuracy"] == pytest.approx(4 / 6)
    assert m["std"] == pytest.approx(np.std(scores))
    assert binary_metrics(labels, np.full(6, 0.3))["std"] == 0.0  # a constant model


def test_perfect_and_inverted_rankings_give_eer_0_and_1():
    labels = np.array([0, 0, 1, 1])
    assert binary_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))["eer"] == pytest.approx(0.0)
    assert binary_metrics(labels, np.array([0.9, 0.8, 0.2, 0.1]))["eer"] == pytest.approx(1.0)


def test_frame_level_metrics_count_every_frame():
    frames = _logit(np.array([[0.9, 0.2], [0.3, 0.4], [0.6, 0.7]]))  # FAKE, REAL, FAKE
    preds = Predictions(np.array(["a", "b", "c"]), np.array([1, 0, 1]), frames.mean(1), frames)
    m = video_metrics(preds)
    assert m["frame_n"] == 6
    # frames: FAKE .9 .2 .6 .7 vs REAL .3 .4: pairs ordered 3 + 3 + 0 (0.2 below both) + ...
    assert m["frame_auc"] == pytest.approx(6 / 8)
    assert m["auc"] == pytest.approx(1.0)  # video means .55, .35, .65
