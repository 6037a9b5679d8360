"""DataLoaders over clips: class balance, per-worker seeding, spawn workers."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from dfdetect.media.files import mp_context

log = logging.getLogger(__name__)

BALANCE = ("sampler", "batch", "loss", "none")


class BalancedBatchSampler(torch.utils.data.Sampler[int]):
    """Indices alternating REAL and FAKE (drawn with replacement, each class in a random order),
    so every batch of an even size is exactly half FAKE: small batches then never miss a class.

    Args:
        labels: ``(N,)`` 0/1 of the dataset's items; both classes must be present.
        num_samples: Indices per pass (an epoch).
        generator: Seeded torch generator.
    """

    def __init__(self, labels: np.ndarray, num_samples: int, generator: torch.Generator):
        labels = np.asarray(labels)
        self.pools = [np.flatnonzero(labels == c) for c in (0, 1)]
        if any(len(p) == 0 for p in self.pools):
            raise ValueError("balance='batch' needs REAL and FAKE training clips; add the missing "
                             "class or use balance='none' with self-blending")
        self.num_samples, self.generator = int(num_samples), generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        first = int(torch.randint(2, (1,), generator=self.generator))
        for i in range(self.num_samples):
            pool = self.pools[(first + i) % 2]
            yield int(pool[int(torch.randint(len(pool), (1,), generator=self.generator))])


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed each worker's dataset copy from torch's worker seed
    (the loader's generator gives a new base seed per epoch; + worker_id per worker)."""
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    while not hasattr(ds, "reseed") and hasattr(ds, "dataset"):  # through Subset wrappers
        ds = ds.dataset
    if hasattr(ds, "reseed"):
        ds.reseed(info.seed % 2**63)


def _labels_of(dataset: Dataset) -> np.ndarray:
    if hasattr(dataset, "labels"):
        return np.asarray(dataset.labels)
    if isinstance(dataset, torch.utils.data.Subset):
        return _labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    raise TypeError(f"balance='sampler' needs dataset.labels; {type(dataset).__name__} has none")


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 0,
                balance: str = "sampler", distributed: bool = False, seed: int = 0,
                num_samples: int = 0) -> DataLoader:
    """A DataLoader over clips.

    Args:
        dataset: Usually a :class:`FrameSequenceDataset`.
        batch_size: Clips per batch.
        train: Shuffle (or balance) and keep the last partial batch out; else the dataset order.
        workers: Worker processes (0 = in this process).
        balance: With ``train``: "sampler" draws clips with weights 1 / (count of their class
            in the manifest), so batches are balanced on average (on-the-fly self-blending then
            adds FAKEs on top); "batch" alternates the classes (:class:`BalancedBatchSampler`:
            every batch exactly balanced); "loss" or "none" shuffle (use :func:`pos_weight`
            with "loss").
        distributed: Use a DistributedSampler (call ``loader.sampler.set_epoch(epoch)``); class
            balance then has to come from the loss.
        seed: Seed of the shuffling/sampling and of the dataset's clip randomness; pass a
            different one per epoch (e.g. ``seed + epoch``) for different clips every epoch.
        num_samples: With ``train`` (not distributed): clips per epoch drawn with replacement
            (``TrainConfig.steps_per_epoch * batch_size``); 0 = one pass over the dataset.

    Returns:
        The loader; each worker reseeds its dataset copy, so random clip offsets differ across
        workers and epochs yet repeat for the same seeds.
    """
    if balance not in BALANCE:
        raise ValueError(f"balance={balance!r}: use one of {', '.join(BALANCE)}")
    generator = torch.Generator().manual_seed(seed)
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)  # workers=0: the main process draws the clips
    sampler, shuffle = None, False
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        if train and balance == "sampler":
            log.info("distributed loading: balance classes with the loss (pos_weight), not a sampler")
    elif train and balance == "batch" and len(dataset):
        sampler = BalancedBatchSampler(_labels_of(dataset), num_samples or len(dataset), generator)
    elif train and balance == "sampler" and len(dataset):
        labels = _labels_of(dataset)
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = 1.0 / counts[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                        num_samples or len(labels), replacement=True,
                                        generator=generator)
    elif train and num_samples and len(dataset):
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True,
                                                 num_samples=num_samples, generator=generator)
    else:
        shuffle = train
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=workers, worker_init_fn=seed_worker if workers else None,
                      multiprocessing_context=mp_context() if workers else None,
                      generator=generator, drop_last=train and len(dataset) > batch_size,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)
