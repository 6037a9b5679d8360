"""Inference (notebook 04): results, Predictor / predict, folder mode, Grad-CAM."""

from dfdetect.inference.folder import PREDICTIONS_NAME, list_videos, predict_folder
from dfdetect.inference.gradcam import GradCamError, grad_cam
from dfdetect.inference.predictor import Predictor, VideoPrediction, predict

__all__ = ["PREDICTIONS_NAME", "GradCamError", "Predictor", "VideoPrediction", "grad_cam",
           "list_videos", "predict", "predict_folder"]
