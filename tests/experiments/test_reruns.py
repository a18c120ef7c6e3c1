"""Reruns of experiments and ensembles: continue to a larger epoch limit or refuse, in one line
(issue 13, item 5); ensemble and experiment directories are locked (item 8); dead ensemble members
stop (item 3)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tnattn import cli
from tnattn.errors import DeadModelWarning, RunDirectoryError, RunLockedError
from tnattn.train import Trainer
from tnattn.ensemble.distributed import load_merged, run_ensemble
from tnattn.io import read_json
from tnattn.train import TrainConfig

FLAGS = ["--D-values", "3", "--members", "2", "--regularisers", "none,l1", "--train-length", "5", "--crop-min", "3",
         "--crop-max", "5", "--batch-size", "16", "--test-lengths", "20", "--test-size", "10", "--deff-probe", "8",
         "--deff-before", "2", "--deff-after", "1", "--stop-after-grok", "-1", "--no-progress"]


def _main(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr()


def test_scenario_a_rerun_with_more_epochs_continues_to_the_new_limit(tmp_path, capsys):
    out = tmp_path / "study"
    rc, _ = _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "3", "--out", str(out)], capsys)
    assert rc == 0
    assert load_merged(out / "D3").history.T == 3
    rc, _ = _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "5", "--out", str(out)], capsys)
    assert rc == 0
    merged = load_merged(out / "D3")
    assert merged.history.T == 5 and [m["epochs"] for m in merged.members] == [5] * 4
    assert read_json(out / "results.json")["config"]["max_epochs"] == 5
    # the continued study equals one run to 5 epochs straight away
    rc, _ = _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "5", "--out", str(tmp_path / "straight")], capsys)
    straight = load_merged(tmp_path / "straight" / "D3")
    for col in ("loss", "train_error", "test_error_20", "grad_norm", "norm_C"):
        np.testing.assert_allclose(merged.history.column(col), straight.history.column(col), rtol=1e-6, err_msg=col)
    # analysis settings may change on rerun (nothing is trained again)
    rc, _ = _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "5", "--deff-before", "1", "--out", str(out)],
                  capsys)
    assert rc == 0


@pytest.mark.parametrize("change, needle", [
    (["--max-epochs", "3", "--lr", "0.01"], "lr (saved 0.005, now 0.01)"),
    (["--max-epochs", "2"], "max_epochs (saved 3, now 2)"),
    (["--max-epochs", "3", "--members", "3"], "members"),
    (["--max-epochs", "3", "--l1", "0.01"], "l1"),
])
def test_scenario_a_rerun_with_changed_training_settings_is_refused_in_one_line(tmp_path, capsys, change, needle):
    out = tmp_path / "study"
    assert _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "3", "--out", str(out)], capsys)[0] == 0
    before = (out / "D3" / "histories.npz").read_bytes()
    rc, cap = _main(["experiment", "scenario-a", *FLAGS, *change, "--out", str(out)], capsys)
    assert rc == 2 and len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err
    assert "cannot rerun" in cap.err and needle in cap.err
    assert (out / "D3" / "histories.npz").read_bytes() == before  # nothing was trained or rewritten


ENS = dict(D=3, train_length=5, crop_min=3, crop_max=5, batch_size=16, test_lengths=(20,), test_size=10,
           max_epochs=3, eval_every=1, deff_probe=8, progress=False, plots=False, stop_after_grok=-1, threads=1)


def test_run_ensemble_refuses_a_smaller_limit_and_other_settings(tmp_path):
    run_ensemble(TrainConfig(**ENS), [0, 1], tmp_path)
    with pytest.raises(RunDirectoryError, match="already holds 3 epochs"):
        run_ensemble(TrainConfig(**{**ENS, "max_epochs": 2}), [0, 1], tmp_path)
    with pytest.raises(RunDirectoryError, match="lr"):
        run_ensemble(TrainConfig(**{**ENS, "lr": 0.01}), [0, 1], tmp_path)
    assert run_ensemble(TrainConfig(**{**ENS, "max_epochs": 4}), [0, 1], tmp_path).history.T == 4


_HOLD = textwrap.dedent("""
    import sys, time
    from tnattn.locks import lock_directory
    with lock_directory(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.mark.parametrize("locked", ["out", "shard"])
def test_an_ensemble_directory_in_use_is_refused(tmp_path, locked):
    path = tmp_path if locked == "out" else tmp_path / "shards" / "rank000-of001"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match="in use by another process"):
            run_ensemble(TrainConfig(**ENS), [0, 1], tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert run_ensemble(TrainConfig(**ENS), [0, 1], tmp_path).history.T == 3  # the stale lock does not block


def test_an_experiment_directory_in_use_is_refused_in_one_line(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        rc, cap = _main(["experiment", "scenario-a", *FLAGS, "--max-epochs", "2", "--out", str(tmp_path)], capsys)
        assert rc == 2 and len(cap.err.strip().splitlines()) == 1 and "in use by another process" in cap.err
    finally:
        proc.kill()
        proc.wait()


def test_dead_ensemble_members_stop_and_the_others_go_on():
    cfg = TrainConfig(**{**ENS, "max_epochs": 4, "l1": 0.0, "deff_probe": 0})
    trainer = Trainer(cfg, [0, 1, 2], elementwise_threads=None)
    with torch.no_grad():
        trainer.model.A_left[1].zero_()  # member 1: every context after the boundary is zero
    with pytest.warns(DeadModelWarning, match=r"member\(s\) \[1\]"):
        result = trainer.fit()
    reasons = [m["stop_reason"] for m in result.members]
    assert reasons == ["max_epochs", "dead", "max_epochs"]
    assert result.members[1]["epochs"] == 1
    # sigmoid(0) = 1/2 against targets in {0, 1}: a squared error of exactly 1/4
    assert result.history.column("loss")[1, 0] == 0.25 and result.history.column("grad_norm")[1, 0] == 0.0


def test_dead_ensemble_member_with_a_penalty_is_caught_by_its_contexts():
    cfg = TrainConfig(**{**ENS, "max_epochs": 4, "l1": 1e-3})
    trainer = Trainer(cfg, [0, 1], elementwise_threads=None)
    with torch.no_grad():
        trainer.model.A_left[0].zero_()
    with pytest.warns(DeadModelWarning):
        result = trainer.fit()
    assert [m["stop_reason"] for m in result.members] == ["dead", "max_epochs"]
    assert result.history.column("grad_norm")[0, 0] > 0  # the L1 gradient of C is not zero


def test_structure_rerun_continues_to_more_epochs_and_refuses_other_settings(tmp_path):
    from tnattn.experiments import structure as exp

    base = dict(mode="compare", out=str(tmp_path), seeds=1, settings=("none",), test_length=20, test_size=10,
                workers=1, progress=False)
    first = exp.run(exp.Config(**base, epochs=6))
    assert first["members"]["none"][0]["epochs"] == 6
    again = exp.run(exp.Config(**base, epochs=9))
    assert again["members"]["none"][0]["epochs"] == 9
    history = (tmp_path / "members" / "none" / "seed2" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 9  # header + epochs 1..9, none twice
    with pytest.raises(RunDirectoryError, match=r"lr \(saved 0.005, now 0.01\)"):
        exp.run(exp.Config(**base, epochs=9, lr=0.01))
    with pytest.raises(RunDirectoryError, match="may only grow"):
        exp.run(exp.Config(**base, epochs=7))
