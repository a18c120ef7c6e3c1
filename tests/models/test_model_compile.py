"""TNAttention compiles with fullgraph and exports (issue 13 item 15): its input checks look at
shapes, dtypes and devices only; symbols outside [0, d) are caught by the op's kernel."""

from __future__ import annotations

import pytest
import torch

from tnattn.models import NonFiniteParameterError, TNAttention

F32 = torch.float32


def _model(**kw):
    return TNAttention(D=3, d=2, c=1, generator=torch.Generator().manual_seed(0), dtype=F32, **kw)


def _x(N=4, M=6, seed=1):
    return torch.randint(0, 2, (N, M), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shared", [True, False])
def test_compile_fullgraph_matches_eager(shared):
    model = _model(shared=shared)
    x = _x()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    want = model(x)
    torch.testing.assert_close(got, want)
    params = [p for p in model.parameters() if p.requires_grad]
    g_got = torch.autograd.grad(got.sum(), params)
    g_want = torch.autograd.grad(want.sum(), params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    bad = x.clone()
    bad[1, 2] = 2
    with pytest.raises(ValueError, match=r"x holds symbols outside \[0, d\)"):
        compiled(bad)  # the kernel counts bad symbols at run time


def test_export_matches_eager():
    model = _model()
    x = _x()
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))
    torch.testing.assert_close(ep.module()(_x(seed=5)), model(_x(seed=5)))


def test_eager_checks_still_catch_bad_data():
    model = _model()
    x = _x()
    model(x)
    for bad in (-1, 2):
        xb = x.clone()
        xb[0, 0] = bad
        with pytest.raises(ValueError, match=r"x holds symbols outside"):
            model(xb)
    with pytest.raises(ValueError, match="x holds NaN or inf"):
        model(torch.full((2, 3, 2), float("nan")))
    with torch.no_grad():
        model.C[0, 0, 0, 0] = float("inf")  # in place: the version counter moves, the check reruns
    with pytest.raises(NonFiniteParameterError, match="C"):
        model(x)
    with torch.no_grad():
        model.C[0, 0, 0, 0] = 0.0
    model(x)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["u"][0] = float("nan")
    model.load_state_dict(sd, assign=True)  # a replaced Parameter is checked too
    with pytest.raises(NonFiniteParameterError, match="u"):
        model(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["A_left", "C", "u", "v", "scale"])
def test_one_non_finite_entry_in_any_parameter_is_named(name, bad):
    # the finiteness check is one reduction over all parameters; the error still names the one
    model = _model()
    model(_x())
    with torch.no_grad():
        getattr(model, name).view(-1)[-1] = bad
    with pytest.raises(NonFiniteParameterError, match=f"parameter {name} holds NaN or inf"):
        model(_x())
