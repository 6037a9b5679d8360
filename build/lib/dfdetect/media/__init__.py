"""Media: video decoding and writing, the one video finder, atomic file writes, worker processes."""

from dfdetect.media.files import atomic_path, atomic_write_bytes, atomic_write_text, mp_context
from dfdetect.media.find import VIDEO_SUFFIXES, find_videos
from dfdetect.media.video import (
           VideoError,
           VideoInfo,
           VideoWriter,
           probe,
           read_all_frames,
           read_frames,
)

__all__ = ["VIDEO_SUFFIXES", "VideoError", "VideoInfo", "VideoWriter", "atomic_path",
           "atomic_write_bytes", "atomic_write_text", "find_videos", "mp_context", "probe",
           "read_all_frames", "read_frames"]
