"""Beyond one machine: multi-node DDP (torchrun, SLURM) and cluster sweeps (Hydra's submitit launcher).

The slow tests run the real engines on loopback: two torchrun "nodes" on 127.0.0.1 (gloo) against one node
with two processes, a sweep through submitit's local executor, and the SLURM preset rendered by submitit
with a stand-in `sbatch` command (no cluster here).
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from omegaconf import open_dict
from safetensors.torch import load_file

from helpers import CONFIGS, REPO, TINY
from stylegan_transfer.training import launch as launch_module
from stylegan_transfer.training.launch import launch_stamp, register_resolvers
from stylegan_transfer.training.optim import batch_lr_factor
from stylegan_transfer.training.sweeps import read_results

LAUNCH_ENV_KEYS = (
    "RANK",
    "LOCAL_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "NODE_RANK",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def launch_env(monkeypatch):
    """A clean slate of launcher variables (torchrun's, SLURM's), and Lightning's rank restored afterwards."""
    for key in LAUNCH_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key, raising=False)
    rank = rank_zero_only.rank
    yield monkeypatch
    rank_zero_only.rank = utils_rank_zero_only.rank = rank  # a Trainer built here set them to its rank


def torchrun_env(monkeypatch, *, rank: int, node: int, nodes: int, port: int, restart: int = 0) -> None:
    """What torchrun's agent sets for one worker (one process per node)."""
    for key, value in {
        "RANK": rank,
        "LOCAL_RANK": 0,
        "GROUP_RANK": node,
        "WORLD_SIZE": nodes,
        "LOCAL_WORLD_SIZE": 1,
        "GROUP_WORLD_SIZE": nodes,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "TORCHELASTIC_RUN_ID": "none",
        "TORCHELASTIC_RESTART_COUNT": restart,
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }.items():
        monkeypatch.setenv(key, str(value))


def slurm_env(monkeypatch, *, rank: int, nodes: int, job: str = "4242") -> None:
    """What srun sets for one task of `nodes` nodes x 1 task."""
    for key, value in {
        "SLURM_NTASKS": nodes,
        "SLURM_NTASKS_PER_NODE": 1,
        "SLURM_NNODES": nodes,
        "SLURM_PROCID": rank,
        "SLURM_LOCALID": 0,
        "SLURM_NODEID": rank,
        "SLURM_JOB_ID": job,
        "SLURM_STEP_ID": 0,
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "node[0-1]",
    }.items():
        monkeypatch.setenv(key, str(value))


class FixedClock:
    """Stands in for `datetime` in run.py: now() returns the time the test sets."""

    value = datetime(2030, 1, 2, 3, 4, 5)

    @classmethod
    def now(cls) -> datetime:
        return cls.value


# ----------------------------------------------------------------------------- one run folder per launch
def test_torchrun_ranks_agree_on_the_run_folder_through_the_agent_store(launch_env):
    """Each rank resolves hydra.run.dir itself; they must get one time stamp even when their clocks differ."""
    port = free_port()
    server = torch.distributed.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    launch_env.setattr(launch_module, "datetime", FixedClock)
    pattern = "%Y-%m-%d_%H-%M-%S"

    torchrun_env(launch_env, rank=1, node=1, nodes=2, port=port)
    FixedClock.value = datetime(2030, 1, 2, 3, 4, 5)
    first = launch_stamp(pattern)  # node 1 happens to ask first
    torchrun_env(launch_env, rank=0, node=0, nodes=2, port=port)
    FixedClock.value = datetime(2030, 1, 2, 3, 4, 9)  # node 0 resolves four seconds later
    assert first == "2030-01-02_03-04-05"
    assert launch_stamp(pattern) == first

    torchrun_env(launch_env, rank=0, node=0, nodes=2, port=port, restart=1)
    assert launch_stamp(pattern) == "2030-01-02_03-04-09"  # a restarted attempt gets a fresh folder
    del server


def test_single_process_and_srun_stamps(launch_env):
    launch_env.setattr(launch_module, "datetime", FixedClock)
    FixedClock.value = datetime(2030, 1, 2, 3, 4, 5)
    assert launch_stamp("%Y-%m-%d_%H-%M-%S") == "2030-01-02_03-04-05"
    slurm_env(launch_env, rank=1, nodes=2, job="777")
    assert launch_stamp("%Y-%m-%d_%H-%M-%S") == "slurm-777.0"  # every task of the step: the same folder
    launch_env.setenv("SLURM_JOB_NAME", "interactive")  # an salloc shell is one process, not a launch
    assert launch_stamp("%Y-%m-%d_%H-%M-%S") == "2030-01-02_03-04-05"


def test_torchrun_without_an_agent_store_asks_for_hydra_run_dir(launch_env):
    torchrun_env(launch_env, rank=0, node=0, nodes=2, port=free_port())
    launch_env.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    with pytest.raises(RuntimeError, match=r"hydra\.run\.dir="):
        launch_stamp("%Y")


def compose_with_hydra(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY, *overrides], return_hydra_config=True)


@pytest.mark.parametrize(
    ("rank", "subdir", "log_name"), [(0, ".hydra", "train.log"), (1, None, "train.rank1.log")]
)
def test_only_rank_zero_writes_the_hydra_folder_and_each_rank_has_its_log(launch_env, rank, subdir, log_name):
    launch_env.setenv("RANK", str(rank))
    cfg = compose_with_hydra()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/runs/x"
        cfg.hydra.job.name = "train"
    assert cfg.hydra.output_subdir == subdir
    assert cfg.hydra.job_logging.handlers.file.filename == f"/runs/x/{log_name}"


# ----------------------------------------------------------------------------- ranks, shards and LR across nodes
def node_one_of_two(launch_env, launcher: str):
    if launcher == "torchrun":
        torchrun_env(launch_env, rank=1, node=1, nodes=2, port=free_port())
    else:
        slurm_env(launch_env, rank=1, nodes=2)


@pytest.mark.parametrize(
    ("launcher", "environment"), [("torchrun", TorchElasticEnvironment), ("srun", SLURMEnvironment)]
)
def test_second_node_gets_global_rank_shard_and_global_batch_lr(
    launch_env, compose_cfg, cyclegan_dir, launcher, environment
):
    """Node 1 of 2 (one process each): global rank 1 of 2, the second data shard, and the LR of batch x 2."""
    node_one_of_two(launch_env, launcher)
    cfg = compose_cfg(
        "trainer=ddp",
        "perf=none",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "model.lr_scaling=linear",
        "data.batch_size=2",
        "style=custom",
        f"data.dir_a={cyclegan_dir / 'trainA'}",
        f"data.dir_b={cyclegan_dir / 'trainB'}",
    )
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.cluster_environment, environment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (1, 0, 1)
    assert trainer.world_size == 2 and trainer.num_nodes == 2 and not trainer.is_global_zero

    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    sampler = datamodule.train_dataloader().sampler
    assert (sampler.rank, sampler.world_size) == (1, 2)
    keys = list(sampler)
    assert keys == list(range(len(datamodule.train_set)))[1::2]  # the odd positions: rank 0 has the even

    module = instantiate(cfg.model)
    module.trainer = trainer
    optimizers, _ = module.configure_optimizers()
    expected = cfg.model.lr * batch_lr_factor(2 * 2, "linear")  # per-device batch 2 x 2 nodes
    assert optimizers[0].param_groups[0]["lr"] == pytest.approx(expected)
    assert expected == pytest.approx(4 * cfg.model.lr)


# ----------------------------------------------------------------------------- W&B: one group per sweep
def test_wandb_group_is_the_sweep_folder_in_a_multirun_and_absent_otherwise(tmp_path):
    try:
        for mode, group in (("MULTIRUN", "lr_sweep"), ("RUN", None)):
            cfg = compose_with_hydra(
                "logger=wandb", f"hydra.mode={mode}", f"hydra.sweep.dir={tmp_path / 'lr_sweep'}"
            )
            HydraConfig.instance().set_config(cfg)  # what Hydra does before it calls the job
            assert cfg.logger.group == group, mode
    finally:
        HydraConfig.instance().cfg = None
    assert compose_with_hydra("logger=wandb").logger.group is None  # no Hydra job at all (tests, notebooks)


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def wandb_run_group(offline_run: Path) -> str:
    """The run group stored in an offline run's log (records framed like LevelDB's log: 32 KiB blocks of
    checksum(4) length(2) type(1) payload; the file starts with a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(offline_run.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: the block is padded
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.HasField("run"):
                return record.run.run_group
    raise AssertionError(f"no run record in {offline_run}")


# ----------------------------------------------------------------------------- multi-node DDP on loopback
DDP_CPU = [
    *TINY,
    "trainer=ddp",
    "perf=none",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "model.lr_scaling=linear",  # the LR follows the global batch: 2 processes x 1 image
    "trainer.log_every_n_steps=1",
]


def launch_env_vars() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS and not k.startswith("SLURM_")}
    return {
        **env,
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "1",
    }


def torchrun(cwd: Path, log: Path, *, nnodes: int, nproc: int, node_rank: int, port: int, args: list[str]):
    cwd.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        f"--node-rank={node_rank}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        str(REPO / "train.py"),
        *args,
    ]
    with open(log, "w") as handle:
        return subprocess.Popen(
            command, cwd=cwd, env=launch_env_vars(), stdout=handle, stderr=subprocess.STDOUT
        )


def wait_all(processes: dict[str, subprocess.Popen], logs: dict[str, Path], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    try:
        for name, process in processes.items():
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{name} exited {code}:\n{logs[name].read_text()[-4000:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def final_metrics(log_file: Path) -> dict[str, float]:
    lines = [line for line in log_file.read_text().splitlines() if "final metrics (rank" in line]
    assert len(lines) == 1, log_file
    return json.loads(lines[0].split("): ", 1)[1])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_two_nodes_by_torchrun_match_one_node_with_two_processes(tmp_path):
    """2 nodes x 1 process (two torchrun agents, rendezvous on 127.0.0.1) == 1 node x 2 processes, bit for bit."""
    nodes_cwd, single_run = tmp_path / "nodes", tmp_path / "single" / "run"
    logs = {name: tmp_path / f"{name}.log" for name in ("node0", "node1", "single")}
    two_nodes, one_node = free_port(), free_port()
    processes = {}
    # The 1-node run runs beside the 2-node one (the CPU is shared; they only wait on each other's cores).
    processes["single"] = torchrun(
        single_run.parent,
        logs["single"],
        nnodes=1,
        nproc=2,
        node_rank=0,
        port=one_node,
        args=[*DDP_CPU, "trainer.devices=2", "logger=csv", f"hydra.run.dir={single_run}"],
    )
    for node in (0, 1):  # no hydra.run.dir: the ranks must agree on outputs/<style>/<stamp> themselves
        processes[f"node{node}"] = torchrun(
            nodes_cwd,
            logs[f"node{node}"],
            nnodes=2,
            nproc=1,
            node_rank=node,
            port=two_nodes,
            args=[*DDP_CPU, "trainer.num_nodes=2", "trainer.devices=1", "logger=wandb"],
        )
        time.sleep(2.0)  # the second node starts later: a clock-based folder name would differ
    wait_all(processes, logs)

    folders = list((nodes_cwd / "outputs" / "demo").iterdir())
    assert len(folders) == 1, folders  # one run folder for both nodes
    multi = folders[0]
    assert sorted(p.name for p in nodes_cwd.iterdir()) == ["outputs"]
    assert sorted(p.name for p in single_run.parent.iterdir()) == ["run"]
    for run in (multi, single_run):
        ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert ckpts == ["best.ckpt", "epoch_0001.ckpt", "last.ckpt"], ckpts  # one set, rank 0's
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.rank1.log").is_file()
        assert sorted(p.name for p in (run / "samples").iterdir()) == [
            "epoch_0000.png",
            "epoch_0001.png",
            "latest.png",
        ]
    assert len(wandb_runs(multi)) == 1  # W&B: one run for the job (rank 0's), none from node 1

    # The same training: same weights (generators exported, every network and optimiser in the checkpoint).
    for name in ("g_ab", "g_ba"):
        a, b = (
            load_file(multi / "export" / f"{name}.safetensors"),
            load_file(single_run / "export" / f"{name}.safetensors"),
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_multi, state_single = (
        weights(multi / "checkpoints" / "last.ckpt"),
        weights(single_run / "checkpoints" / "last.ckpt"),
    )
    assert state_multi.keys() == state_single.keys()
    assert all(torch.equal(state_multi[k], state_single[k]) for k in state_multi)

    # Rank 0 of both launches saw the same data and logged the same numbers.
    result_multi = json.loads((multi / "result.json").read_text())
    result_single = json.loads((single_run / "result.json").read_text())
    assert result_multi["status"] == result_single["status"] == "ok"

    def numbers(metrics: dict) -> dict:  # wall-clock durations (val/kid_seconds) differ between any two runs
        return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}

    assert numbers(result_multi["metrics"]) == numbers(result_single["metrics"])
    # Across the ranks of one launch: synced values (validation, LR) agree; step losses are each rank's shard.
    for run in (multi, single_run):
        rank0, rank1 = final_metrics(run / "train.log"), final_metrics(run / "train.rank1.log")
        assert rank0 == json.loads((run / "result.json").read_text())["metrics"]
        for key in ("val/cycle_l1", "val/identity_l1", "train/lr", "optimized_metric"):
            assert rank0[key] == rank1[key], key
        assert rank0["train/loss_g"] != rank1["train/loss_g"]  # different images on each rank
    # LR rule on the global batch (2 nodes x 1 image, linear): 2 x lr, halved by the decay in the last epoch.
    base_lr = yaml.safe_load((multi / ".hydra" / "config.yaml").read_text())["model"]["lr"]
    assert result_multi["metrics"]["train/lr"] == pytest.approx(base_lr * 2 * 0.5, rel=1e-6)


# ----------------------------------------------------------------------------- cluster sweeps (submitit)
def run_sweep(
    *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", "-m", *args],
        cwd=REPO,
        env={**launch_env_vars(), "HYDRA_FULL_ERROR": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_two_job_sweep_through_submitit_local_executor(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra [cluster]")
    sweep = tmp_path / "lambda_sweep"
    result = run_sweep(
        "hydra/launcher=local", *TINY, "logger=wandb", "model.lambda_cycle=5,10", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = read_results(sweep)
    assert sorted(j.folder.name for j in jobs) == [
        "0_debug=tiny,logger=wandb,model.lambda_cycle=5",
        "1_debug=tiny,logger=wandb,model.lambda_cycle=10",
    ]
    # the metric is val/kid where the FID Inception weights are cached (CI), else the explicit fallback
    assert all(j.ok and math.isfinite(j.value) and j.metric in ("val/kid", "val/cycle_l1") for j in jobs)
    table = (sweep / "sweep_report.md").read_text()  # written by the launching process at the end
    assert f"| 1 | {jobs[0].number} | ok |" in table and f"| 2 | {jobs[1].number} | ok |" in table
    assert (
        len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
    )  # submitit ran them, not Hydra's basic launcher
    for job in jobs:
        hydra_cfg = yaml.safe_load((job.folder / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["mode"] == "MULTIRUN"  # so a failing job is recorded and the sweep goes on
        assert (job.folder / "export" / "g_ab.safetensors").is_file()
        runs = wandb_runs(job.folder)
        assert len(runs) == 1 and wandb_run_group(runs[0]) == "lambda_sweep"


FAKE_SBATCH = """#!/bin/sh
cp "$1" "{keep}"
echo "sbatch: error: no cluster here (stand-in command of the test)" >&2
exit 1
"""
FAKE_SRUN = "#!/bin/sh\nexit 1\n"  # submitit only checks that srun exists


@pytest.mark.slow
def test_slurm_preset_renders_the_sbatch_script_with_the_usual_knobs(tmp_path):
    """No cluster here: a stand-in `sbatch` keeps the script submitit hands it, then refuses the submission."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra [cluster]")
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    for name, text in (
        ("sbatch", FAKE_SBATCH.format(keep=script)),
        ("srun", FAKE_SRUN),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    result = run_sweep(
        "hydra/launcher=slurm",
        *TINY,
        "model.lambda_cycle=5,10",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.mem_gb=48",
        "hydra.launcher.setup=['module load cuda']",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        timeout=300,
    )
    assert result.returncode != 0 and "no cluster here" in result.stderr
    text = script.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",  # one task (process) per GPU, for Lightning's SLURM environment
        "#SBATCH --time=90",
        "#SBATCH --mem=48GB",
        "#SBATCH --array=0-1%2",  # both jobs at once (array_parallelism caps it)
        "module load cuda",
    ):
        assert line in text, f"{line!r} not in:\n{text}"
    assert "srun" in text and "submitit.core._submit" in text
