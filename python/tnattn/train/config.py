"""The training configuration: :class:`TrainConfig`, composed of five small sub-configs.

:class:`TrainConfig` holds a :class:`TeacherConfig`, a :class:`DataConfig`, a :class:`ModelConfig`,
an :class:`OptimConfig` and a :class:`RunConfig`. Each sub-config checks its own fields; the
checks that tie two of them together (the teacher's alphabet and the training length, the exact
construction and the bond dimension) are :class:`TrainConfig`'s. The choices of a setting are
declared once, as the ``Literal`` type of its field (the CLI, the config files and the checks read
them from there).

A TrainConfig is seen *flat* everywhere outside Python: one command-line flag per sub-config field
(``tnattn train --help``, generated from each field's ``metadata["help"]``), and one key per field
in ``config.json``, ``--print-config`` and ``--config`` files, as before the sub-configs existed.
In Python, every sub-config field can also be read and set by its flat name
(``TrainConfig(D=8, lr=1e-3).lr`` is ``config.optim.lr``), so a run is still described in one line.

Presets (:data:`PRESETS`) are named sets of overrides on top of the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tnattn._fields import check_fields, flat_fields, flat_values
from tnattn.errors import ConfigError, RunDirectoryError
from tnattn.models.init import INITS
from tnattn.teachers import get_teacher, teacher_kind, teacher_shape
from tnattn.train.losses import LOSSES
from tnattn.train.penalties import SCHEDULES

__all__ = ["TrainConfig", "TeacherConfig", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "PRESETS",
           "preset", "LOSSES", "OPTIMIZERS", "L2_MODES", "SCHEDULES", "teacher_shape"]

# Most training strings ``train_size = 0`` may enumerate (as tnattn.data.all_sequences).
_MAX_ENUMERATED = 2**26

OPTIMIZERS = ("adam", "gd")
L2_MODES = ("coupled", "decoupled", "penalty")

# The choices of every multiple-choice setting, declared once (the tuples above and LOSSES,
# SCHEDULES and INITS come from the modules that implement them).
Boundary = Literal["open", "periodic"]
BoundaryVectors = Literal["e1", "eig", "random"]
Init = Literal[INITS]
Activation = Literal["sigmoid", "none"]
Backend = Literal["ops", "reference", "vectorized"]
Dtype = Literal["float32", "float64"]
Optimizer = Literal[OPTIMIZERS]
Loss = Literal[LOSSES]
L2Mode = Literal[L2_MODES]
Schedule = Literal[SCHEDULES]
GrokkingDefinition = Literal["first_zero", "stays_zero"]
Device = Literal["cpu", "cuda", "auto"]
Logger = Literal["none", "tensorboard", "wandb"]


def _f(default: Any, help: str):
    return field(default=default, metadata={"help": help})


def _need(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name} {msg}")


def _nonnegative(c, *names: str) -> None:
    for name in names:
        _need(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")


def _at_least_one(c, *names: str) -> None:
    for name in names:
        _need(getattr(c, name) >= 1, name, f"must be >= 1, got {getattr(c, name)}")


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher rule (its kind is chosen by :func:`tnattn.teachers.teacher_kind`)."""

    rule: int = _f(30, "Wolfram number (0-255) of the elementary cellular-automaton teacher")
    rule_steps: int = _f(1, "apply the teacher rule this many times (a K = steps local rule)")
    random_k: int = _f(0, "if > 0: use a random K-local rule with this radius instead of --rule")
    alphabet: int = _f(2, "alphabet size d of a random rule (--random-k) or a --rule-table")
    rule_seed: int = _f(0, "seed of the random rule's truth table")
    rule_table: tuple[int, ...] = _f(
        (), "custom truth table (d**(2K+1) outputs, window read leftmost-first); overrides --rule"
    )
    boundary: Boundary = _f("open", "teacher boundary condition")

    def __post_init__(self):
        # Tuples may arrive as lists (from JSON); store tuples so configs compare and hash.
        object.__setattr__(self, "rule_table", tuple(self.rule_table))
        check_fields(self)
        _need(0 <= self.rule <= 255, "rule", f"must be in [0, 255], got {self.rule}")
        _at_least_one(self, "rule_steps")
        _nonnegative(self, "random_k")
        _need(self.alphabet >= 2, "alphabet", f"must be >= 2, got {self.alphabet}")
        _nonnegative(self, "rule_seed")
        kind = get_teacher(teacher_kind(self))
        if kind.check is not None:
            kind.check(self)


@dataclass(frozen=True)
class DataConfig:
    """Training sequences, mini-batches and test sets."""

    train_length: int = _f(8, "length of the training sequences")
    train_size: int = _f(0, "number of random training sequences; 0 = all d**length sequences")
    crop_min: int = _f(3, "shortest random crop of each mini-batch (0 = no cropping)")
    crop_max: int = _f(8, "longest random crop of each mini-batch")
    batch_size: int = _f(64, "sequences per mini-batch; 0 = full batch")
    test_lengths: tuple[int, ...] = _f((1000, 100), "lengths of the random test sequences")
    test_size: int = _f(1000, "test sequences per length")
    test_seed: int = _f(12345, "seed of the test sets (fixed across runs of a study)")

    def __post_init__(self):
        object.__setattr__(self, "test_lengths", tuple(self.test_lengths))
        check_fields(self)
        _nonnegative(self, "test_seed")
        _at_least_one(self, "train_length")
        _nonnegative(self, "train_size", "crop_min")
        if self.crop_min > 0:
            _need(self.crop_min <= min(self.crop_max, self.train_length), "crop_min",
                  f"must be <= min(crop_max, train_length); got crop_min={self.crop_min}, "
                  f"crop_max={self.crop_max}, train_length={self.train_length}")
        _nonnegative(self, "batch_size")
        _need(len(self.test_lengths) >= 1, "test_lengths", "must name at least one length")
        _need(all(m >= 1 for m in self.test_lengths), "test_lengths", f"must be >= 1, got {self.test_lengths}")
        _need(len(set(self.test_lengths)) == len(self.test_lengths), "test_lengths", "must not repeat a length")
        _at_least_one(self, "test_size")


@dataclass(frozen=True)
class ModelConfig:
    """The TN-attention student."""

    D: int = _f(6, "bond dimension")
    shared: bool = _f(True, "one context tensor for both sides (the paper's model)")
    boundary_vectors: BoundaryVectors = _f(
        "e1", "boundary vectors u, v: e_1, top eigenvectors of symbol 0's matrix, or random"
    )
    train_boundary: bool = _f(False, "train the boundary vectors")
    init: Init = _f("normal", "initialisation scheme of the context tensors (C is always normal)")
    init_std: float = _f(1.0, "standard deviation of the initial tensor entries")
    normalize_map: bool = _f(True, "divide each local map by its norm, times a trainable scale")
    activation: Activation = _f("sigmoid", "output activation")
    train_contexts: bool = _f(True, "train the context tensors (--no-train-contexts = Scenario B)")
    train_classifier: bool = _f(True, "train the classification tensor C")
    exact: bool = _f(
        False,
        "start from hand-built exact neighbourhood contexts for the teacher's window (D >= 2 d^K shared); "
        "add --no-train-contexts to train only C",
    )
    backend: Backend = _f(
        "ops", "implementation: fused native ops, the plain-PyTorch reference loop, or its log-depth variant"
    )
    dtype: Dtype = _f("float32", "floating-point precision")

    def __post_init__(self):
        check_fields(self)
        _at_least_one(self, "D")
        _need(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        _need(self.train_contexts or self.train_classifier, "train_contexts",
              "and train_classifier are both off: nothing would train (turn one of them on)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, loss, penalties and their schedule."""

    optimizer: Optimizer = _f("adam", "Adam, or plain gradient descent (full batch with --batch-size 0)")
    lr: float = _f(0.005, "learning rate")
    loss: Loss = _f(
        "mse",
        "mse: squared error on the activation (targets {0,1} after a sigmoid, +-1 without); "
        "hinge and logistic: on the logits with targets +-1; ce: softmax cross-entropy (c > 1)",
    )
    l1: float = _f(1e-3, "L1 strength: adds l1 * sum|theta| over all trainable parameters")
    l2: float = _f(0.0, "L2 strength (meaning set by --l2-mode)")
    l2_mode: L2Mode = _f(
        "coupled",
        "coupled: l2*theta added to the gradient (Adam weight_decay, the author's code); "
        "decoupled: AdamW-style shrinkage; penalty: (l2/2)*sum theta^2 added to the loss",
    )
    penalty_schedule: Schedule = _f(
        "constant",
        "schedule of the L1/L2 strengths: constant; step (x factor after schedule-epochs); "
        "exp (decays to factor with time constant schedule-epochs)",
    )
    schedule_epochs: int = _f(100, "step epoch or exponential time constant of the penalty schedule")
    schedule_factor: float = _f(0.1, "late/early ratio of the penalty strengths")

    def __post_init__(self):
        check_fields(self)
        _need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _nonnegative(self, "l1", "l2")
        _at_least_one(self, "schedule_epochs")
        _nonnegative(self, "schedule_factor")


@dataclass(frozen=True)
class RunConfig:
    """Run control: stopping, evaluation, seed, device, run directory, output."""

    max_epochs: int = _f(2000, "maximum number of epochs")
    stop_after_grok: int = _f(0, "stop this many epochs after t_eps (zero test error); -1 = never")
    grokking_definition: GrokkingDefinition = _f(
        "first_zero", "t_train/t_eps: first epoch with zero error (the paper's) or first epoch from which it stays zero"
    )
    patience: int = _f(0, "stop when the loss has not improved for this many epochs; 0 = off")
    min_delta: float = _f(0.0, "improvement of the loss that resets the patience counter")
    eval_every: int = _f(10, "evaluate the test sets (and D_eff) every this many epochs")
    eval_when_fit: bool = _f(True, "also evaluate the test sets at every epoch with zero training error (exact t_eps)")
    eval_screen: int = _f(
        4, "every epoch, test this many sequences per length; all error-free -> evaluate the full test sets "
        "(t_eps exact to the epoch at a fraction of the cost); 0 = off",
    )  # fmt: skip
    deff_probe: int = _f(256, "test sequences whose middle-site left contexts give D_eff; 0 = off")
    seed: int = _f(0, "seed of the model initialisation, data order and crops")
    device: Device = _f("cpu", "device (auto = cuda if available)")
    threads: int = _f(0, "CPU threads for torch; 0 = torch's default")
    out: str = _f("", "run directory; empty = runs/<rule>-D<D>-seed<seed>-<time>")
    checkpoint_every: int = _f(50, "write a checkpoint every this many epochs (and always at exit)")
    resume: bool = _f(False, "continue the run in --out from its last checkpoint (an error if --out holds no run)")
    overwrite: bool = _f(False, "replace the run already in --out (its checkpoints, history and summary are deleted)")
    progress: bool = _f(True, "show a progress bar")
    plots: bool = _f(True, "write PNG plots into the run directory at the end")
    logger: Logger = _f(
        "none", "experiment logger writing into <run directory>/logs: tensorboard, or wandb (offline unless "
        "WANDB_MODE=online); see tnattn.loggers",
    )  # fmt: skip

    def __post_init__(self):
        check_fields(self)
        _nonnegative(self, "seed")
        _at_least_one(self, "max_epochs")
        _need(self.stop_after_grok >= -1, "stop_after_grok", f"must be >= -1, got {self.stop_after_grok}")
        _nonnegative(self, "patience", "min_delta")
        _at_least_one(self, "eval_every")
        _nonnegative(self, "eval_screen", "deff_probe", "threads")
        _at_least_one(self, "checkpoint_every")
        _need(not (self.resume and self.overwrite), "resume",
              "and overwrite contradict each other: resume continues the run in out, overwrite replaces it")


def _part(cls, group: str):
    """A TrainConfig field holding sub-config ``cls``, seen flat (its fields are the flags)."""
    return field(default_factory=cls, metadata={"flatten": True, "group": group})


_SECTIONS = {"teacher": TeacherConfig, "data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
             "run": RunConfig}


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Settings of one training run (teacher, data, model, optimiser, run control).

    The defaults train a TN-attention student (D = 6, Adam lr 0.005, MSE on a sigmoid, L1 1e-3)
    on one step of rule 30, from all 256 length-8 strings cropped to random lengths 3-8, and stop
    at the first epoch with zero test error on 1000 random sequences of lengths 1000 and 100. With
    L1 1e-3 every seed we tried (0-23) grokked, typically within 100-250 epochs (at most 868);
    without L1 one seed in twelve fitted the training set but never generalised to long sequences.
    See the field ``metadata["help"]`` strings (or ``tnattn train --help``) for each setting.

    Build it from sub-configs, from flat field names, or both (flat names override the sub-configs
    they belong to)::

        TrainConfig(D=8, lr=1e-3, seed=2)
        TrainConfig(model=ModelConfig(D=8), optim=OptimConfig(lr=1e-3), seed=2)

    Attributes
    ----------
    teacher : TeacherConfig
    data : DataConfig
    model : ModelConfig
    optim : OptimConfig
    run : RunConfig
        The sub-configs. Each of their fields is also an attribute of the TrainConfig under its own
        name (``config.lr`` is ``config.optim.lr``).

    Raises
    ------
    ConfigError
        A setting that cannot work, naming the field (flat name); every check runs when the
        config is built, so the CLI, presets, saved configs and experiments fail before any work.
    TypeError
        A keyword that is no field of any sub-config, or a sub-config of the wrong type.

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

    teacher: TeacherConfig = _part(TeacherConfig, "teacher")
    data: DataConfig = _part(DataConfig, "data")
    model: ModelConfig = _part(ModelConfig, "model")
    optim: OptimConfig = _part(OptimConfig, "optimisation")
    run: RunConfig = _part(RunConfig, "run control")

    def __init__(self, teacher: TeacherConfig | None = None, data: DataConfig | None = None,
                 model: ModelConfig | None = None, optim: OptimConfig | None = None, run: RunConfig | None = None,
                 **fields: Any):
        given = {"teacher": teacher, "data": data, "model": model, "optim": optim, "run": run}
        owner = _OWNER
        unknown = sorted(set(fields) - set(owner))
        if unknown:
            raise TypeError(f"TrainConfig got unknown field(s) {', '.join(unknown)}")
        changes: dict[str, dict[str, Any]] = {}
        for name, value in fields.items():
            changes.setdefault(owner[name], {})[name] = value
        for section, cls in _SECTIONS.items():
            part = given[section]
            if part is None:
                part = cls(**changes.get(section, {}))
            elif not isinstance(part, cls):
                raise TypeError(f"{section} must be a {cls.__name__}, got {type(part).__name__}")
            elif section in changes:
                part = dataclasses.replace(part, **changes[section])
            object.__setattr__(self, section, part)
        _validate(self)

    # Fields that only steer the run (not its trajectory): they may differ on --resume.
    RUN_CONTROL = ("max_epochs", "out", "checkpoint_every", "resume", "overwrite", "progress", "plots", "threads",
                   "logger")

    def check_resume(self, saved: dict) -> None:
        """Refuse to continue a run whose checkpoint holds config ``saved`` (a :meth:`to_dict`)
        with other trajectory settings than this config's.

        Only the run-control fields (:attr:`RUN_CONTROL`) may change on resume. A field added
        after the checkpoint was written is absent from ``saved`` and is accepted at its default
        (the fields added so far, ``grokking_definition`` and ``eval_screen``, change what is
        recorded, not the trajectory).

        Raises
        ------
        RunDirectoryError
            Naming every differing field with both values.
        """
        current = self.to_dict()
        saved = {**{k: v for k, v in TrainConfig().to_dict().items() if k not in saved}, **saved}
        differ = [k for k in current if k not in self.RUN_CONTROL and saved.get(k) != current[k]]
        if differ:
            raise RunDirectoryError(
                "cannot resume: the config differs from the checkpoint's in "
                + ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {current[k]!r})" for k in differ)
                + "; only run-control settings may change on resume ("
                + ", ".join(self.RUN_CONTROL) + ")"
            )

    def to_dict(self) -> dict:
        """Plain-JSON dict of the fields by flat name (tuples become lists): the shape of
        ``config.json``, ``--print-config`` and the checkpoint's config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in flat_values(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`. Sub-configs may also be given nested (``{"model": {"D": 8}}``).

        Raises
        ------
        ValueError
            Unknown keys (a :class:`~tnattn.errors.ConfigError` for bad values).
        """
        flat = {}
        for key, value in data.items():
            if key in _SECTIONS and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        unknown = sorted(set(flat) - set(_OWNER))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**flat)


# Flat field name -> the section that holds it; and one read-only attribute per flat name.
_OWNER = {name: flat.path[0] for name, flat in flat_fields(TrainConfig).items()}


def _flat_attribute(section: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, section), name),
                    doc=f"``{section}.{name}`` (read-only; use ``dataclasses.replace(config, {name}=...)``)")


for _name, _section in _OWNER.items():
    setattr(TrainConfig, _name, _flat_attribute(_section, _name))
del _name, _section


def _validate(c: TrainConfig) -> None:
    """The checks that tie sub-configs together (each sub-config checked its own fields)."""
    K, d = teacher_shape(c.teacher)
    if c.train_size == 0:
        _need(d**c.train_length <= _MAX_ENUMERATED, "train_length",
              f"{c.train_length} with train_size 0 (all strings) means {d}**{c.train_length} training strings, "
              f"more than {_MAX_ENUMERATED}; set train_size to draw random ones")
    if c.exact:
        need_D = 2 * d**K if c.shared else d**K
        _need(c.D >= need_D, "D",
              f"must be >= {need_D} for exact contexts of a K={K}, d={d} teacher "
              f"({'2 d^K shared' if c.shared else 'd^K separate'}), got {c.D}")


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
