"""Translation quality: FID / KID / LPIPS (`scores`), their offline-capable weights (`weights`) and the
`stylegan-eval` CLI (`evaluate`). Imports neither Lightning, Hydra nor wandb."""
