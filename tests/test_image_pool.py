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


def test_pool_returns_inputs_unchanged_until_full_and_stores_copies():
    pool = ImagePool(4, seed=0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    assert [image.item() for image in pool.images] == [0.0, 1.0, 2.0]
    second = torch.tensor([10.0, 11.0]).view(2, 1, 1, 1)  # 10 takes the last free slot; 11 meets a full pool
    out = pool.query(second).flatten().tolist()
    assert out[0] == 10.0  # still filling: returned as is
    stored = [image.item() for image in pool.images]
    if out[1] == 11.0:  # passed through
        assert stored == [0.0, 1.0, 2.0, 10.0]
    else:  # a history image, whose slot 11 now holds
        assert out[1] in (0.0, 1.0, 2.0, 10.0)
        assert stored == [11.0 if v == out[1] else v for v in (0.0, 1.0, 2.0, 10.0)]
    snapshot = torch.stack(pool.images).clone()
    first.add_(100)  # the caller reusing its tensors must not change the history
    second.add_(100)
    assert torch.equal(torch.stack(pool.images), snapshot)


def test_full_pool_returns_history_half_the_time_and_replaces_what_it_returns():
    """Once full, each image is returned as is with probability ½; otherwise a uniformly chosen stored image is
    returned and the new image takes its slot. Checked against a shadow of the pool's contents."""
    size, draws = 4, 4000
    pool = ImagePool(size, seed=7)
    pool.query(-torch.arange(1.0, size + 1).view(size, 1, 1, 1))  # fill with -1 … -4
    history, per_slot = 0, [0] * size
    for step in range(draws // 2):  # batches of two
        new = torch.tensor([2.0 * step, 2.0 * step + 1]).view(2, 1, 1, 1)
        before = [image.item() for image in pool.images]
        out = [v.item() for v in pool.query(new).flatten()]
        after = [image.item() for image in pool.images]
        expected = list(before)
        for value, returned in zip(new.flatten().tolist(), out, strict=True):
            if returned == value:
                continue  # passed through: the pool is unchanged by this image
            assert returned in expected, f"returned {returned}, which is neither the input nor in the pool"
            slot = expected.index(returned)
            expected[slot] = value  # the returned history image was replaced by the new one
            history, per_slot[slot] = history + 1, per_slot[slot] + 1
        assert after == expected
    # Binomial(4000, ½): mean 2000, sd 31.6; 5 sd either side
    assert abs(history - draws / 2) < 5 * (draws * 0.25) ** 0.5, history
    # Each slot: Binomial(history, ¼); 5 sd either side
    mean, sd = history / size, (history * (1 / size) * (1 - 1 / size)) ** 0.5
    assert all(abs(count - mean) < 5 * sd for count in per_slot), per_slot


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
