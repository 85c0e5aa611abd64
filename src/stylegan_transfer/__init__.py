"""stylegan-transfer: unpaired image-to-image style translation and classic neural style transfer.

Importing the package is cheap and pulls in neither Lightning, Hydra nor wandb; the inference API
(`stylegan_transfer.export`) depends on torch and safetensors only.
"""

__version__ = "0.1.0"
