"""tnattn.train.Trainer with E members: member e is the single run of its seed, per-member
hyperparameters and stopping, the working set, checkpoints, callbacks per member, deprecated aliases."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from tnattn.train import Callback, TrainConfig, Trainer, train

from tiny_runs import TINY_TRAIN as TINY  # the shared tiny rule-30 problem (tests/tiny_runs.py)

# Every test here runs once per CPU instruction-set path this machine supports (tests/conftest.py),
# on one torch thread.
pytestmark = pytest.mark.usefixtures("cpu_isa", "one_torch_thread")


# ------------------------------------------------------------------------------------------------
# the trainer against single-model runs (the key property)
# ------------------------------------------------------------------------------------------------
_COMPARE = ["loss", "penalty", "batch_error", "train_error", "test_error_30", "test_error_12", "deff", "grad_norm", "lambda1", "lambda2", "norm_A_left", "norm_C", "norm_scale"]


def _assert_member_equals_single(res, e, single, rtol):
    hs, he = single.history, res.history.member(e, epochs=len(single.history))
    for col in _COMPARE:
        if col == "norm_scale" and "norm_scale" not in hs.columns:  # a model without map normalisation
            continue
        a, b = hs.column(col), he.column(col)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * 1e-3, err_msg=col)
    m = res.members[e]
    assert (m["t_train"], m["t_eps"]) == (single.t_train, single.t_eps)
    assert m["loss_spikes"] == single.summary["loss_spikes"]


def test_ensemble_reproduces_separate_single_runs_with_per_member_hyperparameters(tmp_path):
    cfg = TrainConfig(**TINY, dtype="float64", l1=1e-3)
    seeds, lrs, l1s, l2s = [0, 5, 9], [0.005, 0.02, 0.005], [1e-3, 0.0, 1e-3], [0.0, 0.0, 1e-3]
    res = Trainer(cfg, seeds, lr=lrs, l1=l1s, l2=l2s).fit()
    assert res.summary["member_token_steps"] > 0
    for e, s in enumerate(seeds):
        single = train(dataclasses.replace(cfg, seed=s, lr=lrs[e], l1=l1s[e], l2=l2s[e], out=str(tmp_path / str(s))))
        _assert_member_equals_single(res, e, single, rtol=2e-6)  # float32 history storage
        torch.testing.assert_close(res.model.member(e).C, single.model.C, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {"random_k": 1, "alphabet": 3, "rule_seed": 4},  # d = 3, c = 3: squared error on one-hot targets
        {"random_k": 1, "alphabet": 3, "rule_seed": 4, "loss": "ce", "shared": False},
        {"loss": "hinge", "l2": 1e-3, "l2_mode": "penalty"},  # loss through autograd, L2 as a penalty
        {"activation": "none", "l2": 1e-3, "l2_mode": "decoupled"},
        {"normalize_map": False, "train_boundary": True, "boundary_vectors": "random"},  # plain autograd path
    ],
)
def test_ensemble_reproduces_single_runs_across_models_and_losses(tmp_path, kw):
    cfg = TrainConfig(**{**TINY, "max_epochs": 4, "eval_every": 2, "deff_probe": 0}, dtype="float64", l1=1e-3, **kw)
    seeds = [1, 4]
    res = Trainer(cfg, seeds).fit()
    for e, s in enumerate(seeds):
        single = train(dataclasses.replace(cfg, seed=s, out=str(tmp_path / str(s))))
        _assert_member_equals_single(res, e, single, rtol=2e-6)
        for name in ("A_left", "C", "u", "scale"):
            if getattr(single.model, name) is not None:
                torch.testing.assert_close(getattr(res.model.member(e), name), getattr(single.model, name), rtol=1e-10, atol=1e-13)


def test_float32_ensemble_tracks_single_runs(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 5}, l1=0.0)
    res = Trainer(cfg, [1, 2]).fit()
    single = train(dataclasses.replace(cfg, seed=2, out=str(tmp_path)))
    _assert_member_equals_single(res, 1, single, rtol=1e-4)


def test_per_member_hyperparameters_do_not_leak_between_members():
    cfg = TrainConfig(**{**TINY, "max_epochs": 6}, dtype="float64")
    a = Trainer(cfg, [4, 8], lr=[0.005, 0.005], l1=[1e-3, 0.0]).fit()
    b = Trainer(cfg, [4, 8], lr=[0.005, 0.05], l1=[1e-3, 1e-2]).fit()
    np.testing.assert_allclose(a.history.column("loss")[0], b.history.column("loss")[0], rtol=1e-12)
    assert not np.allclose(a.history.column("loss")[1], b.history.column("loss")[1])
    assert torch.allclose(a.model.C[0], b.model.C[0], rtol=1e-12, atol=0)


def _stopping_config(**kw):
    # Started from exact neighbourhood contexts with a large step, members reach zero test error
    # within 6-35 epochs, each at its own time (stop_after_grok=0 stops each at its own t_eps).
    return TrainConfig(**{**TINY, "max_epochs": 40, "eval_every": 1, "stop_after_grok": 0}, exact=True,
                       lr=0.05, l1=0.0, dtype="float64", **kw)  # fmt: skip


def test_stopped_members_stay_frozen_and_leave_the_working_set(tmp_path):
    cfg = _stopping_config()
    sizes = []
    res = Trainer(cfg, [0, 1, 2, 3], on_epoch=lambda tr, ep: sizes.append(len(tr.members.ids))).fit()
    stop = np.array([m["epochs"] for m in res.members])
    assert len(set(stop.tolist())) > 1, "need members that stop at different epochs"
    assert all(m["stop_reason"] == "grokked" and m["t_eps"] == m["epochs"] for m in res.members)
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 4  # the working set shrinks
    # cost: only active members were trained
    assert res.summary["member_epochs"] == int(stop.sum())
    loss = res.history.column("loss")
    for e, T in enumerate(stop):
        assert np.isnan(loss[e, T:]).all() and not np.isnan(loss[e, :T]).any()
        # frozen at its stop epoch: the final parameters are those of a single run stopped there
        single = train(dataclasses.replace(cfg, seed=e, out=str(tmp_path / f"s{e}")))
        assert single.summary["epochs"] == T
        for name in ("A_left", "C", "scale"):
            torch.testing.assert_close(getattr(res.model, name)[e], getattr(single.model, name), rtol=1e-6, atol=1e-6)


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 8, "checkpoint_every": 3}, dtype="float64")
    full = Trainer(cfg, [2, 3], run_dir=tmp_path / "full").fit()
    Trainer(dataclasses.replace(cfg, max_epochs=5), [2, 3], run_dir=tmp_path / "part").fit()
    resumed = Trainer(dataclasses.replace(cfg, resume=True), [2, 3], run_dir=tmp_path / "part").fit()
    for col in ("loss", "train_error", "test_error_30", "deff"):
        np.testing.assert_array_equal(full.history.column(col), resumed.history.column(col))
    assert torch.equal(full.model.C, resumed.model.C)
    assert (tmp_path / "part" / "summary.json").exists() and (tmp_path / "part" / "histories.npz").exists()
    with pytest.raises(ValueError, match="different seeds"):
        Trainer(dataclasses.replace(cfg, resume=True), [2, 4], run_dir=tmp_path / "part").fit()


def test_checkpoint_of_another_format_names_the_versions():
    from tnattn import __version__

    trainer = Trainer(TrainConfig(**TINY), [2, 3])
    with pytest.raises(ValueError, match=rf"ensemble checkpoint of format 2; tnattn {__version__} reads format 1"):
        trainer.load_state_dict({**trainer.state_dict(), "ensemble_format": 2})


def test_shared_data_member_equals_the_run_that_owns_the_data(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 5}, dtype="float64")
    res = Trainer(cfg, [6, 7], shared_data=True, data_seed=6).fit()
    single = train(dataclasses.replace(cfg, seed=6, out=str(tmp_path)))
    _assert_member_equals_single(res, 0, single, rtol=2e-6)
    # member 7 trains its own initial model on member 6's batches
    assert not np.allclose(res.history.column("loss")[0], res.history.column("loss")[1])


def test_trainer_rejects_bad_arguments():
    cfg = TrainConfig(**TINY)
    with pytest.raises(ValueError, match="must differ"):
        Trainer(cfg, [1, 1])
    Trainer(cfg, [1, 1], l1=[0.0, 1e-3])  # same seed, another regulariser: allowed
    with pytest.raises(ValueError, match="lr must hold one value per member"):
        Trainer(cfg, [1, 2], lr=[0.1])
    with pytest.raises(ValueError, match="l1 values"):
        Trainer(cfg, [1, 2], l1=[0.1, -1.0])
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer({"D": 3}, [1])


def test_ensemble_eval_screen_records_t_eps_to_the_epoch():
    # As tnattn.train's screen test: testing every epoch and, with the default screen, testing
    # periodically only every 1000th epoch record the same t_eps per member; without the screen
    # nothing is recorded within the 100 epochs.
    base = dict(TINY, test_lengths=(40, 12), test_size=50, lr=0.05, max_epochs=100, eval_when_fit=False,
                stop_after_grok=0, deff_probe=0)  # fmt: skip
    every = Trainer(TrainConfig(**{**base, "eval_every": 1}, eval_screen=0), [0, 3]).fit()
    screened = Trainer(TrainConfig(**{**base, "eval_every": 1000}), [0, 3]).fit()
    sparse = Trainer(TrainConfig(**{**base, "eval_every": 1000}, eval_screen=0), [0, 3]).fit()
    assert np.isfinite(every.t_eps).any()
    np.testing.assert_array_equal(screened.t_eps, every.t_eps)
    assert np.isnan(sparse.t_eps).all()


# ------------------------------------------------------------------------------------------------
# the names of the former ensemble trainer
# ------------------------------------------------------------------------------------------------
def test_ensemble_trainer_names_are_deprecated_aliases():
    import tnattn.ensemble
    from tnattn.train import FitResult

    with pytest.warns(DeprecationWarning, match="tnattn.train.Trainer"):
        assert tnattn.ensemble.EnsembleTrainer is Trainer
    with pytest.warns(DeprecationWarning, match="tnattn.train.FitResult"):
        assert tnattn.ensemble.EnsembleResult is FitResult
    with pytest.raises(AttributeError, match="no attribute"):
        tnattn.ensemble.NoSuchTrainer  # noqa: B018


def test_single_model_signature_is_deprecated_and_still_trains():
    from tnattn.data import LabelledSet, MiniBatches, all_sequences, make_test_sets
    from tnattn.models import TNAttention
    from tnattn.rules import elementary

    cfg = TrainConfig(**{**TINY, "max_epochs": 2})
    rule, x = elementary(30), all_sequences(6)
    model = TNAttention(4, generator=torch.Generator().manual_seed(0))
    batches = MiniBatches(x, rule, batch_size=16, crop=(3, 6), generator=torch.Generator().manual_seed(1))
    with pytest.warns(DeprecationWarning, match="from_model"):
        tr = Trainer(model, batches, cfg, train_set=LabelledSet(x, rule(x)), test_sets=make_test_sets(rule, (12,), n=8))
    res = tr.fit()
    assert res.history.column("loss").shape == (1, 2) and res.run(0).stop_reason == "max_epochs"


# ------------------------------------------------------------------------------------------------
# callbacks per member
# ------------------------------------------------------------------------------------------------
class _StopAt(Callback):
    """Member-local state: stops its member at a given epoch and fills an extra column."""

    def __init__(self, member, epoch):
        self.member, self.epoch, self.seen = member, epoch, []

    def columns(self):
        return ["mark"]

    def on_epoch_end(self, trainer, epoch, row):
        assert trainer.member == self.member
        self.seen.append(epoch)
        row["mark"] = 100.0 * trainer.member + epoch
        if epoch == self.epoch:
            trainer.request_stop("enough")


def test_callbacks_run_per_member_and_stop_only_their_member():
    cfg = TrainConfig(**{**TINY, "max_epochs": 4})
    made = {}
    factory = lambda e: made.setdefault(e, _StopAt(e, 2 if e == 1 else 99))  # noqa: E731
    res = Trainer(cfg, [0, 1, 2], callbacks=[factory]).fit()
    assert [m["stop_reason"] for m in res.members] == ["max_epochs", "enough", "max_epochs"]
    assert [m["epochs"] for m in res.members] == [4, 2, 4]
    assert made[1].seen == [1, 2] and made[0].seen == [1, 2, 3, 4]
    mark = res.history.column("mark")
    np.testing.assert_array_equal(mark[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(mark[1, :2], [101, 102])
    assert np.isnan(mark[1, 2:]).all()


class _Revert(Callback):
    """Snapshots its member at the start of epoch 2 and restores it at the end of epoch 2."""

    def __init__(self):
        self.snap, self.model_after = None, None

    def on_epoch_start(self, trainer, epoch):
        if epoch == 2:
            self.snap = trainer.snapshot()
            self.before = trainer.model.C.detach().clone()

    def on_epoch_end(self, trainer, epoch, row):
        if epoch == 2:
            assert not torch.equal(trainer.model.C, self.before)
            trainer.restore(self.snap)
            assert torch.equal(trainer.model.C, self.before)


def test_snapshot_restore_of_a_stacked_member_reverts_only_that_member():
    cfg = TrainConfig(**{**TINY, "max_epochs": 3}, dtype="float64")
    plain = Trainer(cfg, [0, 1]).fit()
    reverted = Trainer(cfg, [0, 1], callbacks=[lambda e: _Revert() if e == 1 else Callback()]).fit()
    loss_a, loss_b = plain.history.column("loss"), reverted.history.column("loss")
    np.testing.assert_array_equal(loss_a[0], loss_b[0])  # member 0 untouched
    # member 1's epoch 3 starts again from its epoch-1 state (parameters and Adam moments), with
    # epoch 3's batches: it differs from the plain run's epoch 3
    np.testing.assert_array_equal(loss_a[1, :2], loss_b[1, :2])
    assert loss_a[1, 2] != loss_b[1, 2]


class _BatchLosses(Callback):
    def __init__(self):
        self.calls = []

    def on_batch_end(self, trainer, epoch, batch_index, loss):
        self.calls.append((trainer.member, epoch, batch_index, loss))


def test_batch_hooks_get_each_members_step_loss():
    cfg = TrainConfig(**{**TINY, "max_epochs": 2}, dtype="float64")
    rec = _BatchLosses()
    res = Trainer(cfg, [0, 1], callbacks=[rec]).fit()
    n_batches = -(-64 // cfg.batch_size)  # all 2**6 strings
    assert len(rec.calls) == 2 * 2 * n_batches
    for e in (0, 1):
        for epoch in (1, 2):
            losses = [c[3] for c in rec.calls if c[0] == e and c[1] == epoch]
            assert [c[2] for c in rec.calls if c[0] == e and c[1] == epoch] == list(range(n_batches))
            # the epoch's loss is the site-weighted mean of its batches' losses (batches of 16 equal
            # sequences cropped to one length each: weights are the crop lengths, so bound it)
            assert min(losses) <= res.history.column("loss")[e, epoch - 1] <= max(losses)
