import pytest
import torch

from tnattn.data import MiniBatches, all_sequences, make_test_sets, random_crops, site_error
from tnattn.rules import elementary


def test_all_sequences_enumerates_every_string_once():
    x = all_sequences(4, d=3)
    assert x.shape == (81, 4)
    assert len({tuple(r) for r in x.tolist()}) == 81
    assert x[5].tolist() == [0, 0, 1, 2]  # 5 = 0*27 + 0*9 + 1*3 + 2


def test_random_crops_are_windows_of_the_input():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(40).reshape(4, 10)
    for _ in range(20):
        c = random_crops(x, 3, 6, generator=g)
        assert 3 <= c.shape[1] <= 6
        # Each row is a contiguous run of its source row.
        assert torch.all(c[:, 1:] - c[:, :-1] == 1)
        assert torch.all(c // 10 == torch.arange(4).unsqueeze(1))
    with pytest.raises(ValueError, match="n_min"):
        random_crops(x, 7, 5)


def test_minibatches_relabel_crops_and_cover_the_set():
    rule = elementary(30)
    x = all_sequences(10)
    batches = list(MiniBatches(x, rule, batch_size=128, crop=(6, 10), generator=torch.Generator().manual_seed(1)))
    assert len(batches) == 8 and sum(b.x.shape[0] for b in batches) == 1024
    for b in batches:
        assert torch.equal(b.y, rule(b.x))  # labels of the crop, with the crop's own boundaries
    full = list(MiniBatches(x, rule))
    assert len(full) == 1 and torch.equal(full[0].y, rule(x))


def test_minibatches_reproducible_from_seed():
    x = all_sequences(8)
    rule = elementary(30)
    a = [b.x for b in MiniBatches(x, rule, 32, (4, 8), torch.Generator().manual_seed(3))]
    b = [b.x for b in MiniBatches(x, rule, 32, (4, 8), torch.Generator().manual_seed(3))]
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("crop, batch", [((4, 8), 32), (None, 32), ((3, 5), None)])
def test_minibatches_make_the_pre_redesign_draws_in_order(crop, batch):
    # The random draws of tnattn 0.1's MiniBatches, written out: per epoch a permutation, then per
    # batch the crop length and one offset per sequence (random_crops), all from the one generator;
    # a float32 run's trajectory depends on this order.
    rule, x = elementary(30), all_sequences(8)
    got = MiniBatches(x, rule, batch, crop, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    for epoch in range(2):
        want = []
        if crop is None and batch is None:
            want.append(x)
        else:
            order = torch.randperm(len(x), generator=g)
            for start in range(0, len(x), batch or len(x)):
                xb = x[order[start : start + (batch or len(x))]]
                want.append(xb if crop is None else random_crops(xb, *crop, generator=g))
        batches = list(got)
        assert len(batches) == len(want)
        for b, w in zip(batches, want):
            assert torch.equal(b.x, w) and torch.equal(b.y, rule(w))
    assert torch.equal(got.generator.get_state(), g.get_state())


def test_test_sets_and_site_error():
    sets = make_test_sets(elementary(30), lengths=(50, 7), n=20)
    assert set(sets) == {50, 7} and sets[50].x.shape == (20, 50)
    y = sets[7].y
    wrong = y.clone()
    wrong[0, :3] = 1 - wrong[0, :3]
    assert site_error(wrong, y) == pytest.approx(3 / 140)
    with pytest.raises(ValueError):
        site_error(y[:, :3], y)
