"""What every process of a launch agrees on before training: the `st.*` config resolvers, this process's rank,
the run folder's time stamp, the sweep's name; and the known warnings it silences.

The entry points (train.py, `stylegan-train`) and tests call `register_resolvers`; nothing here runs at import.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from datetime import datetime, timedelta
from pathlib import Path

from omegaconf import OmegaConf

from stylegan_transfer import devices
from stylegan_transfer.datasets import DEMO_ROOT

ASSETS = DEMO_ROOT.parent


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
    OmegaConf.register_new_resolver("st.cpu_precision", devices.cpu_precision, replace=True)
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
