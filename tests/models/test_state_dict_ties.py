"""The shared context tensor stays one Parameter through load_state_dict in every mode; state
dicts that do not fit the model's sharing are refused (issue 13 item 4)."""

from __future__ import annotations

import pytest
import torch

from tnattn.models import TNAttention


def _single(shared=True, seed=0):
    return TNAttention(D=3, d=2, c=1, shared=shared, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ensemble(shared=True, seeds=(0, 1)):
    return TNAttention(D=3, seeds=list(seeds), shared=shared, dtype=torch.float64)


MODELS = {"TNAttention": _single, "TNAttention(seeds)": _ensemble}


def _adam_step(model):
    x = torch.randint(0, 2, (3, 5), generator=torch.Generator().manual_seed(9))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.logits(x).pow(2).sum().backward()
    opt.step()


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("strict", [True, False])
def test_shared_tie_kept_in_every_load_mode(kind, assign, strict):
    make = MODELS[kind]
    src, dst, ref = make(seeds=(3, 4)) if kind != "TNAttention" else make(seed=3), make(), make()
    sd = src.state_dict()
    dst.load_state_dict(sd, strict=strict, assign=assign)
    ref.load_state_dict(sd)
    assert dst.A_right is dst.A_left
    names = [n for n, _ in dst.named_parameters()]
    assert "A_left" in names and "A_right" not in names  # listed once
    assert len(list(dst.parameters())) == len(list(ref.parameters()))
    torch.testing.assert_close(dst.A_left, src.A_left, rtol=0, atol=0)
    # one Adam step moves the shared tensor once: the same as a model loaded by copying
    _adam_step(dst)
    _adam_step(ref)
    for (n, p), (_, q) in zip(dst.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("assign", [False, True])
def test_shared_model_refuses_a_separate_tensor_state_dict(kind, assign):
    make = MODELS[kind]
    sd = make(shared=False).state_dict()
    dst = make()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r"different A_left and A_right.*shared=True.*shared=False"):
        dst.load_state_dict(sd, assign=assign)
    assert dst.A_right is dst.A_left
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("kind", list(MODELS))
def test_only_one_side_in_the_state_dict_fills_both(kind):
    make = MODELS[kind]
    src, dst = make(shared=False), make()
    sd = {k: v for k, v in src.state_dict().items() if k != "A_right"}
    dst.load_state_dict(sd, assign=True)
    assert dst.A_right is dst.A_left and torch.equal(dst.A_left, src.A_left)


@pytest.mark.parametrize("kind", list(MODELS))
def test_separate_model_accepts_a_shared_state_dict(kind):
    make = MODELS[kind]
    src, dst = make(), make(shared=False)
    dst.load_state_dict(src.state_dict(), assign=True)
    assert dst.A_right is not dst.A_left
    assert torch.equal(dst.A_left, src.A_left) and torch.equal(dst.A_right, src.A_left)
    assert dst.A_left.untyped_storage().data_ptr() != dst.A_right.untyped_storage().data_ptr()


@pytest.mark.parametrize("kind", list(MODELS))
def test_tie_kept_when_a_parent_module_loads_with_assign(kind):
    # the tie lives in _load_from_state_dict, which a parent's load_state_dict calls
    make = MODELS[kind]
    src = torch.nn.ModuleDict({"layer": make(seeds=(3, 4)) if kind != "TNAttention" else make(seed=3)})
    dst = torch.nn.ModuleDict({"layer": make()})
    dst.load_state_dict(src.state_dict(), assign=True)
    assert dst["layer"].A_right is dst["layer"].A_left
    assert len(list(dst.parameters())) == len(list(src.parameters()))
    assert torch.equal(dst["layer"].A_left, src["layer"].A_left)
