"""A dead model (contexts all zero, or zero gradient with a non-zero loss) stops with a clear stop
reason instead of running to max_epochs (issue 13, item 3)."""

import pytest
import torch

from tnattn.data import LabelledSet, MiniBatches, all_sequences, make_test_sets
from tnattn.errors import DeadModelWarning
from tnattn.models import TNAttention
from tnattn.rules import elementary
from tnattn.train import TrainConfig, Trainer

CFG = dict(D=4, train_length=6, crop_min=3, crop_max=6, batch_size=16, test_lengths=(30,), test_size=20,
           max_epochs=30, eval_every=1, progress=False, plots=False, backend="reference", stop_after_grok=-1)


def _trainer(config, model, run_dir=None):
    rule = elementary(30)
    x = all_sequences(config.train_length)
    batches = MiniBatches(x, rule, batch_size=config.batch_size, crop=(config.crop_min, config.crop_max),
                          generator=torch.Generator().manual_seed(1))
    tests = make_test_sets(rule, config.test_lengths, n=config.test_size)
    return Trainer.from_model(model, batches, config, train_set=LabelledSet(x, rule(x)), test_sets=tests, run_dir=run_dir)


def _dead_model():
    model = TNAttention(4, backend="reference", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.A_left.zero_()  # every context after the boundary is exactly zero
    return model


def test_zero_gradient_with_nonzero_loss_stops_at_once(tmp_path):
    cfg = TrainConfig(**CFG, l1=0.0, deff_probe=0)  # no probe: only the gradient test can fire
    with pytest.warns(DeadModelWarning, match="gradient was exactly zero"):
        result = _trainer(cfg, _dead_model(), run_dir=tmp_path).fit().run(0)
    assert result.stop_reason == "dead" and result.summary["epochs"] == 1
    # output sigmoid(0) = 1/2 at every site, targets in {0, 1}: squared error exactly 1/4
    assert result.history[0]["loss"] == 0.25 and result.history[0]["grad_norm"] == 0.0
    assert "dead model" in result.summary["stop_message"]
    # a resumed dead run has nothing left to do
    resumed = _trainer(TrainConfig(**{**CFG, "max_epochs": 60}, l1=0.0, deff_probe=0, resume=True), _dead_model(), run_dir=tmp_path)
    again = resumed.fit().run(0)
    assert again.stop_reason == "dead" and again.summary["epochs"] == 1


def test_vanished_contexts_stop_even_when_the_penalty_has_a_gradient():
    # With L1 the classifier still gets a penalty gradient, but the contexts stay zero (sgn(0) = 0).
    cfg = TrainConfig(**CFG, l1=1e-3)
    with pytest.warns(DeadModelWarning, match="contexts"):
        result = _trainer(cfg, _dead_model()).fit().run(0)
    assert result.stop_reason == "dead" and result.summary["epochs"] == 1
    assert result.history[0]["grad_norm"] > 0.0


def test_a_live_model_is_not_called_dead():
    cfg = TrainConfig(**{**CFG, "max_epochs": 5})
    model = TNAttention(4, backend="reference", generator=torch.Generator().manual_seed(0))
    result = _trainer(cfg, model).fit().run(0)
    assert result.stop_reason == "max_epochs" and result.summary["stop_message"] is None
