"""Running trained generators without the training stack: the generator file format (`generator_file`), the one
checkpoint reader (`checkpoint`), exports (`export`: safetensors; `onnx_pt2`: ONNX, torch.export), official-code and
pretrained generators (`official`, `pretrained`, `digests`), tiling (`tiling`) and translation of images and videos
(`translation`: the API; `video`; `translate`: the `stylegan-translate` command)."""

from stylegan_transfer.inference.generator_file import ExportError, load_generator, read_metadata
from stylegan_transfer.inference.translation import load, translate, translate_tensor
from stylegan_transfer.inference.video import VideoError, flicker_ratio, translate_video

__all__ = [
    "ExportError",
    "VideoError",
    "flicker_ratio",
    "load",
    "load_generator",
    "read_metadata",
    "translate",
    "translate_tensor",
    "translate_video",
]
