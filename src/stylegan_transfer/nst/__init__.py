"""Classic neural style transfer without the training stack: the Gatys objective and its optimisation loop
(`stylize`), MMD style kernels (`mmd`), colour handling (`color`) and the `stylegan-stylize` CLI (`cli`)."""
