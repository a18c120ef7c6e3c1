"""Training: configs, losses, penalties, the trainer, checkpoints, callbacks and history.

Quick start::

    from tnattn.train import TrainConfig, train
    result = train(TrainConfig(seed=1, out="runs/demo"))
    print(result.t_train, result.t_eps, result.run_dir)

E members at once, one per seed (member e equals ``train`` with its seed)::

    from tnattn.train import Trainer
    result = Trainer(TrainConfig(), seeds=[0, 1, 2]).fit()
    print(result.t_G, result.history.column("loss").shape)  # (E,), (E, T)

Library users with their own model or data use :meth:`Trainer.from_model`.
"""

from tnattn.train.build import Problem, build_model, build_problem, build_teacher, split_seed
from tnattn.train.callbacks import Callback, Patience, ProgressBar, StopAfterGrokking
from tnattn.train.checkpoint import load_checkpoint, save_checkpoint
from tnattn.train.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TeacherConfig,
    TrainConfig,
    preset,
)
from tnattn.train.history import History, HistoryFiles, MemberHistory, read_history_csv, read_history_jsonl
from tnattn.train.losses import compute_loss, make_loss, member_losses_and_grads
from tnattn.train.penalties import PenaltySchedule, apply_l2, l1_penalty, l2_penalty
from tnattn.train.run import default_run_dir, load_run_config, train
from tnattn.train.trainer import FitResult, MemberView, TrainResult, Trainer, evaluate_error

__all__ = [
    "TrainConfig",
    "TeacherConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "PRESETS",
    "preset",
    "train",
    "Trainer",
    "TrainResult",
    "FitResult",
    "MemberView",
    "MemberHistory",
    "load_run_config",
    "default_run_dir",
    "evaluate_error",
    "Callback",
    "StopAfterGrokking",
    "Patience",
    "ProgressBar",
    "History",
    "HistoryFiles",
    "read_history_csv",
    "read_history_jsonl",
    "save_checkpoint",
    "load_checkpoint",
    "compute_loss",
    "member_losses_and_grads",
    "make_loss",
    "l1_penalty",
    "l2_penalty",
    "apply_l2",
    "PenaltySchedule",
    "Problem",
    "build_teacher",
    "build_problem",
    "build_model",
    "split_seed",
]
