"""The Hydra configuration tree, installed as the package `stylegan_transfer.configs` (see pyproject.toml).

`python train.py` reads this folder directly; the `stylegan-train` command reads the installed copy.
"""
