"""Training (notebook 03): one epoch, what a run is built from, the whole run (fit), metrics."""

from dfdetect.training.epoch import collect_predictions, evaluate, train_epoch, train_step
from dfdetect.training.fit import BEST, LAST, TrainError, fit, fit_datasets
from dfdetect.training.metrics import Predictions, binary_metrics, video_metrics
from dfdetect.training.setup import (
    Precision,
    build_training,
    default_device,
    make_loss_fn,
    select_precision,
)

__all__ = ["BEST", "LAST", "Precision", "Predictions", "TrainError", "binary_metrics", "build_training",
           "collect_predictions", "default_device", "evaluate", "fit", "fit_datasets", "make_loss_fn",
           "select_precision", "train_epoch", "train_step", "video_metrics"]
