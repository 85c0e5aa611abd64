"""Training: the only package that imports Lightning, Hydra or wandb.

run (train / run_job), cli (`stylegan-train`), data (the DataModule), cyclegan, cut and fast_style
(LightningModules; adversarial holds what CycleGAN and CUT share), settings (checks of settings), optim (LR rules),
callbacks (sample grid, crash checkpoint, atomic IO, RNG state, export metadata, KID, best export), resume (checks
a resume checkpoint), sweeps.
"""
