"""Tiny configs and data sets shared by the training tests (test helper, not a test module).

``TINY_MODEL`` is the smallest detector the tests build (ResNet-18 from scratch, 8 hidden units);
``tiny_cfg``/``tiny_sets`` a 3-epoch run on synthetic clips whose FAKEs carry a bright square.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dfdetect.config import DataConfig, ModelConfig, RunConfig, TrainConfig

TINY_MODEL = ModelConfig(backbone="resnet18", pretrained="none", hidden=8, dropout=0.0)


class ClipSet(Dataset):
    """Tiny clips in FrameSequenceDataset's item format; FAKE clips carry a bright square.

    ``train=True`` adds noise from torch's global RNG (like on-the-fly augmentation), so exact
    resumption is only possible if the engine restores RNG streams correctly.
    """

    def __init__(self, n: int, seed: int, train: bool = False, clips_per_video: int = 1,
                 t: int = 4, size: int = 32) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        self.frames = torch.randn(n, t, 3, size, size, generator=g) * 0.5
        for i, y in enumerate(self.labels):
            if y:
                self.frames[i, :, :, 8:20, 8:20] += 2.0
        self.ids = [f"s{seed}_v{i // clips_per_video}" for i in range(n)]
        self.train = train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        frames = self.frames[i]
        if self.train:
            frames = frames + 0.1 * torch.randn_like(frames)
        return {"frames": frames, "label": torch.tensor(self.labels[i]), "video_id": self.ids[i]}


def tiny_cfg(**train) -> RunConfig:
    return RunConfig(
        data=DataConfig(frames=4, size=32, balance="none"),
        model=ModelConfig(backbone="mobilenet_v3_small", pretrained="none", hidden=8, dropout=0.2),
        train=TrainConfig(**{"epochs": 3, "batch_size": 4, "lr": 3e-3, "workers": 0, "patience": 0,
                             "warmup_epochs": 0.5, **train}),
    )


def tiny_sets() -> dict:
    return {"train": ClipSet(16, 1, train=True), "val": ClipSet(8, 2), "test": ClipSet(8, 3)}
