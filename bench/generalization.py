"""The study behind the demo's recipe: leave-people-out video AUC of training variants.

Reuses a finished demo folder (``python -m dfdetect demo OUT`` first: its ``data/`` and
``faces/``) and trains every variant in every leave-people-out fold with the same time
budget, then prints one table: per variant and seed the pooled video AUC (every video scored by
the fold that held its person out), the mean and spread of the per-fold AUCs, and the score
std. Variants: scratch vs offline-pretrained (supervised); supervised vs self-blend only
(REAL clips and their self-blends, no demo FAKE in training) vs both; two frame sizes.

    python bench/generalization.py DEMO_OUT [--budget 20] [--seeds 0] [--variants a,b]

Results are appended to ``DEMO_OUT/study/results.jsonl`` (a rerun skips finished runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dfdetect.config import replace
from dfdetect.demo.dataset import build_demo_dataset
from dfdetect.demo.folds import people_folds
from dfdetect.demo.run import DemoConfig, summary, train_fold
from dfdetect.training.metrics import binary_metrics

VARIANTS = {  # name -> (model changes, data changes, FAKE kinds kept in train/val)
    "scratch": ({"pretrained": "none"}, {}, None),
    "pretrained": ({}, {}, None),
    "self-blend only": ({}, {"self_blend_prob": 0.5, "balance": "none"}, ()),
    "supervised + self-blend": ({}, {"self_blend_prob": 0.3}, None),
    "pretrained 160 px": ({}, {"size": 160}, None),
}


def run_variant(out: Path, name: str, seed: int, budget: float) -> dict:
    cfg = DemoConfig()
    demo = build_demo_dataset(out / "data", seed=cfg.seed, progress=False, frames=cfg.clip_frames)
    model_ch, data_ch, kinds = VARIANTS[name]
    run = replace(cfg.run, model=replace(cfg.run.model, **model_ch),
                  data=replace(cfg.run.data, **data_ch),
                  train=replace(cfg.run.train, time_budget=budget, seed=seed))
    manips = None if kinds is None else {"train": kinds, "val": ("swap", "reenact")}
    scores, aucs = [], []
    for fold in people_folds(demo.table, k=cfg.folds, seed=cfg.seed):
        tag = f"{name.replace(' ', '_').replace('+', 'and')}_s{seed}_b{budget:g}_f{fold.index}"
        _, s = train_fold(out, demo, fold, run, manipulations=manips, name=tag,
                          runs=out / "study", progress=False)
        scores.append(s)
        aucs.append(binary_metrics(s["label"].to_numpy(), s["score"].to_numpy())["auc"])
    pooled = summary(pd.concat(scores, ignore_index=True))
    return {"variant": name, "seed": seed, "budget": budget, "pooled_auc": pooled["auc"],
            "fold_auc_mean": float(np.mean(aucs)), "fold_auc_std": float(np.std(aucs)),
            "fold_aucs": aucs, "score_std": pooled["std"], "ap": pooled["ap"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo_out", type=Path)
    p.add_argument("--budget", type=float, default=20.0, help="training seconds per fold")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    a = p.parse_args()
    log = a.demo_out / "study" / "results.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    for name in a.variants.split(","):
        for seed in map(int, a.seeds.split(",")):
            if any(r["variant"] == name and r["seed"] == seed and r["budget"] == a.budget
                   for r in done):
                continue
            row = run_variant(a.demo_out, name, seed, a.budget)
            done.append(row)
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    table = pd.DataFrame([r for r in done if r["budget"] == a.budget])
    cols = ["variant", "seed", "pooled_auc", "fold_auc_mean", "fold_auc_std", "score_std", "ap"]
    print(f"\nleave-people-out video AUC, {a.budget:g} s of training per fold, 4 folds")
    print(table[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
