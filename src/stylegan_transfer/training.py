"""`train(cfg)`: the one training function behind `python train.py` (Hydra composes `cfg`).

Steps: seed → data (fail fast on missing folders) → module → callbacks/logger → fit → export the
generators (rank 0) → close the W&B run. Returns the final metrics as plain floats.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stylegan_transfer.callbacks import AtomicCheckpointIO
from stylegan_transfer.data import DataError
from stylegan_transfer.export import save_generator

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent / "assets"


def register_resolvers() -> None:
    """`${st.asset:demo}` → a folder shipped inside the package; `${st.sum:a,b}` → a + b;
    `${st.parent:path}` → the folder containing `path`."""
    OmegaConf.register_new_resolver("st.asset", lambda name: str(ASSETS / name), replace=True)
    OmegaConf.register_new_resolver(
        "st.parent", lambda path: str(Path(path).expanduser().parent), replace=True
    )
    OmegaConf.register_new_resolver("st.sum", lambda *xs: sum(xs), replace=True)


register_resolvers()


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
        os.environ["WANDB_MODE"] = "offline"
        log.warning(
            "W&B: no credentials found, logging offline (no account needed). "
            "To upload later: wandb login && wandb sync %s/wandb/offline-run-*",
            logger_cfg.get("save_dir", "."),
        )
    return True


def export_generators(module: L.LightningModule, out_dir: Path, cfg: DictConfig) -> list[Path]:
    """Write g_ab and g_ba (those the module has: fast style has only g_ab) as generator-only safetensors."""
    style = OmegaConf.to_container(cfg.get("style", {}), resolve=True) or {}
    domains = {"a": style.get("domain_a", "A"), "b": style.get("domain_b", "B")}
    extra = {
        "style": style.get("name", ""),
        "preprocess": cfg.data.get("preprocess", "resize_and_crop"),
        "train_size": int(cfg.data.get("crop_size", 256)),
        "epoch": int(module.current_epoch),
    }
    paths = []
    for name, src, dst in (("g_ab", "a", "b"), ("g_ba", "b", "a")):
        net = getattr(module, name, None)
        if net is None:
            continue
        paths.append(
            save_generator(
                net,
                out_dir / f"{name}.safetensors",
                arch=module.generator_arch,
                kwargs=module.generator_kwargs,
                direction=f"{domains[src]} -> {domains[dst]}",
                extra={**extra, "role": name},
            )
        )
    return paths


def train(cfg: DictConfig) -> dict[str, float]:
    """Train a model as `cfg` describes; returns the last logged metrics (plus `optimized_metric`'s value)."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    datamodule.check()  # missing or empty folders fail here, in seconds
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path {cfg.ckpt_path} does not exist; give the path of a .ckpt file "
            "(for example <run>/checkpoints/last.ckpt)."
        )
    module = instantiate(cfg.model)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    uses_wandb = _prepare_wandb(cfg.get("logger"))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()]
    )
    if trainer.is_global_zero:
        log.info("run folder: %s", output_dir)
        if uses_wandb and logger:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if trainer.is_global_zero and cfg.get("export", True) and not trainer.interrupted:
            for path in export_generators(module, output_dir / "export", cfg):
                log.info("exported %s", path)
    finally:
        if uses_wandb:
            import wandb

            wandb.finish()

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    name = cfg.get("optimized_metric")
    if name:
        metrics["optimized_metric"] = metrics.get(name, float("nan"))
    return metrics


__all__ = ["DataError", "register_resolvers", "train"]
