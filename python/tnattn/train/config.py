"""The training configuration: one dataclass that describes a whole run.

:class:`TrainConfig` holds the teacher, the data, the model, the optimisation and the run control.
Every field carries ``metadata["help"]`` (and ``choices`` where the values are a fixed set), from
which ``tnattn train --help`` is generated, so the field list below *is* the CLI reference.

Presets (:data:`PRESETS`) are named sets of overrides on top of the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tnattn._fields import check_fields
from tnattn.errors import ConfigError
from tnattn.models.init import INITS
from tnattn.teachers import get_teacher, teacher_kind, teacher_shape

__all__ = ["TrainConfig", "PRESETS", "preset", "LOSSES", "OPTIMIZERS", "L2_MODES", "SCHEDULES", "teacher_shape"]

# Most training strings ``train_size = 0`` may enumerate (as tnattn.data.all_sequences).
_MAX_ENUMERATED = 2**26

LOSSES = ("mse", "hinge", "logistic", "ce")
OPTIMIZERS = ("adam", "gd")
L2_MODES = ("coupled", "decoupled", "penalty")
SCHEDULES = ("constant", "step", "exp")


def _f(default: Any, help: str, group: str, choices: tuple | None = None):
    meta = {"help": help, "group": group}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


_TEACHER = "teacher"
_DATA = "data"
_MODEL = "model"
_OPT = "optimisation"
_RUN = "run control"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (teacher, data, model, optimiser, run control).

    The defaults train a TN-attention student (D = 6, Adam lr 0.005, MSE on a sigmoid, L1 1e-3)
    on one step of rule 30, from all 256 length-8 strings cropped to random lengths 3-8, and stop
    at the first epoch with zero test error on 1000 random sequences of lengths 1000 and 100. With
    L1 1e-3 every seed we tried (0-23) grokked, typically within 100-250 epochs (at most 868);
    without L1 one seed in twelve fitted the training set but never generalised to long sequences.
    See the field ``metadata["help"]`` strings (or ``tnattn train --help``) for each setting.

    Notes
    -----
    L2 regularisation has three meanings, chosen by ``l2_mode``:

    ``"coupled"`` (default, the author's code: ``torch.optim.Adam(weight_decay=l2)``)
        ``l2 * theta`` is added to the gradient before the optimiser step, so with Adam it is
        rescaled by the adaptive step size like any gradient.
    ``"decoupled"`` (AdamW)
        ``theta <- theta * (1 - lr * l2)`` before the optimiser step, independent of Adam's scaling.
    ``"penalty"``
        ``(l2 / 2) * sum theta^2`` is added to the loss (paper, Section 3); the gradient is the
        same as ``"coupled"``, but the penalty also appears in the reported ``penalty`` column.

    L1 is always a penalty ``l1 * sum |theta|`` added to the loss. Both act on every trainable
    parameter, and both are multiplied by the penalty schedule.
    """

    # --- teacher -------------------------------------------------------------------------------
    rule: int = _f(30, "Wolfram number (0-255) of the elementary cellular-automaton teacher", _TEACHER)
    rule_steps: int = _f(1, "apply the teacher rule this many times (a K = steps local rule)", _TEACHER)
    random_k: int = _f(0, "if > 0: use a random K-local rule with this radius instead of --rule", _TEACHER)
    alphabet: int = _f(2, "alphabet size d of a random rule (--random-k) or a --rule-table", _TEACHER)
    rule_seed: int = _f(0, "seed of the random rule's truth table", _TEACHER)
    rule_table: tuple[int, ...] = _f(
        (), "custom truth table (d**(2K+1) outputs, window read leftmost-first); overrides --rule", _TEACHER
    )
    boundary: str = _f("open", "teacher boundary condition", _TEACHER, ("open", "periodic"))

    # --- data ----------------------------------------------------------------------------------
    train_length: int = _f(8, "length of the training sequences", _DATA)
    train_size: int = _f(0, "number of random training sequences; 0 = all d**length sequences", _DATA)
    crop_min: int = _f(3, "shortest random crop of each mini-batch (0 = no cropping)", _DATA)
    crop_max: int = _f(8, "longest random crop of each mini-batch", _DATA)
    batch_size: int = _f(64, "sequences per mini-batch; 0 = full batch", _DATA)
    test_lengths: tuple[int, ...] = _f((1000, 100), "lengths of the random test sequences", _DATA)
    test_size: int = _f(1000, "test sequences per length", _DATA)
    test_seed: int = _f(12345, "seed of the test sets (fixed across runs of a study)", _DATA)

    # --- model ---------------------------------------------------------------------------------
    D: int = _f(6, "bond dimension", _MODEL)
    shared: bool = _f(True, "one context tensor for both sides (the paper's model)", _MODEL)
    boundary_vectors: str = _f(
        "e1", "boundary vectors u, v: e_1, top eigenvectors of symbol 0's matrix, or random", _MODEL, ("e1", "eig", "random")
    )
    train_boundary: bool = _f(False, "train the boundary vectors", _MODEL)
    init: str = _f("normal", "initialisation scheme of the context tensors (C is always normal)", _MODEL, INITS)
    init_std: float = _f(1.0, "standard deviation of the initial tensor entries", _MODEL)
    normalize_map: bool = _f(True, "divide each local map by its norm, times a trainable scale", _MODEL)
    activation: str = _f("sigmoid", "output activation", _MODEL, ("sigmoid", "none"))
    train_contexts: bool = _f(True, "train the context tensors (--no-train-contexts = Scenario B)", _MODEL)
    train_classifier: bool = _f(True, "train the classification tensor C", _MODEL)
    exact: bool = _f(
        False,
        "start from hand-built exact neighbourhood contexts for the teacher's window (D >= 2 d^K shared); "
        "add --no-train-contexts to train only C",
        _MODEL,
    )
    backend: str = _f(
        "ops", "implementation: fused native ops, the plain-PyTorch reference loop, or its log-depth variant",
        _MODEL, ("ops", "reference", "vectorized"),
    )
    dtype: str = _f("float32", "floating-point precision", _MODEL, ("float32", "float64"))

    # --- optimisation --------------------------------------------------------------------------
    optimizer: str = _f("adam", "Adam, or plain gradient descent (full batch with --batch-size 0)", _OPT, OPTIMIZERS)
    lr: float = _f(0.005, "learning rate", _OPT)
    loss: str = _f(
        "mse",
        "mse: squared error on the activation (targets {0,1} after a sigmoid, +-1 without); "
        "hinge and logistic: on the logits with targets +-1; ce: softmax cross-entropy (c > 1)",
        _OPT,
        LOSSES,
    )
    l1: float = _f(1e-3, "L1 strength: adds l1 * sum|theta| over all trainable parameters", _OPT)
    l2: float = _f(0.0, "L2 strength (meaning set by --l2-mode)", _OPT)
    l2_mode: str = _f(
        "coupled",
        "coupled: l2*theta added to the gradient (Adam weight_decay, the author's code); "
        "decoupled: AdamW-style shrinkage; penalty: (l2/2)*sum theta^2 added to the loss",
        _OPT,
        L2_MODES,
    )
    penalty_schedule: str = _f(
        "constant",
        "schedule of the L1/L2 strengths: constant; step (x factor after schedule-epochs); "
        "exp (decays to factor with time constant schedule-epochs)",
        _OPT,
        SCHEDULES,
    )
    schedule_epochs: int = _f(100, "step epoch or exponential time constant of the penalty schedule", _OPT)
    schedule_factor: float = _f(0.1, "late/early ratio of the penalty strengths", _OPT)

    # --- run control ---------------------------------------------------------------------------
    max_epochs: int = _f(2000, "maximum number of epochs", _RUN)
    stop_after_grok: int = _f(0, "stop this many epochs after t_eps (zero test error); -1 = never", _RUN)
    grokking_definition: str = _f(
        "first_zero", "t_train/t_eps: first epoch with zero error (the paper's) or first epoch from which it stays zero",
        _RUN, ("first_zero", "stays_zero"),
    )
    patience: int = _f(0, "stop when the loss has not improved for this many epochs; 0 = off", _RUN)
    min_delta: float = _f(0.0, "improvement of the loss that resets the patience counter", _RUN)
    eval_every: int = _f(10, "evaluate the test sets (and D_eff) every this many epochs", _RUN)
    eval_when_fit: bool = _f(
        True, "also evaluate the test sets at every epoch with zero training error (exact t_eps)", _RUN
    )
    eval_screen: int = _f(
        4, "every epoch, test this many sequences per length; all error-free -> evaluate the full test sets "
        "(t_eps exact to the epoch at a fraction of the cost); 0 = off", _RUN,
    )
    deff_probe: int = _f(256, "test sequences whose middle-site left contexts give D_eff; 0 = off", _RUN)
    seed: int = _f(0, "seed of the model initialisation, data order and crops", _RUN)
    device: str = _f("cpu", "device (auto = cuda if available)", _RUN, ("cpu", "cuda", "auto"))
    threads: int = _f(0, "CPU threads for torch; 0 = torch's default", _RUN)
    out: str = _f("", "run directory; empty = runs/<rule>-D<D>-seed<seed>-<time>", _RUN)
    checkpoint_every: int = _f(50, "write a checkpoint every this many epochs (and always at exit)", _RUN)
    resume: bool = _f(False, "continue the run in --out from its last checkpoint (an error if --out holds no run)", _RUN)
    overwrite: bool = _f(
        False, "replace the run already in --out (its checkpoints, history and summary are deleted)", _RUN
    )
    progress: bool = _f(True, "show a progress bar", _RUN)
    plots: bool = _f(True, "write PNG plots into the run directory at the end", _RUN)
    logger: str = _f(
        "none", "experiment logger writing into <run directory>/logs: tensorboard, or wandb (offline unless "
        "WANDB_MODE=online); see tnattn.loggers", _RUN, ("none", "tensorboard", "wandb"),
    )  # fmt: skip

    def __post_init__(self):
        # Tuples may arrive as lists (from JSON); store tuples so configs compare and hash.
        object.__setattr__(self, "test_lengths", tuple(self.test_lengths))
        object.__setattr__(self, "rule_table", tuple(self.rule_table))
        _validate(self)

    # Fields that only steer the run (not its trajectory): they may differ on --resume.
    RUN_CONTROL = ("max_epochs", "out", "checkpoint_every", "resume", "overwrite", "progress", "plots", "threads",
                   "logger")

    def to_dict(self) -> dict:
        """Plain-JSON dict of the fields (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)


def _need(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name} {msg}")


def _validate(c: "TrainConfig") -> None:
    """Every check of :class:`TrainConfig`, raising :class:`~tnattn.errors.ConfigError`.

    The one place where settings are checked: the CLI, presets, saved configs and the experiments
    all build a TrainConfig, so a setting that cannot work fails here, before any file is written.
    """
    check_fields(c)
    _need(0 <= c.rule <= 255, "rule", f"must be in [0, 255], got {c.rule}")
    _need(c.rule_steps >= 1, "rule_steps", f"must be >= 1, got {c.rule_steps}")
    _need(c.random_k >= 0, "random_k", f"must be >= 0, got {c.random_k}")
    _need(c.alphabet >= 2, "alphabet", f"must be >= 2, got {c.alphabet}")
    for name in ("rule_seed", "seed", "test_seed"):
        _need(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")
    kind = get_teacher(teacher_kind(c))
    if kind.check is not None:
        kind.check(c)
    _need(c.train_length >= 1, "train_length", f"must be >= 1, got {c.train_length}")
    _need(c.train_size >= 0, "train_size", f"must be >= 0, got {c.train_size}")
    K, d = teacher_shape(c)
    if c.train_size == 0:
        _need(d**c.train_length <= _MAX_ENUMERATED, "train_length",
              f"{c.train_length} with train_size 0 (all strings) means {d}**{c.train_length} training strings, "
              f"more than {_MAX_ENUMERATED}; set train_size to draw random ones")
    _need(c.crop_min >= 0, "crop_min", f"must be >= 0, got {c.crop_min}")
    if c.crop_min > 0:
        _need(
            c.crop_min <= min(c.crop_max, c.train_length),
            "crop_min",
            f"must be <= min(crop_max, train_length); got crop_min={c.crop_min}, "
            f"crop_max={c.crop_max}, train_length={c.train_length}",
        )
    _need(c.batch_size >= 0, "batch_size", f"must be >= 0, got {c.batch_size}")
    _need(len(c.test_lengths) >= 1, "test_lengths", "must name at least one length")
    _need(all(m >= 1 for m in c.test_lengths), "test_lengths", f"must be >= 1, got {c.test_lengths}")
    _need(len(set(c.test_lengths)) == len(c.test_lengths), "test_lengths", "must not repeat a length")
    _need(c.test_size >= 1, "test_size", f"must be >= 1, got {c.test_size}")
    _need(c.D >= 1, "D", f"must be >= 1, got {c.D}")
    _need(c.init_std > 0, "init_std", f"must be > 0, got {c.init_std}")
    _need(c.lr > 0, "lr", f"must be > 0, got {c.lr}")
    _need(c.l1 >= 0, "l1", f"must be >= 0, got {c.l1}")
    _need(c.l2 >= 0, "l2", f"must be >= 0, got {c.l2}")
    _need(c.schedule_epochs >= 1, "schedule_epochs", f"must be >= 1, got {c.schedule_epochs}")
    _need(c.schedule_factor >= 0, "schedule_factor", f"must be >= 0, got {c.schedule_factor}")
    _need(c.max_epochs >= 1, "max_epochs", f"must be >= 1, got {c.max_epochs}")
    _need(c.stop_after_grok >= -1, "stop_after_grok", f"must be >= -1, got {c.stop_after_grok}")
    _need(c.patience >= 0, "patience", f"must be >= 0, got {c.patience}")
    _need(c.min_delta >= 0, "min_delta", f"must be >= 0, got {c.min_delta}")
    _need(c.eval_every >= 1, "eval_every", f"must be >= 1, got {c.eval_every}")
    _need(c.eval_screen >= 0, "eval_screen", f"must be >= 0, got {c.eval_screen}")
    _need(c.deff_probe >= 0, "deff_probe", f"must be >= 0, got {c.deff_probe}")
    _need(c.threads >= 0, "threads", f"must be >= 0, got {c.threads}")
    _need(c.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {c.checkpoint_every}")
    checks = {
        "boundary": ("open", "periodic"),
        "boundary_vectors": ("e1", "eig", "random"),
        "init": INITS,
        "activation": ("sigmoid", "none"),
        "backend": ("ops", "reference", "vectorized"),
        "dtype": ("float32", "float64"),
        "optimizer": OPTIMIZERS,
        "loss": LOSSES,
        "l2_mode": L2_MODES,
        "penalty_schedule": SCHEDULES,
        "device": ("cpu", "cuda", "auto"),
        "grokking_definition": ("first_zero", "stays_zero"),
    }
    for name, allowed in checks.items():
        value = getattr(c, name)
        _need(value in allowed, name, f"must be one of {allowed}, got {value!r}")
    _need(c.train_contexts or c.train_classifier, "train_contexts",
          "and train_classifier are both off: nothing would train (turn one of them on)")
    if c.exact:
        need_D = 2 * d**K if c.shared else d**K
        _need(c.D >= need_D, "D",
              f"must be >= {need_D} for exact contexts of a K={K}, d={d} teacher "
              f"({'2 d^K shared' if c.shared else 'd^K separate'}), got {c.D}")
    _need(not (c.resume and c.overwrite), "resume",
          "and overwrite contradict each other: resume continues the run in out, overwrite replaces it")


#: Named overrides of the defaults. ``author-example`` is the author's published example run:
#: rule 30 applied twice (open boundary), D = 40, Adam lr 0.005, no regularisation (L1 = L2 = 0, as
#: in the published command; our default L1 of 1e-3 is switched off), batch 128, random crops of
#: length 6-10 of all 1024 length-10 strings, up to 7000 epochs, tested on 1000 random sequences of
#: lengths 1000 and 100.
PRESETS: dict[str, dict[str, Any]] = {
    "author-example": dict(
        rule=30,
        rule_steps=2,
        boundary="open",
        D=40,
        batch_size=128,
        train_length=10,
        train_size=0,
        crop_min=6,
        crop_max=10,
        optimizer="adam",
        lr=0.005,
        l1=0.0,
        l2=0.0,
        loss="mse",
        activation="sigmoid",
        normalize_map=True,
        boundary_vectors="e1",
        max_epochs=7000,
        stop_after_grok=-1,
        test_lengths=(1000, 100),
        test_size=1000,
        eval_every=10,
        checkpoint_every=100,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from preset ``name`` with ``overrides`` applied on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return TrainConfig(**{**PRESETS[name], **overrides})
