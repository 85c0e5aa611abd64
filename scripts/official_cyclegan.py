"""Run the official CycleGAN code (the CUT repository's `--model cycle_gan`) on a CPU, unmodified, from a checkout.

    python scripts/official_cyclegan.py train CUT_CHECKOUT SEED -- [its train.py options]
    python scripts/official_cyclegan.py translate CUT_CHECKOUT CHECKPOINT_DIR OUT_DIR DIRECTION INPUT_DIR -- [options]
    python scripts/official_cyclegan.py time CUT_CHECKOUT SIZE STEPS WARMUP -- [options]

Used by `scripts/quality_benchmark.py` for its `official` row; the checkout (taesungp/contrastive-unpaired-translation,
fetched by the user) is never copied into this project. Its code needs `dominate` (`pip install dominate`) and, on a
CPU, three workarounds applied here at run time, not by editing its files (as docs/quality.md records):
`CycleGANModel.data_dependent_initialize` takes no argument although its `train.py` passes one (replaced by a
no-op: CycleGAN has nothing to initialise from data), `optimize_parameters` reads `opt.amp`, which no option
defines (set to False), and `--continue_train` cannot read back what it saved on a CPU (its files hold the
DataParallel wrapper's "module." keys, its loader expects the network's own: stripped while loading). `SEED`
seeds torch, numpy and random before its `train.py` runs (it has no seed option).

`time` builds its CycleGAN model as its `train.py` does and times `optimize_parameters` on random SIZE x SIZE pairs
(batch 1) after WARMUP untimed steps; prints one JSON line (used by `scripts/benchmark.py --official-code`).

`translate` rebuilds the generator of DIRECTION (AtoB: its G_A, BtoA: its G_B) with the code's own `define_G` and the
training options, loads `latest_net_G_*.pth` and writes one PNG per image of INPUT_DIR at full size into OUT_DIR.
"""

from __future__ import annotations

import os
import random
import runpy
import sys
from pathlib import Path


def _prepare(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    import torch
    from models import base_model, cycle_gan_model
    from options import base_options

    cycle_gan_model.CycleGANModel.data_dependent_initialize = lambda self, *args, **kwargs: None
    load_networks = base_model.BaseModel.load_networks

    def load_networks_unwrapped(self, epoch):
        # On a CPU its save_networks writes the DataParallel wrapper's keys ("module.model.1.weight") and its
        # load_networks loads them into the unwrapped network: strip the prefix while it loads.
        load = torch.load

        def load_stripped(*args, **kwargs):
            return {key.removeprefix("module."): value for key, value in load(*args, **kwargs).items()}

        torch.load = load_stripped
        try:
            load_networks(self, epoch)
        finally:
            torch.load = load

    base_model.BaseModel.load_networks = load_networks_unwrapped
    parse = base_options.BaseOptions.parse

    def parse_without_amp(self):
        opt = parse(self)
        opt.amp = False
        return opt

    base_options.BaseOptions.parse = parse_without_amp


def train(checkout: Path, seed: int, options: list[str]) -> None:
    import numpy as np
    import torch

    _prepare(checkout)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    sys.argv = [str(checkout / "train.py"), *options]
    runpy.run_path(str(checkout / "train.py"), run_name="__main__")


def translate(
    checkout: Path, checkpoints: Path, out_dir: Path, direction: str, inputs: Path, options: list[str]
) -> None:
    import numpy as np
    import torch
    from PIL import Image

    _prepare(checkout)
    from models import networks
    from options.train_options import TrainOptions

    sys.argv = ["train.py", *options]
    opt = TrainOptions().gather_options()
    which = {"AtoB": "G_A", "BtoA": "G_B"}[direction]
    net = networks.define_G(
        3, 3, opt.ngf, opt.netG, opt.normG, not opt.no_dropout, opt.init_type, opt.init_gain,
        opt.no_antialias, opt.no_antialias_up, [], opt=opt,
    )  # fmt: skip
    state = torch.load(checkpoints / f"latest_net_{which}.pth", map_location="cpu", weights_only=True)
    net.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(inputs.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
        with torch.no_grad():
            y = net(x.permute(2, 0, 1)[None])[0]  # (3, H, W) in [-1, 1]
        array = ((y.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(array).save(out_dir / f"{path.stem}.png")


def time_steps(checkout: Path, size: int, steps: int, warmup: int, options: list[str]) -> dict:
    import time

    import torch

    _prepare(checkout)
    from models import create_model
    from options.train_options import TrainOptions

    sys.argv = ["train.py", *options]
    opt = TrainOptions().parse()
    model = create_model(opt)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "A": torch.rand(1, 3, size, size, generator=generator) * 2 - 1,
        "B": torch.rand(1, 3, size, size, generator=generator) * 2 - 1,
        "A_paths": ["a.png"],
        "B_paths": ["b.png"],
    }
    model.data_dependent_initialize(batch)
    model.setup(opt)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        model.set_input(batch)
        model.optimize_parameters()
    seconds = (time.perf_counter() - started) / steps
    return {"size": size, "threads": torch.get_num_threads(), "seconds_per_step": seconds, "steps": steps}


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    head, options = argv[:split], argv[split + 1 :]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if head[0] == "train" and len(head) == 3:
        train(Path(head[1]).resolve(), int(head[2]), options)
    elif head[0] == "time" and len(head) == 5:
        import json

        result = time_steps(Path(head[1]).resolve(), int(head[2]), int(head[3]), int(head[4]), options)
        print(json.dumps(result))
    elif head[0] == "translate" and len(head) == 6:
        translate(Path(head[1]).resolve(), Path(head[2]), Path(head[3]), head[4], Path(head[5]), options)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
