"""Everything else is in pyproject.toml. The package list lives here because pyproject.toml cannot combine
find() over src/ with one package from elsewhere: the top-level configs/ folder, installed as
`stylegan_transfer.configs` (pyproject.toml's package-dir maps it)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "stylegan_transfer.configs"])
