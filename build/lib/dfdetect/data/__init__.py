"""Data (notebook 03's input): preprocessing, clip samplers, group splits, frame cache, Dataset, loaders."""

from dfdetect.data.dataset import FrameSequenceDataset, pos_weight
from dfdetect.data.framecache import FrameCache
from dfdetect.data.loaders import make_loader
from dfdetect.data.preprocess import preprocess_clip, resize_frames
from dfdetect.data.sampling import ClipSampler, RandomClipSampler, UniformClipSampler
from dfdetect.data.splits import LeakageError, check_splits, class_counts, split_manifest

__all__ = ["ClipSampler", "FrameCache", "FrameSequenceDataset", "LeakageError", "RandomClipSampler",
           "UniformClipSampler", "check_splits", "class_counts", "make_loader", "pos_weight",
           "preprocess_clip", "resize_frames", "split_manifest"]
