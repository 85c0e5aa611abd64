"""The configs: every style and experiment composes with the real train.yaml and instantiates; YAML values
agree with the Python signatures they feed; the demo, speed and generator choices compose as documented."""

import inspect
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from helpers import run_train_py
from stylegan_transfer import devices
from stylegan_transfer.discriminators import DISCRIMINATORS
from stylegan_transfer.networks import GENERATORS
from stylegan_transfer.perceptual import CONTENT_LAYERS, STYLE_LAYERS
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.data import UnpairedDataModule
from stylegan_transfer.training.errors import ConfigError
from stylegan_transfer.training.fast_style import FastStyleModule
from stylegan_transfer.training.run import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STYLES = sorted(p.stem for p in (CONFIGS / "style").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def instantiate_all(cfg):
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger or False)
    return datamodule, model, trainer


@pytest.mark.parametrize("style", STYLES)
def test_style_composes_and_instantiates(compose_cfg, style):
    cfg = compose_cfg(f"style={style}", "logger=csv")
    OmegaConf.resolve(cfg)
    assert cfg.style.name == style
    assert cfg.style.swap_domains in (True, False)
    assert unknown_keys(cfg) == []
    datamodule, model, trainer = instantiate_all(cfg)
    assert isinstance(datamodule, UnpairedDataModule) and isinstance(model, CycleGANModule)
    assert trainer.max_epochs == cfg.model.epochs_constant + cfg.model.epochs_decay


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(compose_cfg, experiment):
    first_line = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text().splitlines()[:2]
    assert any(f"experiment={experiment}" in line for line in first_line), "command on the first lines"
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    assert unknown_keys(cfg) == []
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_trainer_presets(compose_cfg, trainer):
    cfg = compose_cfg(f"trainer={trainer}")
    assert unknown_keys(cfg) == []
    assert cfg.trainer.use_distributed_sampler is False
    if trainer == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"


def test_default_is_the_embedded_demo(compose_cfg):
    cfg = compose_cfg(tiny=False)
    OmegaConf.resolve(cfg)
    assert cfg.style.name == "demo" and Path(cfg.data.root, "trainA").is_dir()
    assert cfg.logger._target_.endswith("WandbLogger")
    model = instantiate(cfg.model)
    assert isinstance(model, CycleGANModule)
    assert model.hparams.lambda_cycle == 10.0 and model.hparams.pool_size == 50  # paper values


def test_paper_defaults_without_the_demo(compose_cfg):
    cfg = compose_cfg("style=vangogh", tiny=False)
    OmegaConf.resolve(cfg)
    assert cfg.data.crop_size == 256 and cfg.data.load_size == 286 and cfg.data.batch_size == 1
    assert cfg.model.generator.n_blocks == 9 and cfg.model.generator.channels == 64
    assert cfg.model.lr == 2e-4 and cfg.model.beta1 == 0.5
    assert cfg.trainer.max_epochs == 200
    assert cfg.model.lambda_content == 0.5 and cfg.model.lambda_style == 1.0  # the default recipe's VGG terms


def test_demo_data_ships_with_its_attribution():
    from stylegan_transfer.training.launch import ASSETS

    demo = ASSETS / "demo"
    attribution = (demo / "ATTRIBUTION.md").read_text()
    for split in ("trainA", "trainB", "testA", "testB"):
        files = sorted((demo / split).glob("*.jpg"))
        assert files, split
        if split.endswith("B"):  # every painting crop is listed by name
            assert all(f"{split}/{f.name}" in attribution for f in files)
    assert "public domain" in attribution
    total = sum(f.stat().st_size for f in demo.rglob("*") if f.is_file())
    assert total < 3_000_000  # a few MB at most


# ----------------------------------------------------------------------------- one source of truth per value
# The YAML files restate defaults so that every knob is visible and overridable; these tests keep them equal
# to the Python signatures they feed. A value of ours that differs on purpose is listed here, with the reason.
ALLOWED_DIFFERENCES = {
    # The default generator up-samples by resize-and-conv (docs/quality.md); ResnetGenerator keeps the paper's transpose.
    ("model/generator/resnet.yaml", "upsample"),
    # CycleGAN trains every network with instance norm; UnetGenerator's own default is pix2pix's batch norm.
    ("model/generator/unet.yaml", "norm"),
    # CUT/FastCUT spell out the CUT code's anti-aliased networks in full; the module's None means the paper's.
    ("model/cut.yaml", "generator"),
    ("model/cut.yaml", "discriminator"),
    # FastCUT is CUT with the paper's other settings: lambda_nce 10, no identity NCE, flip-equivariance.
    ("model/fastcut.yaml", "lambda_nce"),
    ("model/fastcut.yaml", "nce_idt"),
    ("model/fastcut.yaml", "flip_equivariance"),
    ("model/fastcut.yaml", "epochs_constant"),  # FastCUT's schedule is the CUT code's 150 + 50 epochs
    ("model/fastcut.yaml", "epochs_decay"),
}
NETWORK_GROUPS = {"model/generator": GENERATORS, "model/discriminator": DISCRIMINATORS}
HYDRA_KEYS = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}
YAML_FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))


def _parameters(target) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters of a callable (a class: its constructor), and whether it takes **kwargs."""
    params = inspect.signature(target).parameters
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def _settings(node: dict, path: str):
    """(path, target, settings) for every `_target_` dict in `node`, at any depth."""
    if "_target_" in node:
        yield path, get_object(node["_target_"]), node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _settings(value, f"{path}.{key}" if path else key)


def _networks(cfg: dict) -> list[tuple[str, type, dict]]:
    model = cfg.get("model") or {}
    registries = (("generator", GENERATORS), ("discriminator", DISCRIMINATORS))
    return [(f"model.{k}", reg[model[k]["arch"]], model[k]) for k, reg in registries if model.get(k)]


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys that no callable takes: of every `_target_` node and of each network's settings block."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    found = []
    for path, target, node in [*_settings(plain, ""), *_networks(plain)]:
        params, takes_kwargs = _parameters(target)
        if not takes_kwargs:
            found += [f"{path}.{k}" for k in node if k not in HYDRA_KEYS | {"arch"} and k not in params]
    return found


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", YAML_FILES)
def test_yaml_values_equal_the_signature_defaults(name):
    """Every literal value a YAML file gives one of our callables equals that parameter's default (unless
    allow-listed), and every key is a parameter. Third-party targets (Trainer, loggers): keys only."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / name), resolve=False)
    raw.pop("defaults", None)
    group = str(Path(name).parent)
    found = list(_settings(raw, ""))
    if group in NETWORK_GROUPS:
        found.append(("", NETWORK_GROUPS[group][raw["arch"]], raw))
    for path, target, node in found:
        params, takes_kwargs = _parameters(target)
        ours = target.__module__.startswith("stylegan_transfer")
        for key, value in node.items():
            where = f"{name}: {path + '.' if path else ''}{key}"
            if key in HYDRA_KEYS or key == "arch" or (name, key) in ALLOWED_DIFFERENCES:
                continue
            assert key in params or takes_kwargs, f"{where} is not a parameter of {target.__qualname__}"
            if not ours or key not in params or params[key].default is inspect.Parameter.empty:
                continue
            if isinstance(value, str) and "${" in value:
                continue  # an interpolation: its value comes from elsewhere in the config
            default = _normalise(params[key].default)
            assert value == default, f"{where} = {value!r}, but {target.__qualname__} defaults to {default!r}"


def _group(header: str) -> str:
    """A group comment's name: `# losses and their weights (and ...)` and `# performance: ...` name their first words."""
    return re.split(r"[(:]", header.lstrip("# "))[0].strip()


def _signature_groups(cls) -> dict[str, str]:
    """{parameter: the `# group` comment above it in the constructor's signature}."""
    source = inspect.getsource(cls.__init__)
    groups, group = {}, ""
    for line in source[: source.index(") -> None")].splitlines():
        if re.match(r"^\s+# ", line):
            group = _group(line.strip())
        elif match := re.match(r"^\s+(\w+):", line):
            groups[match.group(1)] = group
    return groups


@pytest.mark.parametrize("name", ["model/cyclegan.yaml", "model/cut.yaml"])
def test_model_files_list_the_settings_in_the_signatures_order_and_groups(name):
    """The flat settings (each overridable as `model.<name>=...`) are grouped alike in the YAML file and in the
    module's signature: the same order, each under a comment naming the same group."""
    text = (CONFIGS / name).read_text()
    target = get_object(OmegaConf.create(text)["_target_"])
    signature = _signature_groups(target)
    assert "" not in signature.values(), f"{target.__qualname__}: a parameter above the first group comment"
    header, keys = "", []
    for line in text[text.index("_convert_") :].splitlines()[1:]:
        if line.startswith("# "):
            header = _group(line)
        elif match := re.match(r"^(\w+):", line):
            keys.append(match.group(1))
            assert signature[match.group(1)] == header, f"{name}: {match.group(1)} is under '{header}'"
    assert keys == [k for k in signature if k in keys], f"{name}: not in the order of {target.__qualname__}"
    assert len({signature[k] for k in keys}) >= 5  # networks, losses, ..., performance, options


def test_the_allow_list_names_real_differences():
    for name, key in ALLOWED_DIFFERENCES:
        raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / name), resolve=False)
        group = str(Path(name).parent)
        target = (
            NETWORK_GROUPS[group][raw["arch"]] if group in NETWORK_GROUPS else get_object(raw["_target_"])
        )
        assert raw[key] != _parameters(target)[0][key].default, f"{name}: {key} no longer differs"


def test_the_vgg_layer_lists_come_from_perceptual(compose_cfg):
    for name in ("model/cyclegan.yaml", "model/fast_style.yaml"):
        raw = OmegaConf.load(CONFIGS / name)
        assert "content_layers" not in raw and "style_layers" not in raw, name
    cfg = compose_cfg()
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model)
    assert model.perceptual.content_layers == list(CONTENT_LAYERS)
    assert model.perceptual.style_layers == list(STYLE_LAYERS)


# Choices whose combinations pick the specialised files (size/…, debug/…): every one composes to keys that
# the callables take, and with the debug sizes the model builds.
MODEL_GENERATORS = [("cyclegan", g) for g in GENERATORS] + [
    ("fast_style", g) for g in ("johnson", "resnet", "unet")
]
SIZES = [("size=paper",), ("size=demo",), ("debug=tiny",), ("debug=fast",)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s[0])
@pytest.mark.parametrize(("model", "generator"), MODEL_GENERATORS)
def test_every_model_generator_and_size_composes_to_known_keys(compose_cfg, model, generator, size):
    cfg = compose_cfg(f"model={model}", f"model/generator={generator}", *size, tiny=False)
    assert cfg.model.generator.arch == generator
    assert unknown_keys(cfg) == []
    if model == "fast_style":
        assert "discriminator" not in cfg.model and "pool_size" not in cfg.model
    if size[0].startswith("debug"):
        OmegaConf.resolve(cfg)
        module = instantiate(cfg.model)
        image = torch.zeros(1, 3, cfg.data.crop_size, cfg.data.crop_size)  # (B, C, H, W)
        assert module.g_ab(image).shape == image.shape


@pytest.mark.parametrize("overrides", [(), ("debug=tiny",), ("style=vangogh",)], ids=str)
def test_the_pixel_discriminator_composes_and_builds(compose_cfg, overrides):
    cfg = compose_cfg("model/discriminator=pixel", *overrides, tiny=False)
    assert unknown_keys(cfg) == []
    OmegaConf.resolve(cfg)
    assert type(instantiate(cfg.model).d_a).__name__ == "PixelDiscriminator"


# debug=fast is debug=tiny (debug/tiny.yaml and its debug/{model,generator}/tiny_* files) plus only these
# differences: twice the width and depth, and the model summary and progress bar that a real run prints.
DEBUG_MODEL_GENERATORS = [*MODEL_GENERATORS, ("cut", "resnet"), ("fastcut", "resnet")]


def _fast_differences(tiny: DictConfig, real: DictConfig) -> dict:
    """{dotted key: debug=fast's value} for every value in which debug=fast differs from debug=tiny."""
    differences = {
        "model.generator.channels": 8,
        "trainer.enable_model_summary": True,
        "callbacks.progress": OmegaConf.to_container(real.callbacks.progress),
    }
    if "n_blocks" in tiny.model.generator:  # resnet, johnson
        differences["model.generator.n_blocks"] = 2
    if "discriminator" in tiny.model:  # every model but fast_style
        differences["model.discriminator.channels"] = 8
    return differences


@pytest.mark.parametrize(("model", "generator"), DEBUG_MODEL_GENERATORS)
def test_debug_fast_is_tiny_plus_its_differences(compose_cfg, model, generator):
    choices = (f"model={model}", f"model/generator={generator}")
    tiny = compose_cfg(*choices, "debug=tiny", tiny=False)
    fast = compose_cfg(*choices, "debug=fast", tiny=False)
    differences = _fast_differences(tiny, compose_cfg(*choices, tiny=False))
    expected = tiny.copy()
    for key, value in differences.items():
        assert OmegaConf.select(tiny, key) != value, f"debug=tiny already has {key}={value!r}"
        OmegaConf.update(expected, key, value, merge=False, force_add=True)
    assert OmegaConf.to_container(fast) == OmegaConf.to_container(expected)


def test_every_debug_fast_file_starts_from_its_tiny_file():
    fast_files = sorted((CONFIGS / "debug").rglob("fast*.yaml"))
    assert len(fast_files) == len(sorted((CONFIGS / "debug").rglob("tiny*.yaml")))
    for path in fast_files:
        tiny_name = path.stem.replace("fast", "tiny", 1)
        assert (path.parent / f"{tiny_name}.yaml").is_file(), path
        assert OmegaConf.load(path).defaults[0] == tiny_name, path


SPECIALISED = {  # folder: (the group named first in the file name, the group named second)
    "size/model": ("size", "model"),
    "size/generator": ("size", "model/generator"),
    "debug/model": ("debug", "model"),
    "debug/generator": ("debug", "model/generator"),
}


def _options(group: str) -> set[str]:
    return {p.stem for p in (CONFIGS / group).glob("*.yaml")}


@pytest.mark.parametrize("folder", sorted(SPECIALISED))
def test_specialised_files_are_named_after_real_choices(folder):
    """They are `optional` in train.yaml, so a misspelt name would silently do nothing."""
    first, second = SPECIALISED[folder]
    files = sorted((CONFIGS / folder).glob("*.yaml"))
    assert files
    for path in files:
        head, _, tail = path.stem.partition("_")
        if tail not in _options(second):  # the first group's option may contain "_" (fast_style)
            head, _, tail = path.stem.rpartition("_")
        assert head in _options(first) and tail in _options(second), path
    assert f"optional {folder}@" in (CONFIGS / "train.yaml").read_text()


# ----------------------------------------------------------------------------- the demo preset
def test_style_files_say_which_images_only():
    for path in sorted((CONFIGS / "style").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        assert set(raw) <= {"style", "defaults"}, path.name
        assert raw.get("defaults", []) in ([], [{"override /size": "demo"}]), path.name


# `python train.py` as it trained before the sizes moved out of style/demo.yaml (composed on main, f8722ba),
# except the schedule (5 + 5 epochs: 12 + 12 took 11 min 47 s on the slower machines), the default recipe's VGG
# content and style terms (issue 13) and its resize up-sampling (issue 23; docs/quality.md).
DEMO_MODEL = {
    "generator": {"arch": "resnet", "channels": 32, "n_blocks": 6, "norm": "instance", "upsample": "resize", "dropout": False,
                  "antialias": False},
    "discriminator": {"arch": "patch", "channels": 32, "n_layers": 3, "norm": "instance", "antialias": False,
                      "spectral_norm": False},
    "init_type": "normal", "init_gain": 0.02, "gan_mode": "lsgan", "lambda_cycle": 10.0, "lambda_identity": 0.5,
    "lambda_gp": 10.0, "lambda_content": 0.5, "lambda_style": 1.0, "lambda_tv": 0.0,
    "content_layers": ["relu4_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
    "vgg_weights": None, "lr": 0.0002, "beta1": 0.5, "beta2": 0.999, "epochs_constant": 5, "epochs_decay": 5,
    "pool_size": 50, "seed": 0, "batch_size": 1, "lr_scaling": "none", "channels_last": False, "compile": False,
    "fused_adam": None,
    # the other options added since (issue 13), all off
    "diffaugment": "", "ema_decay": 0.0, "lambda_cycle_perceptual": 0.0, "lambda_identity_perceptual": 0.0,
    "lambda_r1": 0.0,
    "style_target": "batch", "style_target_decay": 0.999,  # issue 23
}  # fmt: skip
DEMO_DATA = {
    "preprocess": "resize_and_crop", "load_size": 72, "crop_size": 64, "flip": True, "batch_size": 1,
    "num_workers": 2, "val_size": 6, "max_dataset_size": None, "swap_domains": False, "download": False,
    "dataset": None, "dir_a": None, "dir_b": None, "seed": 0,
}  # fmt: skip
DEMO_TRAINER = {
    "_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1, "precision": "32-true",
    "max_epochs": 10, "check_val_every_n_epoch": 1, "log_every_n_steps": 10, "num_sanity_val_steps": 0,
    "use_distributed_sampler": False,
}  # fmt: skip


def test_the_demo_trains_exactly_as_before(compose_cfg, native_bf16):
    """On a CPU without native bf16 (the slower machines); with it, only the precision differs (bf16 autocast)."""
    native_bf16(True)
    assert compose_cfg(tiny=False).trainer.precision == "bf16-mixed"
    native_bf16(False)
    cfg = compose_cfg(tiny=False)
    OmegaConf.resolve(cfg)
    hparams = {k: _normalise(v) for k, v in instantiate(cfg.model).hparams.items()}
    assert hparams == DEMO_MODEL
    data = OmegaConf.to_container(cfg.data)
    assert {k: data[k] for k in DEMO_DATA} == DEMO_DATA
    trainer = OmegaConf.to_container(cfg.trainer)
    assert trainer.pop("default_root_dir") == cfg.paths.output_dir and trainer == DEMO_TRAINER
    # + quality-based selection (val/kid evaluation and the best-by-KID export), on purpose since issue 12
    assert sorted(cfg.callbacks) == [
        "best",
        "checkpoint",
        "crash",
        "export_best",
        "kid",
        "progress",
        "samples",
    ]


def test_paper_sizes_with_the_demo_images(compose_cfg):
    cfg = compose_cfg("size=paper", tiny=False)
    assert cfg.style.name == "demo" and cfg.data.crop_size == 256
    assert cfg.model.generator.n_blocks == 9 and cfg.model.epochs_constant == 100


def test_fast_style_takes_no_cyclegan_settings(compose_cfg, tmp_path):
    params, _ = _parameters(FastStyleModule)
    assert "discriminator" not in params and "pool_size" not in params
    for overrides in ((), ("debug=tiny",), ("debug=fast",)):
        cfg = compose_cfg("experiment=fast_style", *overrides, tiny=False)
        assert "discriminator" not in cfg.model and "pool_size" not in cfg.model, overrides
        assert unknown_keys(cfg) == []
    assert compose_cfg("experiment=fast_style").model.generator == {
        "arch": "johnson",
        "channels": 4,
        "n_blocks": 1,
        "norm": "instance",
    }


# ----------------------------------------------------------------------------- speed presets
def _speed(cfg) -> tuple:
    return (
        cfg.trainer.precision,
        cfg.trainer.get("benchmark"),
        cfg.data.batch_size,
        cfg.model.compile,
        cfg.model.channels_last,
        cfg.model.fused_adam,
        cfg.model.lr_scaling,
    )


PAPER_SPEED = ("32-true", None, 1, False, False, None, "none")
GPU_SPEED = ("bf16-mixed", True, 8, True, True, True, "sqrt")


CPU_BF16 = ("bf16-mixed", None, 1, False, False, None, "none")

SPEED_CASES = [
    ((), CPU_BF16),  # on a CPU with native bf16 (see the test below for one without)
    (("trainer=gpu",), GPU_SPEED),
    (("trainer=ddp",), GPU_SPEED),
    (("perf=none",), PAPER_SPEED),
    (("trainer=gpu", "perf=none"), PAPER_SPEED),
    (("trainer=ddp", "perf=none"), PAPER_SPEED),
    (("trainer=gpu", "perf=gpu"), GPU_SPEED),
    (("perf=gpu",), GPU_SPEED),
    (("perf=cpu",), CPU_BF16),
    (("trainer=gpu", "perf=cpu"), CPU_BF16),
]


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU computes bf16 in hardware (or not: `native_bf16(False)`)."""

    def _set(native: bool = True) -> None:
        monkeypatch.setattr(devices, "native_bf16_cpu", lambda: native)

    _set()
    return _set


@pytest.mark.parametrize(
    ("overrides", "expected"), SPEED_CASES, ids=[" ".join(o) or "default" for o, _ in SPEED_CASES]
)
def test_the_trainer_does_not_choose_the_speed_preset_perf_does(
    compose_cfg, native_bf16, overrides, expected
):
    cfg = compose_cfg(*overrides, tiny=False)
    assert _speed(cfg) == expected
    assert cfg.trainer.accelerator == (
        "gpu" if "trainer=gpu" in overrides or "trainer=ddp" in overrides else "cpu"
    )


@pytest.mark.parametrize("overrides", [(), ("perf=cpu",), ("debug=tiny",)], ids=str)
def test_the_cpu_preset_stays_fp32_where_bf16_would_be_emulated(compose_cfg, native_bf16, overrides):
    native_bf16(False)
    assert _speed(compose_cfg(*overrides, tiny=False)) == PAPER_SPEED


def test_each_trainer_has_its_speed_preset_and_every_preset_composes(compose_cfg, native_bf16):
    """`perf: ${trainer}` in train.yaml: a trainer without a preset file would fail to compose."""
    trainers = _options("trainer")
    assert trainers <= _options("perf"), "configs/perf/ needs a file per trainer"
    for trainer in sorted(trainers):
        for perf in sorted(_options("perf")):
            cfg = compose_cfg(f"trainer={trainer}", f"perf={perf}", tiny=False)
            assert cfg.trainer.precision in {"32-true", "bf16-mixed"}, (trainer, perf)


def test_cpu_precision_follows_torchs_hardware_probes(monkeypatch):
    """Either probe (AVX-512-BF16, AMX) means native bf16; neither, or a torch without them, means fp32."""
    for avx512_bf16, amx, native in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert devices.native_bf16_cpu() is native
        assert devices.cpu_precision() == ("bf16-mixed" if native else "32-true")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert devices.native_bf16_cpu() is False


def test_trainer_files_select_no_other_group():
    for path in sorted((CONFIGS / "trainer").glob("*.yaml")):
        defaults = OmegaConf.load(path).get("defaults", [])
        assert all(isinstance(d, str) for d in defaults), f"{path.name}: {list(defaults)}"


# ----------------------------------------------------------------------------- choosing the generator
def test_unet_generator_from_its_config_group(compose_cfg):
    tiny = compose_cfg("model/generator=unet")
    OmegaConf.resolve(tiny)
    assert dict(tiny.model.generator) == {
        "arch": "unet",
        "channels": 4,
        "num_downs": 5,
        "norm": "instance",
        "dropout": False,
    }
    module = instantiate(tiny.model)
    image = torch.rand(2, 3, 32, 32) * 2 - 1  # (B, C, H, W)
    assert module.g_ab(image).shape == image.shape and module.generator_arch == "unet"
    demo = compose_cfg("model/generator=unet", tiny=False)
    OmegaConf.resolve(demo)
    assert demo.model.generator.num_downs == 6 and demo.model.generator.channels == 32  # 64 px crops: 2**6
    paper = compose_cfg("model/generator=unet", "style=vangogh", tiny=False)
    OmegaConf.resolve(paper)
    assert paper.model.generator.num_downs == 8 and paper.model.generator.channels == 64  # unet_256


def test_generator_arch_value_override_names_the_config_group(compose_cfg):
    cfg = compose_cfg("model.generator.arch=unet")
    with pytest.raises(ConfigError, match=r"n_blocks, upsample .*model/generator=unet"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # refused before anything ran


@pytest.mark.slow
def test_generator_arch_value_override_on_the_command_line_is_one_line(tmp_path):
    result = run_train_py(
        "debug=tiny", "model.generator.arch=unet", f"hydra.run.dir={tmp_path / 'run'}", timeout=120
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: model.generator.arch=unet:") and "model/generator=unet" in lines[-1]
    assert "Traceback" not in result.stderr
