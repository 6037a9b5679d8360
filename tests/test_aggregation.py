"""Video aggregation rules: hand-checked values, and one rule for evaluation and prediction."""

from __future__ import annotations

import numpy as np
import pytest

from dfdetect.config import ConfigError, DataConfig
from dfdetect.data.aggregation import AGGREGATES, aggregate, confident
from dfdetect.training.metrics import Predictions


def test_mean_logit_mean_median_max_by_hand():
    p = np.array([0.5, 0.9])
    assert aggregate(p, "mean") == pytest.approx(0.7)
    # logits 0 and ln 9: mean ln 3, sigmoid = 3 / 4
    assert aggregate(p, "logit_mean") == pytest.approx(0.75)
    assert aggregate([0.1, 0.2, 0.9], "median") == pytest.approx(0.2)
    assert aggregate([0.1, 0.2, 0.9], "max") == pytest.approx(0.9)


def test_confident_strategy_by_hand():
    many_fakes = np.r_[np.full(15, 0.9), np.full(17, 0.5)]  # 15 > 32 / 2.5 and > 11
    assert confident(many_fakes) == pytest.approx(0.9)
    assert aggregate(many_fakes, "mean") == pytest.approx((15 * 0.9 + 17 * 0.5) / 32)
    few_fakes = np.r_[np.full(11, 0.9), np.full(21, 0.5)]  # 11 is not > 12.8: plain mean
    assert confident(few_fakes) == pytest.approx(np.mean(few_fakes))
    mostly_real = np.r_[np.full(30, 0.1), np.full(2, 0.5)]  # 30 > 0.9 * 32
    assert confident(mostly_real) == pytest.approx(0.1)
    # the "more than 11 of 32" rule scales to 8 frames: 4 of 8 above 0.8 is enough
    assert confident(np.r_[np.full(4, 0.95), np.full(4, 0.3)]) == pytest.approx(0.95)


def test_unknown_rule_and_empty_scores_are_errors():
    with pytest.raises(ValueError, match="use one of"):
        aggregate([0.5], "vote")
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], "mean")


def test_config_accepts_exactly_the_registered_rules():
    for rule in AGGREGATES:
        assert DataConfig(aggregate=rule).aggregate == rule
    with pytest.raises(ConfigError, match="aggregate"):
        DataConfig(aggregate="vote")


def test_by_video_aggregates_frames_of_frame_level_models():
    # video a: two clips of two frames; video b: one clip
    logit = lambda p: np.log(p / (1 - p))
    frames = logit(np.array([[0.9, 0.9], [0.9, 0.1], [0.2, 0.4]]))
    preds = Predictions(np.array(["a", "a", "b"]), np.array([1, 1, 0]), frames.mean(1), frames)
    ids, labels, scores = preds.by_video(rule="max")
    assert list(ids) == ["a", "b"] and list(labels) == [1, 0]
    assert scores == pytest.approx([0.9, 0.4])
    assert preds.by_video(rule="mean")[2] == pytest.approx([0.7, 0.3])
    clips_only = Predictions(preds.video_ids, preds.labels, preds.logits)
    assert clips_only.by_video(rule="max")[2][1] == pytest.approx(1 / (1 + np.exp(-frames[2].mean())))
