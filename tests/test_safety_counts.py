"""Issue 14, item 15: the numbers mean what users read them as (or are named so).

`data.max_dataset_size` takes the first N files of each domain (the CycleGAN reference's meaning);
`trainer.max_steps` counts optimiser steps, two per CycleGAN batch (documented), and images go to W&B at
the batch count that the scalars use, not at the doubled optimiser step.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from helpers import quiet_trainer
from stylegan_transfer.training import samples
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.data import UnpairedDataModule

TINY_G = {"arch": "resnet", "channels": 4, "n_blocks": 1}
TINY_D = {"arch": "patch", "channels": 4, "n_layers": 2}


def test_max_dataset_size_is_a_subset_of_files(cyclegan_dir):
    dm = UnpairedDataModule(
        root=str(cyclegan_dir), num_workers=0, load_size=36, crop_size=32, max_dataset_size=2
    )
    dm.setup("fit")
    files_a = sorted((cyclegan_dir / "trainA").glob("*.jpg"))
    assert dm.train_set.files_a == files_a[:2]  # only these are ever read, over all epochs
    seen = {dm.train_set.files_a[int(dm.train_set._permutation(e)[p])] for e in range(5) for p in range(2)}
    assert seen == set(files_a[:2]) and len(dm.train_set) == 2


class FakeWandb:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def log_image(self, key, images, step, caption) -> None:
        self.steps.append(step)


def test_sample_grids_are_logged_at_the_batch_count(cyclegan_dir, tmp_path, monkeypatch):
    module = CycleGANModule(generator=TINY_G, discriminator=TINY_D, pool_size=2)
    dm = UnpairedDataModule(root=str(cyclegan_dir), num_workers=0, load_size=36, crop_size=32, val_size=2)
    trainer = quiet_trainer(default_root_dir=tmp_path, max_steps=6, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 6 and samples.logged_step(trainer) == 3  # 3 batches, 2 optimiser steps each

    monkeypatch.setattr(samples, "WandbLogger", FakeWandb)
    logger = FakeWandb()
    grid = samples.SampleGrid(dirpath=str(tmp_path / "samples"))
    grid._batch = {"a": torch.zeros(1, 3, 32, 32), "b": torch.zeros(1, 3, 32, 32)}
    fake_trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=0,
        loggers=[logger],
        global_step=trainer.global_step,
        fit_loop=trainer.fit_loop,
    )
    grid.on_validation_epoch_end(fake_trainer, module)
    assert logger.steps == [3]
