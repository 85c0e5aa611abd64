"""`stylegan-train`: `python train.py` as an installed command, composing the configs shipped in the package.

    stylegan-train [style=vangogh] [trainer=gpu] [experiment=...] [-m sweeps]   (from any directory)

Both entry points go through `launch`: resolvers and warning filters are set up here, when a command runs,
never at import time. The one copy of the configs is the repository's top-level `configs/`; the wheel ships
it as the package `stylegan_transfer.configs` (pyproject.toml maps the folder to that name).
"""

from __future__ import annotations

import hydra

from stylegan_transfer.training.launch import quiet_known_warnings, register_resolvers
from stylegan_transfer.training.run import run_job

PACKAGED_CONFIGS = "pkg://stylegan_transfer.configs"


def launch(config_path: str) -> None:
    """Run one Hydra job (or a multirun) of `run_job` with `train.yaml` from `config_path`: an absolute
    folder or a `pkg://` package. Hydra reads the overrides from the command line."""
    quiet_known_warnings()
    register_resolvers()
    hydra.main(version_base="1.3", config_path=config_path, config_name="train")(run_job)()


def main() -> None:
    launch(PACKAGED_CONFIGS)


if __name__ == "__main__":
    main()
