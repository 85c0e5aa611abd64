"""DiffAugment (Zhao et al. 2020): each operation against its definition, and every discriminator input of a
training step going through the policy."""

import pytest
import torch

from stylegan_transfer import augment
from stylegan_transfer.augment import diff_augment, parse_policy


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=rng(99)) * 2 - 1  # (B, 3, H, W) in [-1, 1]


def test_policy_parsing_and_the_empty_policy():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="colour"):
        parse_policy("colour")
    x = images()
    assert diff_augment(x, "") is x  # nothing done, nothing drawn
    state = torch.get_rng_state()
    diff_augment(x, "")
    assert torch.equal(state, torch.get_rng_state())


def test_brightness_adds_one_offset_per_image_within_half():
    x = images()
    offsets = (augment.brightness(x, rng()) - x).flatten(1)  # (B, C·H·W)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
    assert offsets.abs().max() <= 0.5 and offsets[:, 0].unique().numel() == 4


def test_saturation_keeps_each_pixels_channel_mean_and_scales_chroma_by_up_to_two():
    x = images()
    y = augment.saturation(x, rng())
    torch.testing.assert_close(y.mean(dim=1), x.mean(dim=1))
    chroma_x, chroma_y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    factor = (chroma_y.flatten(1) / chroma_x.flatten(1)).median(dim=1).values  # (B,)
    torch.testing.assert_close(chroma_y, chroma_x * factor[:, None, None, None], atol=1e-5, rtol=1e-4)
    assert ((factor >= 0) & (factor <= 2)).all()


def test_contrast_keeps_the_image_mean_and_scales_around_it():
    x = images()
    y = augment.contrast(x, rng())
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    centred_x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    centred_y = y - y.mean(dim=(1, 2, 3), keepdim=True)
    factor = centred_y.flatten(1).norm(dim=1) / centred_x.flatten(1).norm(dim=1)  # (B,)
    torch.testing.assert_close(centred_y, centred_x * factor[:, None, None, None], atol=1e-5, rtol=1e-4)
    assert ((factor >= 0.5) & (factor <= 1.5)).all()


def test_translation_moves_content_by_at_most_an_eighth_filling_zeros():
    b, size = 16, 32
    x = (torch.arange(size * size, dtype=torch.float32) + 1).reshape(1, 1, size, size).expand(b, 3, -1, -1)
    y = augment.translation(x, rng(3))
    assert y.shape == x.shape
    shifts = set()
    for i in range(b):
        # pixel value v (1-based flat index) sat at (row, col) = divmod(v - 1, size); find where it moved
        found = y[i, 0].nonzero()
        values = y[i, 0][found[:, 0], found[:, 1]].long() - 1
        dy = (values // size - found[:, 0]).unique()
        dx = (values % size - found[:, 1]).unique()
        assert dy.numel() == dx.numel() == 1, "one rigid shift per image"
        assert abs(dy.item()) <= 4 and abs(dx.item()) <= 4  # round(32 / 8)
        assert (y[i] == 0).sum() == 3 * (size * size - (size - abs(dy.item())) * (size - abs(dx.item())))
        assert torch.equal(y[i, 0], y[i, 1]) and torch.equal(y[i, 0], y[i, 2])  # channels moved together
        shifts.add((dy.item(), dx.item()))
    assert len(shifts) > 4  # a fresh draw per image


def test_cutout_zeroes_one_square_of_half_the_size_clipped_at_the_border():
    b, size = 32, 32
    x = torch.ones(b, 3, size, size)
    y = augment.cutout(x, rng(5))
    full = 0
    for i in range(b):
        zero = (y[i] == 0).all(dim=0)  # (H, W)
        assert torch.equal(zero, (y[i] == 0).any(dim=0))  # every channel cut alike
        rows, cols = zero.any(dim=1).nonzero()[:, 0], zero.any(dim=0).nonzero()[:, 0]
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert zero.sum() == height * width, "the zeroed pixels form one rectangle"
        assert height <= 16 and width <= 16
        touches_border = rows.min() == 0 or rows.max() == size - 1
        assert height == 16 or touches_border
        full += int(height == 16 and width == 16)
        assert (y[i][:, ~zero] == 1).all()
    assert full > 0


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_every_operation_is_differentiable_and_keeps_shape(policy):
    x = images().requires_grad_(True)
    y = diff_augment(x, policy)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_real_and_fake_get_the_same_policy_with_their_own_draws():
    x = images()
    torch.manual_seed(0)
    first, second = diff_augment(x, "color,translation,cutout"), diff_augment(x, "color,translation,cutout")
    assert not torch.equal(first, second)  # two calls (real, fake): same operations, new random numbers
    torch.manual_seed(0)
    assert torch.equal(diff_augment(x, "color,translation,cutout"), first)  # the global RNG: resumable


def test_training_step_augments_every_discriminator_input(cyclegan_dir, tmp_path):
    """With cutout, every image any discriminator scores (reals, pooled fakes, the generators' fakes) has a
    zeroed 16x16 square; without a policy none has."""
    from helpers import quiet_trainer
    from stylegan_transfer.training.cyclegan import CycleGANModule
    from stylegan_transfer.training.data import UnpairedDataModule

    def seen_by_discriminators(policy: str) -> list[torch.Tensor]:
        module = CycleGANModule(
            generator={"arch": "resnet", "channels": 4, "n_blocks": 1},
            discriminator={"arch": "patch", "channels": 4, "n_layers": 2},
            pool_size=2,
            diffaugment=policy,
        )
        seen: list[torch.Tensor] = []
        for disc in (module.d_a, module.d_b):
            disc.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))
        datamodule = UnpairedDataModule(root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=0)
        quiet_trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule)
        return seen

    def has_cut_square(image: torch.Tensor) -> bool:  # (3, H, W)
        zero = (image == 0).all(dim=0).float()[None, None]
        return bool((torch.nn.functional.avg_pool2d(zero, 8, stride=1) == 1).any())

    augmented = seen_by_discriminators("cutout")
    assert len(augmented) == 6  # G step: d_b(fake_b), d_a(fake_a); D step: real and fake for each
    assert all(has_cut_square(image) for batch in augmented for image in batch)
    assert not any(has_cut_square(image) for batch in seen_by_discriminators("") for image in batch)
