"""Augmentation (notebook 02): clip-consistent transforms, self-blending, offline copies."""

from dfdetect.augment.copies import AugmentError, augment_manifest
from dfdetect.augment.ops import AugmentConfig, ClipParams, apply_params, augment_clip, draw_params
from dfdetect.augment.selfblend import BlendParams, SelfBlendConfig, self_blend

__all__ = ["AugmentConfig", "AugmentError", "BlendParams", "ClipParams", "SelfBlendConfig",
           "apply_params", "augment_clip", "augment_manifest", "draw_params", "self_blend"]
