"""Training: the only package that imports Lightning, Hydra or wandb.

run (train / run_job), data (the DataModule), cyclegan and fast_style (LightningModules), optim (LR rules),
callbacks (sample grid, crash checkpoint, atomic IO, RNG state, export metadata, KID, best export), sweeps.
"""
