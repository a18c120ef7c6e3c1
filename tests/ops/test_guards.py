"""Every registered op validates every argument; the reference applies the ops' checks; the
kernel thread setting is per Python thread."""

from __future__ import annotations

import re
import threading

import pytest
import torch

import tnattn.ops
from tnattn import reference
from tnattn.ops import kernel_threads
from tnattn.ops._native import num_threads

F64 = torch.float64
d, D, N, M, c, E = 2, 3, 4, 5, 2, 2


def _single():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, d, (N, M), generator=g)
    A = torch.randn(d, D, D, generator=g, dtype=F64)
    return x, A, torch.randn(d, D, D, c, generator=g, dtype=F64), torch.randn(D, generator=g, dtype=F64)


def _stacked():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, d, (E, N, M), generator=g)
    A = torch.randn(E, d, D, D, generator=g, dtype=F64)
    return x, A, torch.randn(E, d, D, D, c, generator=g, dtype=F64), torch.randn(E, D, generator=g, dtype=F64)


# ------------------------------------------------------------------------------------------------
# item 6: the raw backward ops check the incoming gradient and the flags


def _backward_calls():
    """(name, call(grad, needs), good grad) for the two registered backward ops, single and stacked."""
    x, A, C, u = _single()
    xe, Ae, Ce, ue = _stacked()
    T = torch.ops.tnattn
    six = [False, True, True, True, True, True]
    return [
        ("contexts_backward", "grad_out", lambda g, n=None: T.contexts_backward(g, A, x, u, False, True, True, False),
         torch.ones(N, M, D, dtype=F64)),
        ("tn_attention_backward", "grad_W", lambda g, n=six: T.tn_attention_backward(g, x, A, A, C, u, u, n),
         torch.ones(N, M, d, c, dtype=F64)),
        ("contexts_backward stacked", "grad_out",
         lambda g, n=None: T.contexts_backward(g, Ae, xe, ue, True, True, True, False),
         torch.ones(E, N, M, D, dtype=F64)),
        ("tn_attention_backward stacked", "grad_W",
         lambda g, n=six: T.tn_attention_backward(g, xe, Ae, Ae, Ce, ue, ue, n),
         torch.ones(E, N, M, d, c, dtype=F64)),
    ]  # fmt: skip


@pytest.mark.parametrize("k", range(4))
def test_raw_backward_ops_validate_the_gradient(k):
    name, arg, call, good = _backward_calls()[k]
    assert any(t.numel() > 0 for t in call(good))  # the good call runs
    want = re.escape(f"{arg} must have the output's shape {tuple(good.shape)}, got (1,)")
    with pytest.raises(ValueError, match=want):
        call(torch.ones(1, dtype=F64))  # the 1-element gradient: was read out of bounds
    with pytest.raises(ValueError, match=rf"{arg} must have the output's shape"):
        call(good.flatten()[:-1])
    with pytest.raises(TypeError, match=rf"{arg} must have the output's dtype torch.float64, got torch.float32"):
        call(good.float())
    with pytest.raises(ValueError, match=rf"{arg} is on meta but the inputs are on cpu"):
        call(good.to("meta"))
    with pytest.raises(TypeError, match=rf"{arg} must be a dense \(strided\) tensor"):
        call(good.to_sparse())


@pytest.mark.parametrize("k", [1, 3])
def test_raw_backward_ops_validate_needs(k):
    _, _, call, good = _backward_calls()[k]
    with pytest.raises(ValueError, match="needs must be a list of 6 bools"):
        call(good, [True] * 5)


def test_fake_backward_kernels_validate_the_gradient_too():
    """torch.compile traces the fake kernels: a wrong gradient fails there with the same message."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, A, C, u = _single()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(t) for t in (x, A, u)]
        with pytest.raises(ValueError, match=r"grad_out must have the output's shape"):
            torch.ops.tnattn.contexts_backward(mode.from_tensor(torch.ones(1, dtype=F64)), fake[1], fake[0], fake[2],
                                               False, True, True, False)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# item 12: the reference applies the ops' checks; sparse and mkldnn tensors are named


@pytest.mark.parametrize("bad", [-1, d])
def test_reference_rejects_symbols_outside_the_alphabet(bad):
    x, A, C, u = _single()
    x[2, 3] = bad  # -1 was silently read as the last symbol
    for fn in (
        lambda: reference.contexts(A, x, u),
        lambda: reference.contexts(A, x, u, reverse=True),
        lambda: reference.tn_attention(x, A, A, C, u, u),
        lambda: reference.contexts_vectorized(A, x, u),
        lambda: reference.tn_attention_vectorized(x, A, A, C, u, u),
        lambda: tnattn.ops.tn_attention(x, A, A, C, u, u),
    ):
        with pytest.raises(ValueError, match=r"x holds symbols outside \[0, d\) = \[0, 2\)"):
            fn()


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.update(x=a["x"].to(torch.int16)), TypeError, "x must be uint8, int32 or int64"),
        (lambda a: a.update(A=a["A"][0]), ValueError, "A_left must have 3 dimensions"),
        (lambda a: a.update(C=a["C"][..., :0]), ValueError, "c = 0"),
        (lambda a: a.update(u=a["u"][:2]), ValueError, r"u must have shape \(D,\)"),
        (lambda a: a.update(u=a["u"].float()), TypeError, "u must have the parameters' dtype"),
        (lambda a: a.update(x=a["x"][:, :0]), ValueError, "M = 0"),
        (lambda a: a.update(u=a["u"].to("meta")), ValueError, "u is on meta"),
    ],
)
def test_reference_bad_input_named(mutate, exc, match):
    x, A, C, u = _single()
    a = dict(x=x, A=A, C=C, u=u)
    mutate(a)
    with pytest.raises(exc, match=match):
        reference.tn_attention(a["x"], a["A"], a["A"], a["C"], a["u"], a["u"])


def test_reference_accepts_an_empty_batch():
    x, A, C, u = _single()
    assert reference.tn_attention(x[:0], A, A, C, u, u).shape == (0, M, d, c)


def _layouts():
    out = [("sparse", lambda t: t.to_sparse())]
    if torch.backends.mkldnn.is_available():
        out.append(("mkldnn", lambda t: t.float().to_mkldnn()))
    return out


@pytest.mark.parametrize("layout,convert", _layouts())
@pytest.mark.parametrize("arg", ["x", "A", "C", "u"])
def test_sparse_and_mkldnn_inputs_are_named(layout, convert, arg):
    x, A, C, u = _single()
    if layout == "mkldnn":
        A, C, u = A.float(), C.float(), u.float()
    a = dict(x=x, A=A, C=C, u=u)
    if layout == "mkldnn" and arg == "x":
        a["x"] = torch.nn.functional.one_hot(x, d).float()  # mkldnn holds floating tensors only
    a[arg] = convert(a[arg])
    names = {"A": "A_left", "x": "x", "C": "C", "u": "u"}
    calls = [
        (lambda: tnattn.ops.tn_attention(a["x"], a["A"], a["A"], a["C"], a["u"], a["u"]), names[arg]),
        (lambda: reference.tn_attention(a["x"], a["A"], a["A"], a["C"], a["u"], a["u"]), names[arg]),
    ]
    if arg != "C":
        calls += [
            (lambda: tnattn.ops.contexts(a["A"], a["x"], a["u"]), "boundary" if arg == "u" else arg),
            (lambda: reference.contexts(a["A"], a["x"], a["u"]), "boundary" if arg == "u" else arg),
        ]
    for fn, name in calls:
        with pytest.raises(TypeError, match=rf"{name} must be a dense \(strided\) tensor, got layout"):
            fn()


def test_sparse_inputs_to_stacked_calls_are_named():
    xe, Ae, Ce, ue = _stacked()
    with pytest.raises(TypeError, match=r"C must be a dense \(strided\) tensor"):
        tnattn.ops.tn_attention(xe, Ae, Ae, Ce.to_sparse(), ue, ue)
    with pytest.raises(TypeError, match=r"boundary must be a dense \(strided\) tensor"):
        tnattn.ops.contexts(Ae, xe, ue.to_sparse())


# ------------------------------------------------------------------------------------------------
# item 13: kernel_threads belongs to the calling thread


def test_kernel_threads_is_per_thread():
    default = num_threads()
    barrier = threading.Barrier(2, timeout=30)
    seen: dict = {}
    errors: list = []

    def first():
        try:
            with kernel_threads(3):
                barrier.wait()  # 1: both inside their blocks
                seen["first_inside"] = num_threads()
                barrier.wait()  # 2: first leaves while second is still inside
            barrier.wait()  # 3
            seen["first_after"] = num_threads()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def second():
        try:
            seen["second_before"] = num_threads()
            with kernel_threads(5):
                barrier.wait()  # 1
                seen["second_inside"] = num_threads()
                barrier.wait()  # 2
                barrier.wait()  # 3: first has left its block
                seen["second_after_first_left"] = num_threads()
            seen["second_after"] = num_threads()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen == {
        "second_before": default,
        "first_inside": 3,
        "second_inside": 5,
        "second_after_first_left": 5,
        "first_after": default,
        "second_after": default,
    }
    assert num_threads() == default


def test_kernel_threads_restores_on_error_and_reentry():
    default = num_threads()
    outer = kernel_threads(2)
    with pytest.raises(RuntimeError, match="boom"):
        with outer:
            with kernel_threads(4):
                assert num_threads() == 4
                raise RuntimeError("boom")
    assert num_threads() == default
    with outer:
        with outer:  # the same instance entered twice
            assert num_threads() == 2
        assert num_threads() == 2
    assert num_threads() == default
