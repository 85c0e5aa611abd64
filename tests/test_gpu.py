"""On a CUDA device: inference agrees with the CPU in fp32, bf16 stays close, compiled equals eager, and automatic
tiling reads the real free memory. Skipped without CUDA (conftest's `gpu` marker)."""

from __future__ import annotations

import pytest
import torch

from stylegan_transfer.inference import tiling
from stylegan_transfer.inference.translation import translate_tensor
from stylegan_transfer.networks import build_generator, init_weights

pytestmark = pytest.mark.gpu


def small_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return init_weights(build_generator("resnet", channels=8, n_blocks=2)).eval()


def test_cuda_translation_matches_cpu_in_fp32_and_bf16_stays_close():
    x = torch.rand(2, 3, 96, 80) * 2 - 1  # (B, 3, H, W); 80 is not a multiple of 4: padded and cropped back
    cpu = translate_tensor(small_generator(), x, tile=0, device="cpu")
    cuda = translate_tensor(small_generator(), x, tile=0, device="cuda")
    bf16 = translate_tensor(small_generator(), x, tile=0, device="cuda", precision="bf16")
    assert cuda.device.type == "cpu" and cuda.shape == x.shape  # results come back to the host
    torch.testing.assert_close(cuda, cpu, atol=1e-3, rtol=1e-3)
    assert (bf16 - cpu).abs().mean() < 0.02, "bf16 autocast drifted from fp32"


def test_cuda_tiled_translation_is_close_to_untiled():
    x = torch.rand(1, 3, 300, 260) * 2 - 1
    untiled = translate_tensor(small_generator(), x, tile=0, device="cuda")
    tiled = translate_tensor(
        small_generator(), x, tile=tiling.TileOptions(tile=128, overlap=32, stats_size=300), device="cuda"
    )
    assert tiled.shape == x.shape
    assert (tiled - untiled).abs().mean() < 0.02


def test_compiled_generator_equals_eager_on_cuda():
    net = small_generator().cuda()
    x = torch.rand(2, 3, 64, 64, device="cuda") * 2 - 1
    with torch.no_grad():
        eager = net(x)
        net.compile()
        compiled = net(x)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_automatic_tiling_uses_the_real_free_memory():
    net = small_generator()
    device = torch.device("cuda")
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * tiling.GPU_FREE_FRACTION) // tiling.bytes_per_pixel(net)  # pixels allowed untiled
    side = int(fits**0.5)
    assert not tiling.plan_tiles(net, (1, 3, side // 2, side // 2), device).tiled
    assert tiling.plan_tiles(net, (1, 3, 2 * side, 2 * side), device).tiled
