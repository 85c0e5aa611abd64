"""`train(cfg)`: the one training function behind `python train.py` and `stylegan-train` (Hydra composes `cfg`).

Steps: seed → data (fail fast on missing folders) → module → callbacks/logger → fit → export the
generators (rank 0) → close the W&B run. Returns the final metrics as plain floats. This is the only
place where configuration objects are read; everything below receives typed keyword arguments.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import netrc
import os
import sys
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from stylegan_transfer import devices
from stylegan_transfer.atomic import sweep_stale
from stylegan_transfer.datasets import DEMO_ROOT, DataError
from stylegan_transfer.inference.checkpoint import EMA_SUFFIX, ROLES
from stylegan_transfer.inference.export import write_generators
from stylegan_transfer.metrics.weights import MetricWeightsError
from stylegan_transfer.networks import DISCRIMINATORS, GENERATORS
from stylegan_transfer.perceptual import VGGWeightsError
from stylegan_transfer.training.callbacks import (
    AtomicCheckpointIO,
    CheckpointOnException,
    ExportBestGenerators,
    ExportMetadata,
    KIDEvaluation,
    RNGState,
    evaluated_generator,
)
from stylegan_transfer.training.config_rules import check_config
from stylegan_transfer.training.resume import ResumeError, check_resume, find_resume_point
from stylegan_transfer.training.settings import SettingError

log = logging.getLogger(__name__)
ASSETS = DEMO_ROOT.parent


class ConfigError(ValueError):
    """A configuration that composes but cannot be built, or a setting that is invalid or would train
    nothing; the message names the key and the override that fixes it."""


class TrainingInterrupted(Exception):
    """Training stopped by SIGTERM or Ctrl-C; `exit_code` is the conventional 128 + signal number and
    `status` ("interrupted") is what result.json records."""

    status = "interrupted"

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# one clear line, exit code 2
USER_ERRORS = (DataError, VGGWeightsError, FileNotFoundError, ConfigError, ResumeError)


def quiet_known_warnings() -> None:
    """Lightning 2.6 on torch 2.14 warns about its own pytree use on every fit, and about modules in eval mode
    at the start of training: the frozen VGG trunk of the perceptual terms, always eval by design
    (`perceptual.VGGFeatures`). Nothing a user can act on."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def register_resolvers() -> None:
    """`${st.asset:demo}` → a packaged folder; `${st.sum:a,b}` → a + b; `${st.log2:n}` → floor(log2 n);
    `${st.cpu_precision:}` → "bf16-mixed" on CPUs with native bf16, else "32-true" (devices.cpu_precision);
    `${st.dirname:...}` → a safe folder name; `${st.parent:path}` → the folder containing `path`. For
    multi-process launches (configs/hydra): `${st.launch_stamp:FORMAT}` → the run folder's time stamp, the same
    in every process of a launch; `${st.rank_zero:X}` → X on rank 0, null elsewhere; `${st.rank_suffix:}` → ""
    on rank 0, ".rank<N>" elsewhere; `${st.sweep_name:}` → the sweep folder's name in a multirun, null otherwise
    (the W&B group). Called by the entry points (train.py, `stylegan-train`) and by tests, never at import
    time; Hydra carries them into the processes of its launchers (submitit)."""
    OmegaConf.register_new_resolver("st.asset", lambda name: str(ASSETS / name), replace=True)
    OmegaConf.register_new_resolver(
        "st.parent", lambda path: str(Path(path).expanduser().parent), replace=True
    )
    OmegaConf.register_new_resolver("st.sum", lambda *xs: sum(xs), replace=True)
    OmegaConf.register_new_resolver("st.log2", lambda n: int(math.log2(int(n))), replace=True)
    OmegaConf.register_new_resolver("st.cpu_precision", lambda: devices.cpu_precision(), replace=True)
    OmegaConf.register_new_resolver("st.dirname", safe_dirname, replace=True)
    OmegaConf.register_new_resolver("st.launch_stamp", launch_stamp, replace=True, use_cache=True)
    OmegaConf.register_new_resolver(
        "st.rank_zero", lambda value: value if launch_rank() == 0 else None, replace=True
    )
    OmegaConf.register_new_resolver("st.rank_suffix", rank_suffix, replace=True)
    OmegaConf.register_new_resolver("st.sweep_name", sweep_name, replace=True)


def safe_dirname(text: str, limit: int = 120) -> str:
    """A folder name from `key=value,...` overrides: '/' replaced, long ones cut and made unique by a hash."""
    text = str(text).replace("/", "_") or "default"
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9]}_{digest}"


# ----------------------------------------------------------------------------- one run folder per launch
RUN_STAMP_KEY = "stylegan_transfer/run_stamp"


def launch_rank() -> int:
    """This process's global rank as its launcher set it, before torch.distributed starts: torchrun's RANK,
    Lightning's own re-launch's LOCAL_RANK, srun's SLURM_PROCID (Lightning reads the same keys); else 0."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def rank_suffix() -> str:
    """ "" on rank 0, ".rank<N>" elsewhere: each process of a multi-process run logs to its own file."""
    rank = launch_rank()
    return f".rank{rank}" if rank else ""


def _launched_by_srun() -> bool:
    """Several SLURM tasks of one step (Lightning's SLURMEnvironment rule: an interactive shell is not)."""
    env = os.environ
    return (
        env.get("SLURM_NTASKS", "1").isdigit()
        and int(env.get("SLURM_NTASKS", "1")) > 1
        and "SLURM_JOB_ID" in env
        and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    )


def launch_stamp(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The run folder's time stamp, identical in every process of one launch, so that all ranks (and all
    nodes) write into one folder.

    One process: the local time. torchrun (WORLD_SIZE > 1): the first process to ask stores its time in
    torchrun's own rendezvous store (the TCPStore that torchrun's agent serves at MASTER_ADDR:MASTER_PORT
    for the process group) and every other rank reads it back; each restart attempt gets its own folder.
    srun with several tasks: `slurm-<job id>.<step id>`, which all tasks share.
    """
    env = os.environ
    local = datetime.now().strftime(pattern)
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            raise RuntimeError(
                "torchrun runs without its agent store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1?), so the ranks "
                "cannot agree on a run folder: pass hydra.run.dir=<a folder every node can reach>"
            )
        from torch.distributed import PrefixStore, TCPStore

        store = TCPStore(
            env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=300)
        )
        attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = PrefixStore(f"{RUN_STAMP_KEY}/attempt_{attempt}", store)
        return store.compare_set(pattern, "", local).decode()
    if _launched_by_srun():
        return f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}"
    return local


def sweep_name() -> str | None:
    """The sweep folder's name in a Hydra multirun (every job of one sweep shares it), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(str(hydra_cfg.sweep.dir)).name


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
# Per module: a module's `fallback_metric` attribute names its own (CUT has no cycle: "val/nce").
FALLBACK_METRICS = (FALLBACK_METRIC, "val/nce")


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
    """Write g_ab and g_ba (those the module has: fast style and CUT have only g_ab) as generator-only
    safetensors; a generator's moving average (`g_ab_ema`) when the module keeps one."""
    found = {role: evaluated_generator(module, role) for role in ROLES}
    generators = {role: net for role, net in found.items() if net is not None}
    ema = all(getattr(module, role + EMA_SUFFIX, None) is not None for role in generators)
    return write_generators(
        generators,
        out_dir,
        arch=module.generator_arch,
        kwargs=module.generator_kwargs,
        metadata=metadata.metadata,
        extra={"epoch": int(module.current_epoch), "ema": ema},
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


def _interrupted_message(cause: str, trainer: L.Trainer, callbacks: list) -> str:
    saved = [
        Path(cb.dirpath) / "interrupted.ckpt"
        for cb in callbacks
        if isinstance(cb, CheckpointOnException) and (Path(cb.dirpath) / "interrupted.ckpt").is_file()
    ]
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if not saved:
        return f"training stopped by {cause} at {where}; no state was saved (nothing was trained yet)"
    return (
        f"training stopped by {cause} at {where}; state saved to {saved[0]}: resume with ckpt_path={saved[0]} "
        "(the epoch goes on with the batches it had not trained; only its epoch-mean metrics restart)"
    )


def one_line(err: BaseException) -> str:
    """The message of a user error; for one re-raised from a DataLoader worker (whose text holds the worker's
    traceback), the original message alone."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(err).__module__}.{type(err).__name__}: "
        text = last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")
    return text


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
    module = build(cfg, "model")
    if ckpt_path:
        check_resume(ckpt_path, module)  # weights-only read; one line if it is not a fitting checkpoint

    metadata = export_metadata(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [RNGState(), metadata]  # exact resume and self-describing checkpoints, whatever the config
    selected_by = select_by_quality(callbacks, getattr(module, "fallback_metric", FALLBACK_METRIC))
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
                    _interrupted_message("SIGTERM", trainer, callbacks), exit_code=143
                ) from None
            if trainer.interrupted:
                raise TrainingInterrupted(
                    _interrupted_message("Ctrl-C", trainer, callbacks), exit_code=130
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
    "ConfigError",
    "DataError",
    "check_networks",
    "quiet_known_warnings",
    "register_resolvers",
    "run_job",
    "train",
]
