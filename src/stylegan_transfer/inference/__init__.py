"""Running trained generators without the training stack: the generator file format (`generator_file`), the one
checkpoint reader (`checkpoint`), exports (`export`: safetensors; `onnx_pt2`: ONNX, torch.export), official-code and
pretrained generators (`official`, `pretrained`), tiling (`tiling`) and translation of images and videos
(`translate`: API and CLI; `video`)."""

from stylegan_transfer.inference.generator_file import ExportError, load_generator, read_metadata
from stylegan_transfer.inference.translate import translate, translate_tensor
from stylegan_transfer.inference.video import VideoError, flicker_ratio, translate_video

__all__ = [
    "ExportError",
    "VideoError",
    "flicker_ratio",
    "load_generator",
    "read_metadata",
    "translate",
    "translate_tensor",
    "translate_video",
]
