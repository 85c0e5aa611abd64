import torch

from stylegan_transfer.image_pool import ImagePool


def test_pool_fills_then_mixes_history():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returns the inputs
    assert len(pool.images) == 4
    seen_history = False
    for step in range(20):
        new = torch.full((4, 1, 1, 1), 100.0 + step)
        out = pool.query(new)
        assert out.shape == new.shape
        seen_history |= bool((out != new).any())
    assert seen_history  # with p=0.5 per image, history must appear over 80 draws
    assert len(pool.images) == 4


def test_pool_size_zero_is_passthrough():
    x = torch.randn(3, 3, 2, 2)
    assert ImagePool(0).query(x) is x


def test_pool_state_dict_round_trip_continues_identically():
    a, b = ImagePool(3, seed=5), ImagePool(3, seed=99)
    for i in range(5):
        a.query(torch.full((2, 1, 2, 2), float(i)))
    b.load_state_dict(a.state_dict())
    for i in range(10):
        x = torch.full((2, 1, 2, 2), 50.0 + i)
        assert torch.equal(a.query(x), b.query(x))


def test_pool_does_not_touch_global_rng():
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    pool = ImagePool(1, seed=0)
    for _ in range(5):
        pool.query(torch.randn(1, 1, 1, 1, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(torch.rand(1), expected)
