import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnattn.rules import elementary, from_truth_table, random_rule

# Hand-written truth tables, neighbourhood (left, centre, right) -> output, from the rule definitions.
RULE30 = {n: n[0] ^ (n[1] | n[2]) for n in itertools.product((0, 1), repeat=3)}
RULE90 = {n: n[0] ^ n[2] for n in itertools.product((0, 1), repeat=3)}
RULE110 = {  # Wolfram's picture of rule 110, read off by hand
    (1, 1, 1): 0, (1, 1, 0): 1, (1, 0, 1): 1, (1, 0, 0): 0,
    (0, 1, 1): 1, (0, 1, 0): 1, (0, 0, 1): 1, (0, 0, 0): 0,
}


def _naive(table, x, boundary):
    """Site-by-site application of a 3-cell rule (the slow, obvious way)."""
    N, M = x.shape
    y = torch.empty_like(x)
    for n in range(N):
        for i in range(M):
            def cell(j):
                if boundary == "periodic":
                    return int(x[n, j % M])
                return int(x[n, j]) if 0 <= j < M else 0
            y[n, i] = table[(cell(i - 1), cell(i), cell(i + 1))]
    return y


@pytest.mark.parametrize("number,table", [(30, RULE30), (90, RULE90), (110, RULE110)])
@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_elementary_rules_match_hand_tables(number, table, boundary):
    x = torch.randint(0, 2, (7, 11), generator=torch.Generator().manual_seed(number))
    rule = elementary(number, boundary)
    assert torch.equal(rule(x), _naive(table, x, boundary))


def test_open_boundary_reads_zero_outside():
    # Single 1 at the right end: rule 30 on (x_{M-2}, x_{M-1}, 0) = (0, 1, 0) -> 1, and left of it (0,0,1) -> 1.
    x = torch.tensor([[0, 0, 0, 1]])
    assert elementary(30)(x).tolist() == [[0, 0, 1, 1]]
    # Periodic: the 1 also wraps around to site 0 whose left neighbour is it: (1,0,0) -> 1.
    assert elementary(30, "periodic")(x).tolist() == [[1, 0, 1, 1]]


@pytest.mark.parametrize("boundary", ["open", "periodic"])
def test_iterated_rule_equals_repeated_application(boundary):
    rule = elementary(30, boundary)
    x = torch.randint(0, 2, (5, 13), generator=torch.Generator().manual_seed(1))
    assert torch.equal(rule.iterate(3)(x), rule(rule(rule(x))))
    assert rule.iterate(2).K == 2


@given(steps=st.integers(1, 3), M=st.integers(8, 20), seed=st.integers(0, 10**6))
@settings(max_examples=20, deadline=None)
def test_iterated_window_table_matches_bulk_of_periodic_iteration(steps, M, seed):
    rule = elementary(30, "periodic").iterate(steps)
    x = torch.randint(0, 2, (4, M), generator=torch.Generator().manual_seed(seed))
    table_rule = rule.window_table()
    assert table_rule.K == steps
    assert torch.equal(table_rule(x), rule(x))  # periodic: the window rule is exact everywhere


def test_random_rule_is_seeded_and_supports_larger_alphabets():
    a, b = random_rule(2, d=3, seed=7), random_rule(2, d=3, seed=7)
    assert torch.equal(a.table, b.table) and a.table.numel() == 3**5
    assert not torch.equal(a.table, random_rule(2, d=3, seed=8).table)
    x = torch.randint(0, 3, (3, 9), generator=torch.Generator().manual_seed(0))
    y = a(x)
    # Spot-check one interior site against a manual base-3 window index.
    w = x[1, 2:7].tolist()
    idx = sum(v * 3 ** (4 - j) for j, v in enumerate(w))
    assert y[1, 4] == a.table[idx]


def test_custom_truth_table_and_bad_input():
    ident = from_truth_table([0, 0, 1, 1, 0, 0, 1, 1], K=1)  # output = centre cell
    x = torch.tensor([[1, 0, 1, 1, 0]])
    assert torch.equal(ident(x), x)
    with pytest.raises(ValueError, match="table"):
        from_truth_table([0, 1], K=1)
    with pytest.raises(ValueError, match="x"):
        elementary(30)(torch.tensor([[0, 2, 1]]))
    with pytest.raises(TypeError, match="x"):
        elementary(30)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="boundary"):
        elementary(30, "reflecting")
    with pytest.raises(ValueError, match="number"):
        elementary(256)
