"""Training: the only package that imports Lightning, Hydra or wandb.

run (train / run_job), cli (`stylegan-train`), data (the DataModule), contract (what every model module provides:
how to add a model), cyclegan, cut and fast_style (the LightningModules; adversarial holds what CycleGAN and CUT share), settings (checks of settings), optim (LR rules),
callbacks (sample grid, crash checkpoint, atomic IO, RNG state, export metadata, KID, best export), resume (checks
a resume checkpoint), sweeps.
"""
