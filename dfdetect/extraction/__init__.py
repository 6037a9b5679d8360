"""Extraction (notebook 01): videos -> face videos + sidecars + manifest.

:class:`FaceCropper` (BlazeFace through LiteRT), tracking, the per-video pipeline
(:func:`create_face_videos`), the batch runner (:func:`process_videos`: workers, shards, merge)
and the manifest with its sidecars.
"""

from dfdetect.extraction.faces import BrokenEnvironmentError, FaceBox, FaceCropper
from dfdetect.extraction.manifest import MANIFEST_NAME, merge_manifests, read_manifest, usable
from dfdetect.extraction.pipeline import (
           ExtractError,
           create_face_videos,
           merge_parts,
           process_videos,
)

__all__ = ["MANIFEST_NAME", "BrokenEnvironmentError", "ExtractError", "FaceBox", "FaceCropper",
           "create_face_videos", "merge_manifests", "merge_parts", "process_videos", "read_manifest",
           "usable"]
