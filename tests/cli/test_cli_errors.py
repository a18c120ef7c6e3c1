"""User errors of every CLI command end in one line on stderr and exit status 2, never a traceback
(issue 13, item 11), and run directories are never silently replaced (item 7)."""

import subprocess
import sys

import pytest

from tnattn import cli
from tnattn.io import read_json
from tnattn.train import read_history_csv
from tnattn.train.config import TrainConfig, preset

TINY = ["--D", "3", "--train-length", "5", "--crop-min", "3", "--crop-max", "5", "--batch-size", "16",
        "--test-lengths", "20", "--test-size", "10", "--backend", "reference", "--no-progress", "--no-plots"]


def _main(argv, capsys):
    """Run cli.main; return (exit status, stderr), whether it returns or exits."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def _one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("flags, needle", [
    (["--rule-table", "0,1,1"], "--rule-table"),
    (["--exact", "--D", "2"], "--D must be >= 4"),
    (["--no-train-contexts", "--no-train-classifier"], "nothing would train"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--max-epochs", "0"], "--max-epochs"),
    (["--crop-min", "9", "--crop-max", "5"], "--crop-min"),
    (["--l1", "-1"], "--l1"),
    (["--seed", "-3"], "--seed"),
    (["--train-length", "40"], "--train-length"),
    (["--resume", "--overwrite", "--out", "x"], "contradict"),
    (["--D", "two"], "--D"),
    (["--no-such-flag"], "unrecognized"),
])
def test_train_bad_settings_are_one_line_exit_2(flags, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = _main(["train", *flags], capsys)
    _one_line_error(rc, err, needle)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("command", [["train", *TINY], ["experiment", "scenario-a", "--members", "1", "--max-epochs", "1"]])
def test_settings_that_need_more_memory_than_any_machine_are_one_line_exit_2(command, capsys, tmp_path):
    # D = 1e8: the context tensor alone is 1.6e17 bytes, beyond any address space (so the
    # allocation fails even where the kernel overcommits); they parse and validate, then fail.
    flag = "--D" if command[0] == "train" else "--D-values"
    rc, err = _main([*command, flag, "100000000", "--out", str(tmp_path / "r")], capsys)
    _one_line_error(rc, err, "out of memory", "--D")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_a_gpu(capsys, tmp_path):
    rc, err = _main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")], capsys)
    _one_line_error(rc, err, "no CUDA device")


def test_train_out_naming_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    rc, err = _main(["train", *TINY, "--out", str(f)], capsys)
    _one_line_error(rc, err, "is a file")
    assert f.read_text() == "keep me"


def test_existing_run_is_refused_without_overwrite_and_replaced_with_it(capsys, tmp_path):
    out = tmp_path / "run"
    assert _main(["train", *TINY, "--max-epochs", "3", "--out", str(out)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, err = _main(["train", *TINY, "--max-epochs", "2", "--out", str(out)], capsys)
    _one_line_error(rc, err, "already holds a run", "--overwrite")
    # nothing of the old run changed
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    rc, _ = _main(["train", *TINY, "--max-epochs", "2", "--lr", "0.02", "--out", str(out), "--overwrite"], capsys)
    assert rc == 0
    assert len(read_history_csv(out / "history.csv")) == 2
    saved = read_json(out / "config.json")["config"]
    assert saved["lr"] == 0.02 and saved["overwrite"] is False and saved["max_epochs"] == 2


def test_experiment_out_naming_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    rc, err = _main(["experiment", "perceptron-1d", "--out", str(f), "--no-progress"], capsys)
    _one_line_error(rc, err, "is a file")
    assert f.read_text() == "keep me"


def test_resume_on_a_directory_without_a_run_is_an_error(capsys, tmp_path):
    rc, err = _main(["train", *TINY, "--resume", "--out", str(tmp_path / "nothing")], capsys)
    _one_line_error(rc, err, "holds no run")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    rc, err = _main(["train", *TINY, "--resume", "--out", str(tmp_path / "empty")], capsys)
    _one_line_error(rc, err, "holds no run")


def test_resume_with_fewer_epochs_than_trained_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert _main(["train", *TINY, "--max-epochs", "4", "--out", str(out)], capsys)[0] == 0
    rc, err = _main(["train", "--resume", "--out", str(out), "--max-epochs", "3"], capsys)
    _one_line_error(rc, err, "already holds 4 epochs")
    rc, err = _main(["train", "--resume", "--out", str(out), "--lr", "0.5"], capsys)
    _one_line_error(rc, err, "cannot resume", "lr")


@pytest.mark.parametrize("args, needle", [
    (["scenario-a", "--lr", "nan"], "--lr must be a finite number"),
    (["scenario-a", "--crop-min", "9", "--crop-max", "5"], "--crop-min"),
    (["scenario-a", "--max-epochs", "0"], "--max-epochs"),
    (["scenario-a", "--members", "0"], "--members"),
    (["scenario-a", "--span-quantile", "2"], "--span-quantile"),
    (["scenario-a", "--D-values", "10,10"], "--D-values"),
    (["scenario-b", "--n-inits", "1"], "--n-inits"),
    (["scenario-b", "--lambda1-values", "1e-3,nan"], "--lambda1-values"),
    (["perceptron-1d", "--dt", "0"], "--dt"),
    (["perceptron-1d", "--n-eps", "1"], "--n-eps"),
    (["perceptron-ball", "--eps", "0.5"], "--eps"),
    (["structure", "--rule", "300"], "--rule"),
    (["structure", "--lr", "-1"], "--lr"),
    (["structure", "--settings", "l2"], "unknown setting"),
    (["scenario-a", "--members", "x"], "--members"),
])
def test_experiment_bad_settings_are_one_line_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = _main(["experiment", *args], capsys)
    _one_line_error(rc, err, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--repeats", "0"], "repeats"),
    (["--threads", "0"], "threads"),
    (["--json", "."], "is a folder"),
    (["no-section"], "unknown section"),
    (["--scaling-M", "0"], "--scaling-M"),
])
def test_bench_bad_settings_are_one_line_exit_2(args, needle, capsys):
    rc, err = _main(["bench", *args], capsys)
    _one_line_error(rc, err, needle)


def test_bench_plots_naming_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    rc, err = _main(["bench", "--quick", "--plots", str(tmp_path / "f")], capsys)
    _one_line_error(rc, err, "is a file")


def test_a_fresh_process_prints_one_line_not_a_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tnattn.cli", "train", "--rule-table", "0,1,1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("tnattn train: error: --rule-table")


def test_author_example_preset_has_no_regularisation():
    # The authors' published command for this example sets L1 = 0 and L2 = 0.
    cfg = preset("author-example")
    assert cfg.l1 == 0.0 and cfg.l2 == 0.0
    assert TrainConfig().l1 == 1e-3  # the plain default keeps its L1
