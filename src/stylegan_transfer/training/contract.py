"""The model contract: everything the training plumbing asks of a model module, written once.

How to add a model
------------------
Write a `lightning.LightningModule` (training/cyclegan.py, cut.py and fast_style.py are the three there are)
that also satisfies `TranslationModel` below, give it a file in configs/model/ whose `_target_` names it, and
`python train.py model=<file>` trains it: `train()` (training/run.py) checks the contract as soon as the module
is built (`check_model`) and then relies on it alone. Besides the members below, a model

- takes its settings as typed keyword arguments (its config file sets `_convert_: all`, so they arrive as plain
  values: checkpoints are read weights-only) and records them flat with `self.save_hyperparameters()`, one of
  them `generator`: the dict `{"arch": generator_arch, **generator_kwargs}` that `stylegan-export` and the
  checkpoint reader (inference/checkpoint.py) rebuild the generator from;
- keeps each generator of `generator_roles` as the submodule of that name (`self.g_ab`) and, when it keeps a
  moving average of it, that average as `<role>_ema` (`self.g_ab_ema`): checkpoints hold their weights under
  `g_ab.*` and `g_ab_ema.*`, which is what the checkpoint reader and the best-model export look for;
- trains in `training_step` and logs its `fallback_metric` in `validation_step` (`val/...`, synced).

What the plumbing does with it: the final export (`run.export_generators`) writes
`evaluated_generator(role)` for each role with `generator_arch`/`generator_kwargs` and `uses_ema` in the
metadata; the best-model export (`quality.ExportBestGenerators`) exports `generator_roles` of the best
checkpoint; KID (`quality.KIDEvaluation`) scores `evaluated_generator("g_ab")`; the sample grid
(`samples.SampleGrid`) shows `translate_batch`; model selection falls back to `fallback_metric` when KID cannot
be computed (`run.select_by_quality`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import lightning as L
import torch
from torch import nn

from stylegan_transfer.inference.checkpoint import ROLES
from stylegan_transfer.networks import GENERATORS

# The sample grid's columns, left to right (`translate_batch` returns one image batch per name).
GRID_COLUMNS = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b")


@runtime_checkable
class TranslationModel(Protocol):
    """What a model module provides to the training plumbing (see the module docstring for the rest)."""

    generator_roles: ClassVar[tuple[str, ...]]
    """The generators it trains and exports, in `inference.checkpoint.ROLES` order, starting with "g_ab":
    ("g_ab", "g_ba") for a two-way model (CycleGAN), ("g_ab",) for a one-way one (CUT, fast style)."""

    fallback_metric: ClassVar[str]
    """The metric its `validation_step` logs that selects the best checkpoint (and is the sweep objective)
    when `val/kid` cannot be computed: "val/cycle_l1" (CycleGAN), "val/nce" (CUT), "val/loss" (fast style)."""

    generator_arch: str
    """The generators' architecture, a name in `networks.GENERATORS` (all roles share it)."""

    generator_kwargs: dict[str, Any]
    """The generators' constructor arguments (without "arch"): `build_generator(arch, **kwargs)` rebuilds one."""

    @property
    def uses_ema(self) -> bool:
        """Whether `evaluated_generator` returns moving averages of the trained weights (`<role>_ema`)."""
        ...

    def evaluated_generator(self, role: str) -> nn.Module:
        """The network that stands for `role` (one of `generator_roles`) outside training, in validation,
        sample grids, KID and exports: its moving average when the module keeps one, else the trained one."""
        ...

    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sample grid of a validation batch (each (B, 3, H, W) in [-1, 1]): one (B, 3, H, W) batch per
        name of `GRID_COLUMNS`, made by the evaluated generators, without gradients."""
        ...


# Every member of the contract, for the error that names what a module lacks.
MEMBERS = (
    "generator_roles",
    "fallback_metric",
    "generator_arch",
    "generator_kwargs",
    "uses_ema",
    "evaluated_generator",
    "translate_batch",
)


class ModelContractError(TypeError):
    """A model module that does not satisfy `TranslationModel`; the message names what is missing or wrong."""


def check_model(module: Any) -> TranslationModel:
    """`module` itself when it is a LightningModule satisfying `TranslationModel` with values that make sense;
    else ModelContractError naming what is missing or wrong."""
    name = type(module).__qualname__
    if not isinstance(module, L.LightningModule):
        raise ModelContractError(f"{name} is not a LightningModule")
    missing = [member for member in MEMBERS if not hasattr(module, member)]
    if missing or not isinstance(module, TranslationModel):
        raise ModelContractError(
            f"{name} does not satisfy the model contract (training/contract.py): it lacks {', '.join(missing)}"
        )
    roles = tuple(module.generator_roles)
    if not roles or roles[0] != "g_ab" or roles != tuple(role for role in ROLES if role in roles):
        raise ModelContractError(
            f"{name}.generator_roles must start with 'g_ab' and name roles of {tuple(ROLES)} in that order, "
            f"got {roles!r}"
        )
    if not str(module.fallback_metric).startswith("val/"):
        raise ModelContractError(f"{name}.fallback_metric must be a validation metric (val/...)")
    if module.generator_arch not in GENERATORS:
        raise ModelContractError(
            f"{name}.generator_arch {module.generator_arch!r} is not one of {sorted(GENERATORS)}"
        )
    recorded = module.hparams.get("generator")
    if type(recorded) is not dict or recorded != {"arch": module.generator_arch, **module.generator_kwargs}:
        raise ModelContractError(
            f"{name}'s hyper-parameter 'generator' must be the plain dict {{'arch': generator_arch, "
            f"**generator_kwargs}} (the checkpoint reader rebuilds the generator from it), got {recorded!r}"
        )
    for role in roles:
        if not isinstance(module.evaluated_generator(role), nn.Module):
            raise ModelContractError(f"{name}.evaluated_generator({role!r}) is not a network")
    return module
