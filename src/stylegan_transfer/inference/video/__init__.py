"""Translate videos frame by frame without added flicker, streaming, with the audio kept (docs/video.md).

    stylegan-translate --checkpoint export/g_ab.safetensors --input clip.mp4 --output out/

One job per module, imported downward only: `probe` (what a file holds, `VideoError`, lazy PyAV), `frames`
(frames <-> tensors, geometry), `statistics` (held instance-norm statistics, flicker), `encode` (containers,
codecs, timestamps, writers), `clip` (`translate_video`), `cli` (the options of `stylegan-translate`).
Every public name is re-exported here: `from stylegan_transfer.inference.video import X` is the API.
"""

from stylegan_transfer.inference.video.cli import (
    VIDEO_FORMATS,
    add_video_arguments,
    check_outputs,
    check_video_arguments,
    run_videos,
    video_output_path,
)
from stylegan_transfer.inference.video.clip import STATS_MODES, VideoReport, translate_video
from stylegan_transfer.inference.video.encode import (
    AUDIO_FALLBACK,
    CONTAINERS,
    DEFAULT_CODECS,
    DEFAULT_CRF,
    EVEN_FORMATS,
)
from stylegan_transfer.inference.video.probe import (
    INSTALL_HINT,
    VIDEO_EXTENSIONS,
    VideoError,
    VideoInfo,
    import_av,
    is_video,
    probe_video,
)
from stylegan_transfer.inference.video.statistics import FlickerMeter, _sample_indices, flicker_ratio

__all__ = [
    "AUDIO_FALLBACK",
    "CONTAINERS",
    "DEFAULT_CODECS",
    "DEFAULT_CRF",
    "EVEN_FORMATS",
    "INSTALL_HINT",
    "STATS_MODES",
    "VIDEO_EXTENSIONS",
    "VIDEO_FORMATS",
    "FlickerMeter",
    "VideoError",
    "VideoInfo",
    "VideoReport",
    "_sample_indices",
    "add_video_arguments",
    "check_outputs",
    "check_video_arguments",
    "flicker_ratio",
    "import_av",
    "is_video",
    "probe_video",
    "run_videos",
    "translate_video",
    "video_output_path",
]
