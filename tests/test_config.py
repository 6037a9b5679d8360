"""config.py: strict loading, round trips, atomic JSON."""

from __future__ import annotations

import pytest

from dfdetect.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    from_dict,
    load_json,
    replace,
    save_json,
    to_dict,
)


def test_roundtrip_through_plain_dict_and_json(tmp_path):
    cfg = replace(RunConfig(), data=DataConfig(frames=8, size=160))
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    save_json(cfg, tmp_path / "config.json")
    assert load_json(RunConfig, tmp_path / "config.json") == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="'fames'"):
        from_dict(DataConfig, {"fames": 10})
    with pytest.raises(ConfigError, match="'optimiser'"):
        from_dict(RunConfig, {"train": {"optimiser": "sgd"}})
    with pytest.raises(ConfigError, match="'sise'"):
        replace(DataConfig(), sise=3)


def test_partial_dicts_keep_defaults():
    cfg = from_dict(RunConfig, {"model": {"hidden": 64}})
    assert cfg.model.hidden == 64 and cfg.model.backbone == "resnext50_32x4d"
    assert cfg.data == DataConfig()
