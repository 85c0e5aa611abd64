import copy
import math

import pytest
import torch

from stylegan_transfer import losses
from stylegan_transfer.discriminators import PatchDiscriminator


def test_lsgan_hand_computed():
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.5, -1.0])
    # generator: mean((0.5-1)^2, (-1-1)^2) = (0.25 + 4) / 2
    assert losses.generator_adversarial(fake, "lsgan").item() == pytest.approx(2.125)
    # discriminator: 0.5 * (mean((1-1)^2,(0-1)^2) + mean(0.5^2, 1^2)) = 0.5 * (0.5 + 0.625)
    assert losses.discriminator_adversarial(real, fake, "lsgan").item() == pytest.approx(0.5625)


def test_vanilla_hand_computed():
    zero = torch.zeros(3)
    assert losses.generator_adversarial(zero, "vanilla").item() == pytest.approx(math.log(2))
    assert losses.discriminator_adversarial(zero, zero, "vanilla").item() == pytest.approx(math.log(2))
    big = torch.full((3,), 30.0)
    assert losses.discriminator_adversarial(big, -big, "vanilla").item() == pytest.approx(0.0, abs=1e-10)


def test_hinge_hand_computed_and_zero_when_margins_met():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; relu(1-3)=0, relu(1+0)=1 -> 0.5
    assert losses.discriminator_adversarial(real, fake, "hinge").item() == pytest.approx(0.75)
    assert losses.discriminator_adversarial(torch.ones(4) * 2, -torch.ones(4) * 2, "hinge").item() == 0.0
    assert losses.generator_adversarial(fake, "hinge").item() == pytest.approx(1.5)


def test_wgan_critic_and_generator():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert losses.discriminator_adversarial(real, fake, "wgangp").item() == pytest.approx(-1.0 - 2.0)
    assert losses.generator_adversarial(fake, "wgangp").item() == pytest.approx(1.0)


def test_unknown_gan_mode():
    with pytest.raises(ValueError, match="gan_mode"):
        losses.generator_adversarial(torch.zeros(1), "nsgan")


def test_gradient_penalty_matches_autograd_reference_and_reaches_critic():
    torch.manual_seed(0)
    critic = PatchDiscriminator(channels=4, n_layers=2, norm="none")
    real, fake = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    alpha = torch.rand(3, 1, 1, 1)
    penalty = losses.gradient_penalty(critic, real, fake, alpha=alpha)
    # reference: per-sample gradient norms computed one sample at a time, float64
    critic64 = copy.deepcopy(critic).double()
    ref = []
    for i in range(3):
        x = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).double().unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(critic64(x).sum(), x)
        ref.append((g.norm() - 1) ** 2)
    assert penalty.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-4)
    penalty.backward()  # create_graph=True: the penalty trains the critic
    weights = [p for p in critic.parameters() if p.dim() > 1]  # biases cannot change an input gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_gradient_penalty_zero_for_unit_slope_linear_critic():
    w = torch.randn(1, 3, 4, 4)
    w = w / w.norm()
    critic = lambda x: (x * w).sum(dim=(1, 2, 3))  # noqa: E731 - gradient is w, of norm 1
    assert losses.gradient_penalty(
        critic, torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ).item() == pytest.approx(0, abs=1e-10)


def test_cycle_and_identity_l1():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.full((1, 3, 2, 2), 0.5)
    assert losses.cycle_l1(a, a).item() == 0.0
    assert losses.cycle_l1(b, a).item() == pytest.approx(0.5)
    assert losses.identity_l1(b, a).item() == pytest.approx(0.5)


def test_gram_matrix_hand_computed():
    f = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # C=2, H*W=2
    # F F^T = [[5, 2], [2, 1]] / (C*H*W = 4)
    assert torch.allclose(losses.gram_matrix(f)[0], torch.tensor([[5.0, 2.0], [2.0, 1.0]]) / 4)


def test_style_and_content_losses():
    f = [torch.randn(2, 4, 5, 5), torch.randn(2, 8, 3, 3)]
    assert losses.content_loss(f, f).item() == 0.0
    assert losses.gram_style_loss(f[:1], [f[0][:1].expand(2, -1, -1, -1)]).item() > 0
    same = [x[:1].expand(2, -1, -1, -1) for x in f]
    assert losses.gram_style_loss(same, same).item() == pytest.approx(0.0, abs=1e-12)
    g, t = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    expected = ((losses.gram_matrix(g) - losses.gram_matrix(t)) ** 2).sum()
    assert losses.gram_style_loss([g], [t]).item() == pytest.approx(expected.item())
    assert losses.content_loss([g], [t]).item() == pytest.approx(((g - t) ** 2).mean().item())


def test_total_variation_hand_computed():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    # vertical diffs 0, horizontal diffs 1
    assert losses.total_variation(x).item() == pytest.approx(1.0)
    assert losses.total_variation(torch.ones(1, 3, 4, 4)).item() == 0.0


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_losses_finite_in_bf16(mode):
    real = torch.randn(2, 1, 4, 4, dtype=torch.bfloat16) * 3
    fake = torch.randn(2, 1, 4, 4, dtype=torch.bfloat16) * 3
    for value in (
        losses.generator_adversarial(fake, mode),
        losses.discriminator_adversarial(real, fake, mode),
        losses.cycle_l1(real, fake),
        losses.gram_style_loss([real], [fake]),
        losses.total_variation(real),
    ):
        assert value.dtype == torch.float32 and torch.isfinite(value)
    critic = PatchDiscriminator(channels=2, n_layers=1, norm="none").to(torch.bfloat16)
    images = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    assert torch.isfinite(losses.gradient_penalty(critic, images, images.flip(0)))
