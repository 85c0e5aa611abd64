"""Train a translation model.  python train.py [style=vangogh] [trainer=gpu] [experiment=...] [-m sweeps]"""

import hydra
from omegaconf import DictConfig

from stylegan_transfer.training import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("optimized_metric")


if __name__ == "__main__":
    main()
