"""Train a translation model.  python train.py [style=vangogh] [trainer=gpu] [experiment=...] [-m sweeps]"""

import hydra
from omegaconf import DictConfig

from stylegan_transfer.training.run import quiet_known_warnings, register_resolvers, run_job


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    quiet_known_warnings()
    register_resolvers()
    main()
