"""Run directories written before the one-world redesign (tnattn 0.1.0, main at cb93a22) still work.

``tests/data/run_v0.1.0`` is a 3-epoch float64 run written by that version with

    tnattn train --dtype float64 --D 3 --train-length 6 --crop-min 3 --crop-max 6 --batch-size 32
        --test-lengths 20 --test-size 50 --max-epochs 3 --stop-after-grok -1 --seed 1 --eval-every 1
        --checkpoint-every 1 --no-progress --no-plots --deff-probe 8 --out DIR

(its config.json in the old flat shape, its checkpoint). It must load, resume, and continue on the
trajectory a fresh run of the current code takes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tnattn.cli import main
from tnattn.train.config import TrainConfig
from tnattn.train.history import read_history_csv
from tnattn.train.run import load_run_config

OLD_RUN = Path(__file__).resolve().parents[1] / "data" / "run_v0.1.0"


def test_old_config_file_loads_as_it_was_written():
    config = load_run_config(OLD_RUN)
    assert isinstance(config, TrainConfig)
    assert (config.D, config.dtype, config.seed, config.test_lengths, config.max_epochs) == (3, "float64", 1, (20,), 3)
    assert config.batch_size == 32 and config.crop_max == 6 and config.deff_probe == 8


def test_old_checkpoint_resumes_onto_the_fresh_trajectory(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    assert main(["train", "--resume", "--out", str(old), "--max-epochs", "5"]) == 0
    config = load_run_config(OLD_RUN)
    fresh = tmp_path / "fresh"
    flags = ["--config", str(OLD_RUN / "config.json"), "--out", str(fresh), "--max-epochs", "5"]
    assert main(["train", *flags]) == 0
    a, b = read_history_csv(old / "history.csv"), read_history_csv(fresh / "history.csv")
    assert len(a) == len(b) == 5 and config.max_epochs == 3
    for name in ("loss", "penalty", "train_error", "grad_norm", "test_error_20"):
        np.testing.assert_allclose([r[name] for r in a], [r[name] for r in b], rtol=1e-9, atol=0, equal_nan=True, err_msg=name)


def test_a_checkpoint_of_another_format_fails_in_one_line_naming_the_versions(tmp_path, capsys):
    import torch

    from tnattn import __version__
    from tnattn.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for _ in range(2):  # both generations, as a later tnattn might write them
        save_checkpoint(run / "checkpoint.pt", {**state, "format": 2})
    assert main(["train", "--resume", "--out", str(run), "--max-epochs", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"format 2; tnattn {__version__} reads format 1 only" in err
