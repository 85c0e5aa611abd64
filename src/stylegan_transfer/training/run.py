"""`train(cfg)`: the one training function behind `python train.py` and `stylegan-train` (Hydra composes `cfg`).

Steps: seed → data (fail fast on missing folders) → module → callbacks/logger → fit → export the
generators (rank 0) → close the W&B run. Returns the final metrics as plain floats. This is the only
place where configuration objects are read; everything below receives typed keyword arguments.
"""

from __future__ import annotations

import inspect
import json
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from stylegan_transfer.atomic import sweep_stale
from stylegan_transfer.datasets import DataError
from stylegan_transfer.discriminators import DISCRIMINATORS
from stylegan_transfer.inference.export import write_generators
from stylegan_transfer.metrics.weights import MetricWeightsError
from stylegan_transfer.networks import GENERATORS
from stylegan_transfer.training.checkpointing import AtomicCheckpointIO, ExportMetadata, RNGState
from stylegan_transfer.training.config_rules import check_config
from stylegan_transfer.training.contract import ModelContractError, check_model
from stylegan_transfer.training.errors import (
    USER_ERRORS,
    ConfigError,
    TrainingInterrupted,
    interrupted_message,
    one_line,
)
from stylegan_transfer.training.launch import launch_rank
from stylegan_transfer.training.quality import ExportBestGenerators, KIDEvaluation
from stylegan_transfer.training.resume import check_resume, find_resume_point
from stylegan_transfer.training.settings import SettingError

log = logging.getLogger(__name__)


def check_networks(model_cfg: DictConfig) -> None:
    """Each network's settings must be ones its architecture takes. `model.generator.arch=unet` keeps the
    ResNet file's `n_blocks`; the fix is the config group, which swaps the whole settings block."""
    for role, registry in (("generator", GENERATORS), ("discriminator", DISCRIMINATORS)):
        net = model_cfg.get(role)
        if net is None or net.get("arch") not in registry:
            continue  # none, or an unknown arch: the registry's own error names the known ones
        arch = net.arch
        accepted = inspect.signature(registry[arch]).parameters
        unknown = sorted(str(k) for k in net if k != "arch" and k not in accepted)
        if unknown:
            raise ConfigError(
                f"model.{role}.arch={arch}: {', '.join(unknown)} are not settings of the {arch} {role}; "
                f"choose the architecture with its config group instead: model/{role}={arch}"
            )


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _prepare_wandb(logger_cfg: DictConfig | None) -> bool:
    """Returns True when a W&B logger is configured; switches it offline when no credentials exist."""
    if logger_cfg is None or "wandb" not in str(logger_cfg.get("_target_", "")).lower():
        return False
    if os.environ.get("WANDB_MODE") is None and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"  # every rank; rank 0 alone creates the run and says so
        if launch_rank() == 0:
            log.warning(
                "W&B: no credentials found, logging offline (no account needed). "
                "To upload later: wandb login && wandb sync %s/wandb/offline-run-*",
                logger_cfg.get("save_dir", "."),
            )
    return True


QUALITY_METRIC = "val/kid"
FALLBACK_METRIC = "val/cycle_l1"
# Each model names its own (`TranslationModel.fallback_metric`: CUT has no cycle, "val/nce"); run_job looks for
# these in a finished run's metrics.
FALLBACK_METRICS = (FALLBACK_METRIC, "val/nce", "val/loss")


def select_by_quality(callbacks: list[L.Callback], fallback: str = FALLBACK_METRIC) -> str | None:
    """Make sure the quality metric can be computed; if the FID Inception weights cannot be had, say so once,
    drop the evaluation and point every selection that monitored it at the fallback metric, explicitly.

    Returns the metric that selection now uses (None when no callback evaluates quality).
    """
    evaluations = [cb for cb in callbacks if isinstance(cb, KIDEvaluation)]
    if not evaluations:
        return None
    try:
        for evaluation in evaluations:
            evaluation.load_inception()
        return QUALITY_METRIC
    except MetricWeightsError as err:
        log.warning(
            "%s is off: %s\nbest.ckpt, export/best/ and the sweep objective fall back to %s, which rewards "
            "under-stylised models (a generator that copies its input minimises it): see docs/training.md "
            "'Choosing the best model'.",
            QUALITY_METRIC,
            err,
            fallback,
        )
    for evaluation in evaluations:
        callbacks.remove(evaluation)
    for callback in callbacks:
        if (
            isinstance(callback, ModelCheckpoint | ExportBestGenerators)
            and callback.monitor == QUALITY_METRIC
        ):
            callback.monitor = fallback
    return fallback


def export_metadata(cfg: DictConfig) -> ExportMetadata:
    """The run's facts that every checkpoint and export carries (style, domains, preprocessing, size)."""
    style = OmegaConf.to_container(cfg.get("style", {}), resolve=True) or {}
    return ExportMetadata(
        style=str(style.get("name", "")),
        domain_a=str(style.get("domain_a", "A")),
        domain_b=str(style.get("domain_b", "B")),
        preprocess=str(cfg.data.get("preprocess", "resize_and_crop")),
        train_size=int(cfg.data.get("crop_size", 256)),
    )


def export_generators(module: L.LightningModule, out_dir: Path, metadata: ExportMetadata) -> list[Path]:
    """Write the module's (a `TranslationModel`) generators (`generator_roles`: g_ab and g_ba, or g_ab alone for fast style and CUT)
    as generator-only safetensors, each its `evaluated_generator` (the moving average when kept)."""
    generators = {role: module.evaluated_generator(role) for role in module.generator_roles}
    return write_generators(
        generators,
        out_dir,
        arch=module.generator_arch,
        kwargs=module.generator_kwargs,
        metadata=metadata.metadata,
        extra={"epoch": int(module.current_epoch), "ema": module.uses_ema},
        log=log.info,
    )


def _log_wandb_artifacts(logger, exported: list[Path], samples_dir: Path) -> None:
    """The exported generators as a W&B model artifact, and the run's sample grids as a second one."""
    import wandb

    run = logger.experiment
    model = wandb.Artifact(
        f"generators-{run.id}", type="model", metadata={"files": [p.name for p in exported]}
    )
    for path in exported:
        model.add_file(str(path))
    run.log_artifact(model, aliases=["latest"])
    if samples_dir.is_dir():
        samples = wandb.Artifact(f"samples-{run.id}", type="samples")
        samples.add_dir(str(samples_dir))
        run.log_artifact(samples)


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(cfg[key]); a constructor refusing a value becomes one ConfigError line naming the key."""
    try:
        return instantiate(cfg[key], **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, SettingError):
            raise ConfigError(f"{key}.{cause}") from None
        if isinstance(cause, ValueError | TypeError):  # a constructor's own check: keep its type
            cause.args = (f"invalid {key} settings: {' '.join(str(cause).split())[:300]}",)
            cause.user_setting = key  # reported like USER_ERRORS
            raise cause from None
        raise


def check_trains_something(trainer: L.Trainer) -> None:
    """Refuse limits that would run no training step (and then export untrained generators)."""
    for name in ("max_epochs", "max_steps", "limit_train_batches"):
        value = getattr(trainer, name, None)
        if value == 0:
            raise ConfigError(f"trainer.{name}=0 would train nothing (and export untrained generators)")


def run_job(cfg: DictConfig) -> float | None:
    """Hydra job entry: train, then write result.json into the run folder (rank 0).

    In a multirun a failing job is logged and recorded (status "failed"), and the sweep goes on with the
    next job; a single run re-raises. Returns `optimized_metric`'s value for sweepers (NaN on failure).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from stylegan_transfer.training.sweeps import write_result

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    metric = cfg.get("optimized_metric") or ""
    output_dir = Path(cfg.paths.output_dir)
    try:
        metrics = train(cfg)
    except Exception as err:
        if rank_zero_only.rank == 0:
            write_result(output_dir, overrides=overrides, metric=metric, metrics=None, error=err)
        if isinstance(err, TrainingInterrupted):  # a scheduler's stop ends a sweep too, non-zero
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from err
        if not multirun and (isinstance(err, USER_ERRORS) or hasattr(err, "user_setting")):
            print(f"error: {one_line(err)}", file=sys.stderr)  # bad input: says what to do, no traceback
            raise SystemExit(2) from err
        if not multirun:
            raise
        log.exception("job %s failed; the sweep continues with the next job", output_dir.name)
        return float("nan")
    if metric == QUALITY_METRIC and QUALITY_METRIC not in metrics:
        # quality could not be measured (no Inception weights): said when training began
        metric = next((m for m in FALLBACK_METRICS if m in metrics), metric)
    # Every rank logs its final metrics to its own log file (train.log, train.rank<N>.log): values logged with
    # sync_dist agree across ranks, per-step training losses are each rank's own shard.
    rank = rank_zero_only.rank  # the Trainer set it to the global rank
    log.info("final metrics (rank %d): %s", rank, json.dumps(metrics, sort_keys=True))
    if rank == 0:
        write_result(output_dir, overrides=overrides, metric=metric, metrics=metrics)
    return metrics.get("optimized_metric")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train a model as `cfg` describes; returns the last logged metrics (plus `optimized_metric`'s value)."""
    try:
        check_config(cfg)  # every numeric and boolean setting, before anything is seeded or built
    except SettingError as err:
        raise ConfigError(str(err)) from None
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = build(cfg, "data")
    datamodule.check()  # missing or empty folders fail here, in seconds
    check_networks(cfg.model)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:  # a broken last.ckpt falls back to the newest intact checkpoint beside it
        ckpt_path = str(find_resume_point(ckpt_path))
    try:
        module = check_model(build(cfg, "model"))  # all the rest relies on the model contract alone
    except ModelContractError as err:
        raise ConfigError(f"model._target_={cfg.model.get('_target_')}: {err}") from None
    if ckpt_path:
        check_resume(ckpt_path, module)  # weights-only read; one line if it is not a fitting checkpoint

    metadata = export_metadata(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [RNGState(), metadata]  # exact resume and self-describing checkpoints, whatever the config
    selected_by = select_by_quality(callbacks, module.fallback_metric)
    # temporary files of runs killed while saving (checkpoints, samples, exports, result.json)
    folders = {Path(c.dirpath) for c in callbacks if getattr(c, "dirpath", None)}
    for folder in folders | {output_dir, output_dir / "export"}:
        sweep_stale(folder)
    uses_wandb = _prepare_wandb(cfg.get("logger"))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = build(
        cfg, "trainer", callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()]
    )
    check_trains_something(trainer)
    if trainer.is_global_zero:
        log.info("run folder: %s", output_dir)
        if uses_wandb and logger:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        # weights_only: Lightning's own read cannot run pickled code, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except DataError as err:  # from a DataLoader worker: keep the message, drop the worker's traceback
            raise DataError(one_line(err)) from None
        except SystemExit as err:  # Lightning's SIGTERMException, or its exit after Ctrl-C
            if isinstance(err, SIGTERMException):
                raise TrainingInterrupted(
                    interrupted_message("SIGTERM", trainer, callbacks), exit_code=143
                ) from None
            if trainer.interrupted:
                raise TrainingInterrupted(
                    interrupted_message("Ctrl-C", trainer, callbacks), exit_code=130
                ) from None
            raise
        if trainer.global_step == 0 and not trainer.interrupted:
            raise ConfigError(
                "no training step ran (check trainer.max_epochs, trainer.max_steps and the data); "
                "nothing was exported"
            )
        if trainer.is_global_zero and cfg.get("export", True) and not trainer.interrupted:
            exported = export_generators(module, output_dir / "export", metadata)
            if uses_wandb and logger:
                _log_wandb_artifacts(logger, exported, output_dir / "samples")
            log.info(
                "done. samples: %s  generators: %s",
                output_dir / "samples" / "latest.png",
                output_dir / "export",
            )
    finally:
        if uses_wandb:
            import wandb

            wandb.finish()

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    name = objective(cfg.get("optimized_metric"), selected_by)
    if name:
        metrics["optimized_metric"] = metrics.get(name, float("nan"))
    return metrics


def objective(configured: str | None, selected_by: str | None) -> str | None:
    """The metric sweeps optimise: the configured one, or the fallback when quality could not be measured."""
    if configured == QUALITY_METRIC and selected_by not in (None, QUALITY_METRIC):
        return selected_by
    return configured


__all__ = [
    "DataError",
    "build",
    "check_networks",
    "run_job",
    "train",
]
