"""tnattn.ensemble.allstrings: trie evaluation on all d**M strings against the fused-kernel path."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnattn.data import all_sequences
from tnattn.ensemble.allstrings import all_strings_predict, all_strings_wrong_fraction, is_all_strings
from tnattn.ensemble.evaluators import AllStrings, Chunked, FusedCount, choose_evaluator
from tnattn.models.functional import Params
from tnattn.models.functional import logits as ensemble_logits
from tnattn.models.functional import predict as ensemble_predict


def make_params(seed, E, d, D, c=1, *, shared=False, scale="mixed", dtype=torch.float64, device="cpu"):
    """N(0, 1) parameters; scale 'mixed' alternates signs over members, 'pos'/'neg' one sign, None none."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)  # noqa: E731
    A = r(E, d, D, D)
    AR = A if shared else r(E, d, D, D)
    C, u, v = r(E, d, D, D, c), r(E, D), r(E, D)
    s = None
    if scale is not None:
        s = r(E).abs() + 0.1
        if scale == "neg":
            s = -s
        elif scale == "mixed":
            s[1::2] = -s[1::2]
    return Params(A, AR, C, u, v, s)


def kernel_predict(P, M, d, normalize_map):
    return ensemble_predict(P, all_sequences(M, d).to(P.A_left.device), normalize_map=normalize_map)


# ------------------------------------------------------------------------------------------------
# exact equality in float64


@pytest.mark.parametrize("M", [1, 2, 5, 10])
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("D", [1, 3, 10])
def test_float64_equals_kernel_grid(M, d, D):
    if d == 3 and M == 10 and D != 3:
        pytest.skip("59049 strings: one bond dimension is enough")
    for k, (E, shared, normalize_map, scale) in enumerate(
        [(1, True, True, "pos"), (4, False, True, "mixed"), (4, True, False, "mixed"), (1, False, True, "neg")]
    ):
        P = make_params(1000 * M + 100 * d + 10 * D + k, E, d, D, shared=shared, scale=scale)
        got = all_strings_predict(P, M, d, normalize_map=normalize_map)
        assert got.dtype == torch.int64 and got.shape == (E, d**M, M)
        want = kernel_predict(P, M, d, normalize_map)
        assert torch.equal(got, want), (E, shared, normalize_map, scale)


@pytest.mark.parametrize("c", [2, 3])
@pytest.mark.parametrize("normalize_map", [True, False])
def test_float64_equals_kernel_multi_output(c, normalize_map):
    for seed, (M, d, D) in enumerate([(1, 2, 3), (4, 3, 3), (7, 2, 10)]):
        P = make_params(seed, 4, d, D, c, scale="mixed")
        got = all_strings_predict(P, M, normalize_map=normalize_map)
        want = kernel_predict(P, M, d, normalize_map)
        assert torch.equal(got, want)
        assert 0 < got.float().mean() < c - 1  # not a constant prediction


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    M=st.integers(1, 8),
    d=st.integers(2, 3),
    D=st.integers(1, 6),
    c=st.sampled_from([1, 1, 2]),
    E=st.integers(1, 5),
    shared=st.booleans(),
    normalize_map=st.booleans(),
    scale=st.sampled_from(["pos", "neg", "mixed", None]),
    chunk=st.sampled_from([None, 1, 2]),
)
def test_float64_equals_kernel_random(seed, M, d, D, c, E, shared, normalize_map, scale, chunk):
    if d == 3 and M > 6:
        M = 6
    P = make_params(seed, E, d, D, c, shared=shared, scale=scale)
    got = all_strings_predict(P, M, d, normalize_map=normalize_map, chunk=chunk)
    assert torch.equal(got, kernel_predict(P, M, d, normalize_map))


def test_shared_A_right_none_and_per_member_boundaries():
    P = make_params(7, 3, 2, 4, shared=True)
    want = kernel_predict(P, 6, 2, True)
    P_none = Params(P.A_left, None, P.C, P.u, P.v, P.scale)
    assert torch.equal(all_strings_predict(P_none, 6, normalize_map=True), want)
    # member 1 alone: its own boundaries, not member 0's
    P1 = P.select(torch.tensor([1]))
    assert torch.equal(all_strings_predict(P1, 6, normalize_map=True), want[1:2])


# ------------------------------------------------------------------------------------------------
# exact-zero rule


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("normalize_map", [True, False])
def test_zero_boundary_and_zero_scale_predict_zero(c, normalize_map):
    M, d, D = 5, 2, 3
    P = make_params(11, 4, d, D, c, scale="pos")
    P.u[1] = 0.0  # left contexts all exactly zero
    P.v[2] = 0.0  # right contexts all exactly zero
    P.scale[3] = 0.0  # zero logits (normalize_map only)
    got = all_strings_predict(P, M, normalize_map=normalize_map)
    assert torch.equal(got, kernel_predict(P, M, d, normalize_map))
    assert (got[1] == 0).all() and (got[2] == 0).all()
    if normalize_map:
        assert (got[3] == 0).all()
    assert got[0].any()  # the untouched member predicts both classes


def test_zero_context_midway_stays_zero():
    # A_left[1] = 0: every prefix containing symbol 1 has an exactly-zero left context
    M, d, D = 6, 2, 3
    P = make_params(12, 2, d, D, scale="pos")
    P.A_left[:, 1] = 0.0
    got = all_strings_predict(P, M, normalize_map=True)
    assert torch.equal(got, kernel_predict(P, M, d, True))
    x = all_sequences(M, d)
    seen_one = torch.cumsum(x, dim=1) - x > 0  # a 1 strictly before site i
    assert (got[:, seen_one] == 0).all()


# ------------------------------------------------------------------------------------------------
# float32


def test_float32_mismatches_only_at_the_decision_boundary():
    """float32: both paths round differently (sums in another order), so a prediction may differ
    only where the logit is within float32 rounding of 0. The float64 logit of every mismatched site,
    relative to its map's norm, must be below 1e-4 (float32 relative error of a 10-term dot product
    after 10 normalised steps is ~1e-6), and mismatches must stay below 1e-4 of all sites
    (benchmarks/bench_allstrings.py prints the count at E = 1024: a few per 10**7 sites at most)."""
    M, d, D, E = 10, 2, 10, 8
    P64 = make_params(21, E, d, D, scale="mixed")
    P32 = Params(*(None if t is None else t.float() for t in (P64.A_left, P64.A_right, P64.C, P64.u, P64.v, P64.scale)))
    got = all_strings_predict(P32, M, normalize_map=True)
    want = kernel_predict(P32, M, d, True)
    diff = got != want
    assert diff.float().mean() <= 1e-4
    if diff.any():
        z = ensemble_logits(P64, all_sequences(M, d), normalize_map=True)[..., 0] / P64.scale.abs().view(E, 1, 1)
        assert (z[diff].abs() < 1e-4).all()
    # float64 of the same parameters is exact
    assert torch.equal(all_strings_predict(P64, M, normalize_map=True), kernel_predict(P64, M, d, True))


# ------------------------------------------------------------------------------------------------
# wrong fraction


def trainer_wrong_fraction(P, x, y, *, normalize_map, d, c):
    """The trainer's test-set evaluator for these inputs (fused count or chunked, not the trie)."""
    return choose_evaluator(x, c=c, d=d, normalize_map=normalize_map)(P, x, y)


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("per_member", [False, True])
def test_wrong_fraction_matches_direct_and_trainer(c, per_member):
    M, d, D, E = 7, 2, 4, 5
    P = make_params(31, E, d, D, c)
    x = all_sequences(M, d)
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, ((E,) if per_member else ()) + (d**M, M), generator=g)
    got = all_strings_wrong_fraction(P, M, y, normalize_map=True)
    pred = ensemble_predict(P, x, normalize_map=True)
    direct = (pred != (y if per_member else y.unsqueeze(0))).double().mean(dim=(1, 2)).numpy()
    assert got.dtype == np.float64 and got.shape == (E,)
    np.testing.assert_array_equal(got, direct)
    np.testing.assert_array_equal(got, trainer_wrong_fraction(P, x, y, normalize_map=True, d=d, c=c))
    assert 0 < got.min() and got.max() < 1


def test_wrong_fraction_of_own_predictions_is_zero_and_flipped_is_one():
    P = make_params(32, 3, 2, 3)
    y = all_strings_predict(P, 6, normalize_map=True)
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, 6, y, normalize_map=True), np.zeros(3))
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, 6, 1 - y, normalize_map=True), np.ones(3))
    # boolean labels (binary targets may be stored as bool) and a shared label table
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, 6, y.bool(), normalize_map=True), np.zeros(3))
    want = (y != y[0]).double().mean(dim=(1, 2)).numpy()
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, 6, y[0].bool(), normalize_map=True), want)


def test_wrong_fraction_non_binary_labels_count_as_wrong():
    # c = 1 predicts 0/1: a label 2 is always wrong (the trainer compares pred != y)
    P = make_params(33, 2, 2, 3)
    M = 4
    y = torch.full((2**M, M), 2)
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, M, y, normalize_map=False), np.ones(2))
    y[:, 0] = all_strings_predict(P, M, normalize_map=False)[0, :, 0]
    want = trainer_wrong_fraction(P, all_sequences(M), y, normalize_map=False, d=2, c=1)
    np.testing.assert_array_equal(all_strings_wrong_fraction(P, M, y, normalize_map=False), want)
    assert want[0] == 1 - 1 / M


def test_wrong_fraction_bad_labels():
    P = make_params(34, 2, 2, 3)
    with pytest.raises(ValueError, match="y must have shape"):
        all_strings_wrong_fraction(P, 4, torch.zeros(16, 5, dtype=torch.long), normalize_map=True)
    with pytest.raises(TypeError, match="y must be"):
        all_strings_wrong_fraction(P, 4, np.zeros((16, 4)), normalize_map=True)


# ------------------------------------------------------------------------------------------------
# chunking and arguments


def test_chunk_does_not_change_the_result():
    P = make_params(41, 7, 3, 3, 2)
    ref = all_strings_predict(P, 5, normalize_map=True)
    for chunk in (1, 3, 7, 100):
        assert torch.equal(all_strings_predict(P, 5, normalize_map=True, chunk=chunk), ref)


def test_bad_arguments():
    P = make_params(42, 2, 2, 3)
    with pytest.raises(ValueError, match="d must equal"):
        all_strings_predict(P, 4, 3, normalize_map=True)
    with pytest.raises(ValueError, match="M must be"):
        all_strings_predict(P, 0, normalize_map=True)
    with pytest.raises(ValueError, match="chunk"):
        all_strings_predict(P, 4, normalize_map=True, chunk=0)
    with pytest.raises(TypeError, match="Params"):
        all_strings_predict((P.A_left,), 4, normalize_map=True)
    with pytest.raises(ValueError, match="too many"):
        all_strings_predict(P, 40, normalize_map=True)
    bad = Params(P.A_left, P.A_right, P.C, P.u.unsqueeze(1).expand(2, 16, 3), P.v, P.scale)
    with pytest.raises(ValueError, match="P.u must have shape"):
        all_strings_predict(bad, 4, normalize_map=True)


# ------------------------------------------------------------------------------------------------
# is_all_strings


@pytest.mark.parametrize("M,d", [(1, 2), (3, 2), (10, 2), (4, 3), (2, 5)])
def test_is_all_strings_true(M, d):
    x = all_sequences(M, d)
    assert is_all_strings(x, d) == M
    assert is_all_strings(x.to(torch.uint8), d) == M
    assert is_all_strings(x.int(), d) == M


def test_is_all_strings_false():
    x = all_sequences(5, 2)
    perm = x.clone()
    perm[[3, 4]] = perm[[4, 3]]
    assert is_all_strings(perm, 2) is None  # swapped rows
    assert is_all_strings(x.flip(1), 2) is None  # columns reversed (last cell most significant)
    assert is_all_strings(x, 3) is None  # wrong alphabet
    assert is_all_strings(all_sequences(3, 3), 2) is None
    assert is_all_strings(x[:-1], 2) is None  # cropped rows
    assert is_all_strings(x[:, :-1], 2) is None  # cropped columns
    assert is_all_strings(x.double(), 2) is None
    assert is_all_strings(x[:, 0], 2) is None
    bad = x.clone()
    bad[0, 0] = 2  # symbol outside the alphabet, same shape
    assert is_all_strings(bad, 2) is None
    with pytest.raises(TypeError, match="x must be"):
        is_all_strings(x.numpy(), 2)
    with pytest.raises(ValueError, match="d must be"):
        is_all_strings(x, 1)


# ------------------------------------------------------------------------------------------------
# CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("c", [1, 2])
def test_cuda_equals_kernel(c):
    P = make_params(51, 6, 2, 10, c, device="cuda")
    got = all_strings_predict(P, 10, normalize_map=True)
    assert got.device.type == "cuda"
    assert torch.equal(got, kernel_predict(P, 10, 2, True))
    y = torch.randint(0, 2, (1024, 10), generator=torch.Generator().manual_seed(0))
    P_cpu = Params(*(t.cpu() for t in (P.A_left, P.A_right, P.C, P.u, P.v, P.scale)))
    np.testing.assert_array_equal(
        all_strings_wrong_fraction(P, 10, y.cuda(), normalize_map=True),
        all_strings_wrong_fraction(P_cpu, 10, y, normalize_map=True),
    )


def test_trainer_uses_the_trie_for_all_strings_training_sets_only():
    from tnattn.train import Trainer
    from tnattn.train import TrainConfig

    base = dict(D=3, train_length=5, crop_min=3, crop_max=5, batch_size=8, max_epochs=1, test_lengths=(8,),
                test_size=4, deff_probe=0, progress=False, plots=False)  # fmt: skip
    trie = Trainer(TrainConfig(**base), [0, 1]).train_evaluator
    assert isinstance(trie, AllStrings) and trie.M == 5
    other = Trainer(TrainConfig(**base, train_size=20), [0, 1])
    assert other.train_evaluator == other.evaluator and other.evaluator.name == "fused count"


@pytest.mark.parametrize("c", [1, 3])
def test_evaluators_agree_on_all_strings(c):
    # The fused count (c = 1), the chunked predictions and the trie count the same wrong sites.
    M, d, D, E = 6, 2, 4, 4
    P = make_params(17, E, d, D, c)
    x = all_sequences(M, d)
    y = torch.randint(0, 2, (E, d**M, M), generator=torch.Generator().manual_seed(3))
    want = AllStrings(M, True)(P, x, y)
    np.testing.assert_array_equal(Chunked(True, d, c)(P, x, y), want)
    if c == 1:
        np.testing.assert_array_equal(FusedCount(True)(P, x, y), want)
    assert choose_evaluator(x, c=c, d=d, normalize_map=True).name == ("fused count" if c == 1 else "chunked")
    assert choose_evaluator(x.double(), c=c, d=d, normalize_map=True).name == "chunked"
