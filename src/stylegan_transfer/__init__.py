"""stylegan-transfer: unpaired image-to-image style translation and classic neural style transfer.

Ground floor (plain torch, PIL, safetensors): `atomic`, `augment`, `cache`, `datasets`, `devices`,
`discriminators`, `image_pool`, `images`, `layers`, `losses`, `networks`, `perceptual`. Wings, each importing the
ground floor: `training`, `inference`, `metrics`, `nst`, `app` (the map and the dependency rule: README.md and
docs/development.md).

Importing the package is cheap and pulls in neither Lightning, Hydra nor wandb; the inference API
(`stylegan_transfer.inference`) depends on torch and safetensors only.
"""

__version__ = "0.1.0"
