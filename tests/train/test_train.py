"""Trainer: losses, penalties, schedules, Scenario B, stopping rules, run directory, end to end."""

import json
import math

import numpy as np
import pytest
import torch

from tnattn.data import LabelledSet, MiniBatches, all_sequences, make_test_sets
from tnattn.io import read_json
from tnattn.models import TNAttention
from tnattn.rules import elementary
from tnattn.train import (
    Callback,
    PenaltySchedule,
    TrainConfig,
    MemberView,
    Trainer,
    apply_l2,
    build_teacher,
    compute_loss,
    l1_penalty,
    l2_penalty,
    read_history_csv,
    read_history_jsonl,
    train,
)

# A tiny, fast problem: rule 30 on all length-6 strings, short test sets.
TINY = dict(
    D=4,
    train_length=6,
    crop_min=3,
    crop_max=6,
    batch_size=16,
    test_lengths=(40, 12),
    test_size=50,
    max_epochs=6,
    eval_every=2,
    progress=False,
    plots=False,
    backend="reference",
)


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
def test_binary_losses_match_hand_values():
    z = torch.tensor([[[0.0], [2.0]]])  # (N=1, M=2, c=1)
    y = torch.tensor([[1, 0]])
    s2 = 1.0 / (1.0 + math.exp(-2.0))
    assert compute_loss(z, y, "mse", "sigmoid").item() == pytest.approx(((0.5 - 1) ** 2 + s2**2) / 2)
    # Without an activation the square loss uses +-1 targets: (0 - 1)^2 and (2 + 1)^2.
    assert compute_loss(z, y, "mse", "none").item() == pytest.approx((1.0 + 9.0) / 2)
    # hinge: max(0, 1 - 1*0) = 1 and max(0, 1 + 2) = 3.
    assert compute_loss(z, y, "hinge").item() == pytest.approx(2.0)
    # logistic: log(1 + e^0) and log(1 + e^2).
    expected = (math.log(2.0) + math.log(1.0 + math.exp(2.0))) / 2
    assert compute_loss(z, y, "logistic").item() == pytest.approx(expected)
    assert compute_loss(z, y, "ce").item() == pytest.approx(expected)


def test_multiclass_losses_match_hand_values():
    z = torch.tensor([[[0.0, math.log(3.0), 0.0]]])  # (1, 1, c=3), target class 1
    y = torch.tensor([[1]])
    # softmax probability of class 1 = 3 / (1 + 3 + 1)
    assert compute_loss(z, y, "ce").item() == pytest.approx(-math.log(3.0 / 5.0))
    s = 1.0 / (1.0 + math.exp(-math.log(3.0)))  # sigmoid(log 3) = 3/4
    assert compute_loss(z, y, "mse", "sigmoid").item() == pytest.approx((0.25 + (s - 1) ** 2 + 0.25) / 3)
    # one-vs-rest hinge with targets (-1, +1, -1): 1, max(0, 1 - log 3) = 0, 1.
    assert compute_loss(z, y, "hinge").item() == pytest.approx(2.0 / 3.0)


def test_loss_argument_errors():
    z = torch.zeros(2, 3, 1)
    with pytest.raises(ValueError, match="loss"):
        compute_loss(z, torch.zeros(2, 3, dtype=torch.long), "l3")
    with pytest.raises(ValueError, match="y must have shape"):
        compute_loss(z, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        compute_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# penalties and schedules
# ------------------------------------------------------------------------------------------------
def test_l1_and_l2_penalties():
    a = torch.tensor([1.0, -2.0])
    b = torch.tensor([[3.0]])
    assert l1_penalty([a, b]).item() == 6.0
    assert l2_penalty([a, b]).item() == pytest.approx(0.5 * (1 + 4 + 9))


def _one_step(opt_cls, wd_kwargs, mode, strength):
    """One step on loss sum(p^3) from the same start: ``opt_cls`` with its own weight decay, and
    plain Adam (no weight decay) with ours applied by ``apply_l2``."""
    start = torch.tensor([0.5, -1.5, 2.0])
    p1 = torch.nn.Parameter(start.clone())
    o1 = opt_cls([p1], lr=0.1, **wd_kwargs)
    (p1**3).sum().backward()
    o1.step()
    p2 = torch.nn.Parameter(start.clone())
    o2 = torch.optim.Adam([p2], lr=0.1)
    (p2**3).sum().backward()
    apply_l2([p2], strength, mode, lr=0.1)
    o2.step()
    return p1.detach(), p2.detach()


def test_coupled_l2_equals_adam_weight_decay():
    ref, ours = _one_step(torch.optim.Adam, {"weight_decay": 0.3}, "coupled", 0.3)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-7)


def test_decoupled_l2_equals_adamw():
    ref, ours = _one_step(torch.optim.AdamW, {"weight_decay": 0.3}, "decoupled", 0.3)
    # torch.optim.Adam without weight decay, plus our decoupled shrink, must equal AdamW.
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-7)


def test_penalty_schedules():
    assert PenaltySchedule("constant")(1) == 1.0
    assert PenaltySchedule("constant")(10_000) == 1.0
    step = PenaltySchedule("step", epochs=10, factor=0.1)
    assert step(10) == 1.0 and step(11) == pytest.approx(0.1)
    exp = PenaltySchedule("exp", epochs=5, factor=0.2)
    assert exp(1) == pytest.approx(1.0)
    assert exp(6) == pytest.approx(0.2 + 0.8 * math.exp(-1.0))
    assert exp(1000) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="kind"):
        PenaltySchedule("cosine")
    with pytest.raises(ValueError, match="epoch"):
        exp(0)


def test_schedule_strengths_are_recorded(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 4}, l1=1e-3, penalty_schedule="step", schedule_epochs=2,
                      schedule_factor=0.5, out=str(tmp_path))
    h = train(cfg).history
    assert h.column("lambda1").tolist() == [1e-3, 1e-3, 5e-4, 5e-4]
    assert np.all(h.column("penalty") > 0)


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [("D", 0), ("lr", 0.0), ("loss", "l3"), ("crop_min", 9), ("test_lengths", ()), ("eval_every", 0),
     ("l2_mode", "both"), ("rule", 256)],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_round_trips_through_json_dict():
    cfg = TrainConfig(test_lengths=(50, 7), rule_table=(0, 1, 1, 0, 1, 0, 0, 1))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"bond": 3})


def test_build_teacher_variants():
    x = all_sequences(7)
    table = [(30 >> k) & 1 for k in range(8)]
    t = build_teacher(TrainConfig(rule_table=tuple(table)))
    assert torch.equal(t(x), elementary(30)(x))
    twice = build_teacher(TrainConfig(rule_steps=2))
    assert torch.equal(twice(x), elementary(30)(elementary(30)(x)))
    with pytest.raises(ValueError, match="rule_table"):
        build_teacher(TrainConfig(rule_table=(0, 1, 1)))
    r = build_teacher(TrainConfig(random_k=1, alphabet=3, rule_seed=4))
    assert r.d == 3 and r.K == 1


# ------------------------------------------------------------------------------------------------
# Scenario B and other model switches
# ------------------------------------------------------------------------------------------------
def _tiny_trainer(config, model, callbacks=(), run_dir=None):
    rule = elementary(30)
    x = all_sequences(config.train_length)
    g = torch.Generator().manual_seed(1)
    batches = MiniBatches(x, rule, batch_size=config.batch_size or None,
                          crop=(config.crop_min, config.crop_max), generator=g)
    tests = make_test_sets(rule, config.test_lengths, n=config.test_size)
    return Trainer.from_model(model, batches, config, train_set=LabelledSet(x, rule(x)), test_sets=tests,
                   callbacks=callbacks, run_dir=run_dir)


@pytest.mark.parametrize("l2_mode", ["coupled", "decoupled", "penalty"])
def test_scenario_b_leaves_context_tensors_bit_identical(l2_mode):
    cfg = TrainConfig(**TINY, train_contexts=False, l1=1e-2, l2=1e-2, l2_mode=l2_mode)
    model = TNAttention(4, backend="reference", train_contexts=False, generator=torch.Generator().manual_seed(0))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k in ("A_left", "A_right", "u", "v")}
    C0 = model.C.detach().clone()
    _tiny_trainer(cfg, model).fit()
    for k, v in frozen.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not torch.equal(model.C.detach(), C0)  # while C did train


def test_scenario_b_through_config_flag(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 3}, train_contexts=False, out=str(tmp_path / "b"))
    result = train(cfg)
    trained = result.model
    from tnattn.train.build import build_model, split_seed

    fresh = build_model(cfg, elementary(30), generator=torch.Generator().manual_seed(split_seed(cfg.seed)[0]))
    assert torch.equal(trained.A_left, fresh.A_left)
    assert not torch.equal(trained.C, fresh.C)


def test_exact_contexts_train_only_c_to_zero_test_error(tmp_path):
    cfg = TrainConfig(exact=True, train_contexts=False, D=4, train_length=6, crop_min=0, batch_size=0,
                      lr=0.05, max_epochs=400, test_lengths=(200, 20), test_size=50, eval_every=50,
                      progress=False, plots=False, backend="reference", out=str(tmp_path))
    r = train(cfg)
    assert r.t_eps is not None, r.summary
    assert r.summary["final_test_errors"] == {"200": 0.0, "20": 0.0}


# ------------------------------------------------------------------------------------------------
# history, cadence, callbacks, stopping rules
# ------------------------------------------------------------------------------------------------
def test_history_columns_and_eval_cadence(tmp_path):
    cfg = TrainConfig(**TINY, eval_when_fit=False, out=str(tmp_path))
    h = train(cfg).history
    assert h.columns[:5] == ["epoch", "loss", "penalty", "batch_error", "train_error"]
    assert "test_error_40" in h.columns and "test_error_12" in h.columns and "deff" in h.columns
    assert "norm_A_left" in h.columns and "norm_C" in h.columns
    assert h.column("epoch").tolist() == [1, 2, 3, 4, 5, 6]
    measured = ~np.isnan(h.column("test_error_40"))
    assert measured.tolist() == [False, True, False, True, False, True]
    deff = h.column("deff")[measured]
    assert np.all((deff >= 1.0) & (deff <= 4.0 + 1e-9))  # a D_eff of 4-dim contexts
    assert np.all(h.column("loss") > 0) and np.all(h.column("grad_norm") > 0)


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def columns(self):
        return ["marker"]

    def on_train_start(self, trainer):
        self.events.append("start")

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_batch_end(self, trainer, epoch, batch_index, loss):
        assert math.isfinite(loss)
        if batch_index == 0:
            self.events.append(("batch", epoch))

    def on_epoch_end(self, trainer, epoch, row):
        row["marker"] = 10 * epoch
        self.events.append(("epoch_end", epoch))
        if epoch == 3:
            trainer.request_stop("enough")

    def on_train_end(self, trainer):
        self.events.append("end")


def test_callback_hooks_extra_columns_and_request_stop():
    cfg = TrainConfig(**TINY)
    model = TNAttention(4, backend="reference", generator=torch.Generator().manual_seed(0))
    rec = _Recorder()
    result = _tiny_trainer(cfg, model, callbacks=[rec]).fit().run(0)
    assert rec.events == ["start"] + [e for k in (1, 2, 3) for e in (("epoch_start", k), ("batch", k), ("epoch_end", k))] + ["end"]
    assert result.history.column("marker").tolist() == [10, 20, 30]
    assert result.stop_reason == "enough"


def test_snapshot_restore_reverts_parameters_and_optimizer():
    cfg = TrainConfig(**TINY)
    model = TNAttention(4, backend="reference", generator=torch.Generator().manual_seed(0))
    tr = _tiny_trainer(cfg, model)
    member = MemberView(tr, 0)  # what a callback sees
    tr.train_epoch(1)
    snap = member.snapshot()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr.train_epoch(2)
    assert not torch.equal(model.C, before["C"])
    member.restore(snap)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)
    assert int(tr.optimizer.state_dict()["state"][0]["step"]) == len(tr.batches)


def test_patience_stops_a_run_without_progress(tmp_path):
    # lr tiny: the loss barely moves, so a large min_delta means no epoch counts as improving.
    cfg = TrainConfig(**{**TINY, "max_epochs": 50}, lr=1e-9, patience=3, min_delta=1.0, out=str(tmp_path))
    r = train(cfg)
    assert r.stop_reason == "patience"
    assert r.summary["epochs"] == 4  # epoch 1 sets the best, epochs 2-4 do not improve


def test_unknown_backend_or_model_without_parameters_rejected():
    cfg = TrainConfig(**TINY)
    model = TNAttention(4, backend="reference", train_contexts=False, train_classifier=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        _tiny_trainer(cfg, model)


# ------------------------------------------------------------------------------------------------
# run directory
# ------------------------------------------------------------------------------------------------
def test_run_directory_files_are_valid_and_consistent(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(**{**TINY, "plots": True}, out=str(out))
    result = train(cfg)
    for name in ("config.json", "history.csv", "history.jsonl", "checkpoint.pt", "summary.json", "training.png"):
        assert (out / name).is_file(), name
    assert TrainConfig.from_dict(read_json(out / "config.json")["config"]) == cfg
    rows_csv = read_history_csv(out / "history.csv")
    rows_jsonl = read_history_jsonl(out / "history.jsonl")
    assert len(rows_csv) == len(rows_jsonl) == len(result.history) == cfg.max_epochs
    for a, b, c in zip(rows_csv, rows_jsonl, result.history.rows):
        for k in result.history.columns:
            if isinstance(c[k], float) and math.isnan(c[k]):
                assert math.isnan(a[k]) and math.isnan(b[k])
            else:
                assert a[k] == b[k] == c[k], k
    summary = read_json(out / "summary.json")
    assert summary["config"]["D"] == 4 and "tnattn_version" in summary
    res = summary["results"]
    for key in ("t_train", "t_eps", "t_G", "final_test_errors", "wall_time_s", "tokens_per_s", "stop_reason"):
        assert key in res
    assert res["tokens_per_s"] > 0
    assert set(res["final_test_errors"]) == {"40", "12"}
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------------
def test_alphabet_three_rule_trains_with_cross_entropy(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_epochs": 2, "train_length": 4, "crop_min": 2, "crop_max": 4},
                      random_k=1, alphabet=3, loss="ce", out=str(tmp_path))
    r = train(cfg)
    assert r.model.c == 3
    assert np.all(np.isfinite(r.history.column("loss")))


@pytest.mark.slow
def test_default_config_groks_rule_30(tmp_path):
    """The README's main job, shortened only by the fixed seed: zero error on lengths 1000 and 100."""
    cfg = TrainConfig(seed=0, out=str(tmp_path / "default"), progress=False)
    r = train(cfg)
    assert r.t_eps is not None, r.summary
    assert r.stop_reason == "grokked"
    assert r.summary["final_test_errors"] == {"1000": 0.0, "100": 0.0}
    assert r.t_train is not None and r.t_train <= r.t_eps


def test_online_spike_flags_equal_offline_detection():
    from tnattn.metrics import detect_loss_spikes

    cfg = TrainConfig(**TINY)
    model = TNAttention(4, backend="reference", generator=torch.Generator().manual_seed(0))
    tr = _tiny_trainer(cfg, model)
    rng = np.random.default_rng(0)
    loss = np.exp(-np.arange(120) / 40.0) * (1 + 0.05 * rng.standard_normal(120))
    loss[[30, 31, 70, 100]] *= [30.0, 20.0, 50.0, 10.0]  # a two-epoch spike and two single ones
    flags = []
    for epoch, value in enumerate(loss, start=1):
        flag = tr._spike_onset(0, float(value))
        flags.append(flag)
        tr.history.record(epoch, np.zeros(1, dtype=np.int64), {"loss": [float(value)], "spike": [flag]}, 0.0)
    offline = detect_loss_spikes(loss)
    assert offline.tolist() == [30, 70, 100]  # the synthetic spikes, onsets only
    assert np.nonzero(np.array(flags))[0].tolist() == offline.tolist()


def test_one_seed_fixes_the_whole_run(tmp_path):
    def run(seed, name):
        return train(TrainConfig(**{**TINY, "max_epochs": 3}, seed=seed, out=str(tmp_path / name))).history

    a, b, c = run(3, "a"), run(3, "b"), run(4, "c")
    drop = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h.rows]  # noqa: E731
    assert str(drop(a)) == str(drop(b))  # str(): nan == nan
    assert str(drop(a)) != str(drop(c))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cuda"):
        train(TrainConfig(**TINY, device="cuda", out=str(tmp_path)))


@pytest.mark.parametrize("definition, expected", [("first_zero", (2, 3)), ("stays_zero", (4, 5))])
def test_grokking_definition_in_the_trainer(definition, expected):
    # The per-epoch bookkeeping of Trainer on a hand-written error history: training error zero at
    # epoch 2, back up at 3, zero again from 4; test error zero at 3, 0.02 at 4, zero from 5 on
    # (unmeasured at 6, which does not break the zero stretch).
    from types import SimpleNamespace

    from tnattn.train.trainer import Trainer

    # Member 1 never reaches zero: each member's times are its own bookkeeping.
    rows = [(1, 0.2, 0.3), (2, 0.0, 0.1), (3, 0.1, 0.0), (4, 0.0, 0.02), (5, 0.0, 0.0), (6, 0.0, math.nan), (7, 0.0, 0.0)]
    fake = SimpleNamespace(config=TrainConfig(grokking_definition=definition), t_train=np.full(2, -1),
                           t_eps=np.full(2, -1), stop_reason=[None, None], stop_message=[None, None],
                           test_sets={100: None})  # fmt: skip
    two = lambda v: np.full(2, v)  # noqa: E731
    for epoch, tr, te in rows:
        row = {"train_error": np.array([tr, 0.5]), "test_error_100": np.array([te, 0.5]), "finite": two(True),
               "contexts_zero": two(False), "loss": two(0.1), "grad_norm": two(1.0)}  # fmt: skip
        Trainer._update_members(fake, epoch, np.arange(2), row)
    assert (fake.t_train.tolist(), fake.t_eps.tolist()) == ([expected[0], -1], [expected[1], -1])
    with pytest.raises(ValueError, match="grokking_definition"):
        TrainConfig(grokking_definition="last")


def test_eval_screen_records_t_eps_to_the_epoch(tmp_path):
    # A tiny run that reaches zero test error within 100 epochs (the trainer stops at t_eps).
    # Testing every epoch records the exact t_eps; so does the default screen (the first 4 sequences
    # of every length each epoch, the full sets when those are error-free) when the periodic test
    # never comes; without the screen nothing is recorded.
    base = dict(TINY, max_epochs=100, lr=0.05, eval_when_fit=False)
    every = train(TrainConfig(**{**base, "eval_every": 1}, eval_screen=0, out=str(tmp_path / "every")))
    assert every.t_eps is not None
    screened = train(TrainConfig(**{**base, "eval_every": 1000}, out=str(tmp_path / "screened")))
    assert TrainConfig(**base).eval_screen == 4
    assert screened.t_eps == every.t_eps
    sparse = train(TrainConfig(**{**base, "eval_every": 1000}, eval_screen=0, out=str(tmp_path / "sparse")))
    assert sparse.t_eps is None
    with pytest.raises(ValueError, match="eval_screen"):
        TrainConfig(eval_screen=-1)


def test_resume_check_accepts_fields_added_after_the_checkpoint_at_their_defaults():
    cfg = TrainConfig(**TINY)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("eval_screen", "grokking_definition")}
    cfg.check_resume(old)  # absent -> default: accepted
    with pytest.raises(ValueError, match="eval_screen"):
        TrainConfig(**TINY, eval_screen=0).check_resume(old)
