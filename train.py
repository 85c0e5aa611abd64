"""Train a translation model.  python train.py [style=vangogh] [trainer=gpu] [experiment=...] [-m sweeps]

The same as the installed `stylegan-train` command, reading the repository's configs/ folder directly.
"""

from pathlib import Path

from stylegan_transfer.training.cli import launch

if __name__ == "__main__":
    launch(str(Path(__file__).resolve().parent / "configs"))
