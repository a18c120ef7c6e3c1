"""Train E independent students at once: :class:`EnsembleTrainer`.

Member ``e`` of an ensemble built from a :class:`~tnattn.train.TrainConfig` and seeds is the run
``tnattn.train.train(replace(config, seed=seeds[e], lr=lr[e], l1=l1[e], l2=l2[e]))``
(:meth:`EnsembleTrainer.member_config`): the same initial model (built by
:func:`tnattn.train.build_model` from the member's model seed), the same batches (drawn from the
member's data generator in the same order, :mod:`tnattn.ensemble.data`), the same loss
(:func:`tnattn.train.compute_loss`, vectorised over members with ``torch.vmap``), the same penalties
and penalty schedule, the same optimiser (:mod:`tnattn.ensemble.optim`, Adam per member), the same
measurements and the same stopping rules. Trajectories agree with the single-model runs up to
floating-point rounding (sums over a batch of members can round differently from sums over one).

What differs from the single-model trainer
------------------------------------------
* Callbacks are not supported (the built-in ``stop_after_grok`` and ``patience`` rules are, per
  member).
* A member whose parameters become non-finite stops with ``stop_reason = "diverged"`` (its
  single-model run would raise :class:`~tnattn.models.NonFiniteParameterError`); the others go on.
* A dead member (its D_eff probe contexts all exactly zero on a test epoch, or an exactly zero
  gradient on every batch of an epoch with a non-zero loss) stops with ``stop_reason = "dead"`` and
  a :class:`~tnattn.errors.DeadModelWarning`, as its single-model run would; the others go on.
* ``spike`` is computed when the run ends, from each member's loss curve
  (:func:`tnattn.metrics.detect_loss_spikes` is causal, so the onsets equal the online ones).
* ``wall_time`` is one value per epoch for the whole ensemble.

Cost: members train together, one kernel call per group of members whose crops have the same length
(at most ``crop_max - crop_min + 1`` calls per step), made by the step strategy chosen once for the
run (:attr:`EnsembleTrainer.step`: fused, head or autograd, :mod:`tnattn.ensemble.steps`); errors
are counted by evaluators chosen once too (:attr:`EnsembleTrainer.evaluator`,
:attr:`EnsembleTrainer.train_evaluator`: fused count, chunked or all-strings trie,
:mod:`tnattn.ensemble.evaluators`). Finished members leave the working set at the end of the epoch
in which they stop (their parameters and optimiser state are written back), so they stop costing
compute. ``shared_data=True`` makes every member see the same batches (one group per step,
the inputs shared in the kernel): faster, but then members are not independent runs.

Run directory (optional): ``checkpoint.pt`` (atomic, ``weights_only``), ``summary.json`` and
``histories.npz`` (every column as an (E, T) array). ``config.resume`` continues from the
checkpoint (two generations with SHA-256 checksums, :mod:`tnattn.train.checkpoint`); members
stopped by ``max_epochs`` resume when ``max_epochs`` grew, and a ``max_epochs`` below the epochs
already trained is refused. The run directory is locked while :meth:`EnsembleTrainer.fit` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from tnattn.data import all_sequences, make_test_sets, random_sequences
from tnattn.ensemble.data import EnsembleBatches
from tnattn.ensemble.history import EnsembleHistory
from tnattn.ensemble.model import EnsembleTNAttention, StackedParams
from tnattn.ensemble.ops import contexts_ensemble, kernel_threads
from tnattn.ensemble.optim import add_scaled_rows, make_optimizer
from tnattn.ensemble.evaluators import choose_evaluator, choose_train_evaluator
from tnattn.ensemble.steps import choose_step
from tnattn.io import atomic_write, result_envelope, write_json
from tnattn.train.build import build_model, build_teacher, output_size, split_seed
from tnattn.errors import DeadModelWarning, RunDirectoryError
from tnattn.locks import lock_directory
from tnattn.train.checkpoint import (
    FORMAT_VERSION,
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from tnattn.train.config import TrainConfig
from tnattn.train.losses import compute_loss
from tnattn.train.penalties import PenaltySchedule

__all__ = ["EnsembleTrainer", "EnsembleResult", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "ensemble_checkpoint.pt"
ENSEMBLE_FORMAT = 1
_SPIKE_WINDOW = 20  # as the single-model trainer
# Stop reasons after which a member never trains again.
_FINAL = ("grokked", "patience", "diverged", "dead")
_PARAM_ORDER = ("A_left", "A_right", "C", "u", "v", "scale")


class MemberTimes:
    """Per-member grokking times read from ``self.members`` (a list of per-member summary dicts).

    Shared by :class:`EnsembleResult` and the merged result of sharded runs.
    """

    members: list

    def _col(self, key: str) -> np.ndarray:
        return np.array([np.nan if m[key] is None else m[key] for m in self.members], dtype=float)

    @property
    def t_train(self) -> np.ndarray:
        """(E,) first epoch with zero training error (nan if never)."""
        return self._col("t_train")

    @property
    def t_eps(self) -> np.ndarray:
        """(E,) first test epoch with zero test error (nan if never)."""
        return self._col("t_eps")

    @property
    def t_G(self) -> np.ndarray:
        """(E,) grokking time t_eps - t_train (nan if either is missing)."""
        return self._col("t_G")


@dataclass
class EnsembleResult(MemberTimes):
    """What an ensemble run returns.

    Attributes
    ----------
    history : EnsembleHistory
        Per-member columns (E, T).
    summary : dict
        Aggregate numbers (epochs, wall and train time, member-token-steps per second, counts).
    members : list of dict
        Per member: seed, lr, l1, l2, t_train, t_eps, t_G, stop_reason, epochs, final errors, spikes.
    model : EnsembleTNAttention
        Final parameters of every member.
    run_dir : Path or None
    """

    history: EnsembleHistory
    summary: dict
    members: list
    model: EnsembleTNAttention
    run_dir: Optional[Path] = None



def _per_member(name: str, values, E: int, default: float, *, positive: bool) -> Tensor:
    if values is None:
        out = [float(default)] * E
    else:
        out = [float(v) for v in values]
        if len(out) != E:
            raise ValueError(f"{name} must hold one value per member ({E}), got {len(out)}")
    for v in out:
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ValueError(f"{name} values must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")
    return torch.tensor(out, dtype=torch.float64)


class EnsembleTrainer:
    """E members with independent seeds, trained together.

    Parameters
    ----------
    config : TrainConfig
        Everything shared by the members (teacher, data, model, optimiser, run control). ``seed``
        is ignored (``seeds`` replaces it); ``out`` is ignored (``run_dir`` replaces it).
    seeds : sequence of int
        One run seed per member (split into model and data seeds by :func:`tnattn.train.split_seed`
        as in a single-model run). A seed may repeat with different hyperparameters (the same
        initial model and batches under, say, another regulariser).
    lr, l1, l2 : sequence of float, optional
        Per-member learning rate and L1/L2 strengths (default: the config's value for everyone).
    shared_data : bool
        All members see one stream of batches (from ``data_seed``); see the module docstring.
    data_seed : int, optional
        Run seed whose data seed drives the shared stream (default ``seeds[0]``).
    run_dir : path, optional
        Where checkpoints and results go (None writes nothing).
    device : torch.device or str, optional
        Default: ``config.device`` resolved as in :func:`tnattn.train.train`.
    on_epoch : callable, optional
        ``on_epoch(trainer, epoch)`` after every epoch (after any checkpoint of that epoch).
    callbacks : sequence, optional
        Objects with an ``on_ensemble_epoch(trainer, epoch)`` method, called after every epoch
        (after ``on_epoch``), and optionally ``on_ensemble_end(trainer)``, called when :meth:`fit`
        ends, also after an interruption; e.g. the loggers of :mod:`tnattn.loggers`. The epoch's
        values are in ``trainer.history`` by then. ``config.logger`` adds one such logger writing
        into ``run_dir/logs`` (with a ``run_dir`` only).
    kernel_threads : int, optional
        Threads of the fused kernels during :meth:`fit` (default ``config.threads``, or torch's
        thread count when that is 0).
    elementwise_threads : int, optional
        torch's intra-op threads during :meth:`fit` for everything else (losses, optimiser,
        indexing: many small operations). Default 1: on a busy machine each OpenMP region waits
        for its slowest, possibly descheduled, thread, which we measured to slow whole epochs
        down many times over, while the kernel calls hold most of the work. None keeps torch's
        setting.
    """

    def __init__(
        self,
        config: TrainConfig,
        seeds: Sequence[int],
        *,
        lr: Optional[Sequence[float]] = None,
        l1: Optional[Sequence[float]] = None,
        l2: Optional[Sequence[float]] = None,
        shared_data: bool = False,
        data_seed: Optional[int] = None,
        run_dir: str | os.PathLike | None = None,
        device=None,
        on_epoch: Optional[Callable] = None,
        callbacks: Sequence = (),
        kernel_threads: Optional[int] = None,
        elementwise_threads: Optional[int] = 1,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one member")
        for s in seeds:
            if s < 0:
                raise ValueError(f"seeds must be >= 0, got {s}")
        self.config = config
        self.seeds = seeds
        E = self.E = len(seeds)
        self.lr = _per_member("lr", lr, E, config.lr, positive=True)
        self.l1 = _per_member("l1", l1, E, config.l1, positive=False)
        self.l2 = _per_member("l2", l2, E, config.l2, positive=False)
        runs = list(zip(seeds, self.lr.tolist(), self.l1.tolist(), self.l2.tolist()))
        if len(set(runs)) != E:
            raise ValueError("members must differ in seed or hyperparameters (identical members are the same run)")
        self.shared_data = bool(shared_data)
        self.data_seed = seeds[0] if data_seed is None else int(data_seed)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_epoch = on_epoch
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not callable(getattr(cb, "on_ensemble_epoch", None)):
                raise TypeError(f"callbacks must have an on_ensemble_epoch(trainer, epoch) method, got {type(cb).__name__}")
        if kernel_threads is None:
            kernel_threads = config.threads if config.threads > 0 else torch.get_num_threads()
        for name, n in (("kernel_threads", kernel_threads), ("elementwise_threads", elementwise_threads)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ValueError(f"{name} must be an int >= 1, got {n!r}")
        self.kernel_threads, self.elementwise_threads = kernel_threads, elementwise_threads
        if device is None:
            from tnattn.train.build import resolve_device

            device = resolve_device(config.device)
        self.device = torch.device(device)

        teacher = self.teacher = build_teacher(config)
        self.c = output_size(teacher)
        members = []
        for e in range(E):
            model_seed, _ = split_seed(seeds[e])
            members.append(
                build_model(self.member_config(e), teacher, generator=torch.Generator().manual_seed(model_seed), device=self.device)
            )
        self.model = EnsembleTNAttention.from_members(members)
        del members

        # Data: member e's data generator draws its random training set (if any), then its batches.
        gens = []
        for e in range(E) if not self.shared_data else [0]:
            run_seed = seeds[e] if not self.shared_data else self.data_seed
            gens.append(torch.Generator().manual_seed(split_seed(run_seed)[1]))
        d = teacher.d
        if config.train_size > 0:
            xs = [random_sequences(config.train_size, config.train_length, d, generator=g) for g in gens]
            x = xs[0] if self.shared_data else torch.stack(xs)
        else:
            x = all_sequences(config.train_length, d)
        crop = (config.crop_min, config.crop_max) if config.crop_min > 0 else None
        # binary targets as one-byte booleans (cheap to compare and to cast to the loss's dtype)
        self.batches = EnsembleBatches(
            x, teacher, config.batch_size or None, crop, gens, shared=self.shared_data,
            label_dtype=torch.bool if self.c == 1 else None,
        )  # fmt: skip
        y = teacher(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        self.train_x, self.train_y = x.to(self.device), y.to(self.device)
        #: How wrong-site fractions are counted (tnattn.ensemble.evaluators), chosen once: on the
        #: test sets, and on the training set (the all-strings trie for the paper's training set).
        self.evaluator = choose_evaluator(self.train_x, c=self.c, d=d, normalize_map=self.model.normalize_map)
        self.train_evaluator = choose_train_evaluator(self.train_x, c=self.c, d=d,
                                                      normalize_map=self.model.normalize_map)  # fmt: skip
        tests = make_test_sets(teacher, config.test_lengths, n=config.test_size, d=d, seed=config.test_seed)
        self.test_sets = {int(m): s.to(self.device) for m, s in tests.items()}
        self.probe = self.test_sets[min(self.test_sets)].x[: config.deff_probe] if config.deff_probe > 0 else None

        self.schedule = PenaltySchedule(config.penalty_schedule, config.schedule_epochs, config.schedule_factor)
        self._loss = torch.vmap(lambda z, t: compute_loss(z, t, config.loss, config.activation))
        self.param_names = [n for n in _PARAM_ORDER if getattr(self.model, n) is not None and not (n == "A_right" and self.model.shared)]
        self.trainable = [n for n in self.param_names if getattr(self.model, n).requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")
        full = [getattr(self.model, n).detach() for n in self.trainable]
        self.optimizer = make_optimizer(config.optimizer, full, self.lr)
        #: How each group's losses and gradients are computed (tnattn.ensemble.steps), chosen once.
        self.step = choose_step(self.train_x, self.model.stacked(), trainable=self.trainable, loss=config.loss,
                                activation=config.activation, normalize_map=self.model.normalize_map,
                                member_loss=self._loss)  # fmt: skip

        self.columns = (
            ["loss", "penalty", "batch_error", "train_error"]
            + [f"test_error_{m}" for m in self.test_sets]
            + ["deff", "spike", "lambda1", "lambda2", "grad_norm"]
            + [f"norm_{n}" for n in self.param_names]
        )
        self.history = EnsembleHistory(self.columns, E)
        self.epoch = 0
        self.t_train = np.full(E, -1, dtype=np.int64)
        self.t_eps = np.full(E, -1, dtype=np.int64)
        self.stop_reason: list[Optional[str]] = [None] * E
        self.stop_epoch = np.zeros(E, dtype=np.int64)
        self.best_loss = np.full(E, np.inf)
        self.best_epoch = np.zeros(E, dtype=np.int64)
        self.member_tokens = 0
        self.train_seconds = 0.0
        self.wall_before = 0.0
        self._t0: Optional[float] = None
        self._signal: Optional[int] = None
        self._work = None  # (active ids, working params, optimiser rows), see _gather

    # ------------------------------------------------------------------------------------------
    def member_config(self, e: int) -> TrainConfig:
        """The single-model config whose :func:`tnattn.train.train` run member ``e`` reproduces."""
        return dataclasses.replace(
            self.config, seed=self.seeds[e], lr=float(self.lr[e]), l1=float(self.l1[e]), l2=float(self.l2[e])
        )

    @property
    def active(self) -> np.ndarray:
        """Members still training (not stopped), in increasing order."""
        return np.array([e for e in range(self.E) if self.stop_reason[e] is None], dtype=np.int64)

    # ------------------------------------------------------------------------------------------
    # working set: the active members' parameters and optimiser state, compacted
    # ------------------------------------------------------------------------------------------
    def _gather(self) -> None:
        ids = self.active
        idx = torch.as_tensor(ids, dtype=torch.long)
        dev_idx = idx.to(self.device)
        tensors = {}
        for n in self.param_names:
            t = getattr(self.model, n).detach()[dev_idx].clone()
            tensors[n] = t.requires_grad_(n in self.trainable)
        tensors["A_right"] = tensors["A_left"] if self.model.shared else tensors["A_right"]
        P = StackedParams(tensors["A_left"], tensors["A_right"], tensors["C"], tensors["u"], tensors["v"], tensors.get("scale"))
        self._work = (ids, idx, P, self.optimizer.rows(idx))

    @torch.no_grad()
    def _scatter(self) -> None:
        """Write the working set back into the model and the full optimiser state."""
        if self._work is None:
            return
        ids, idx, P, opt = self._work
        dev_idx = idx.to(self.device)
        for n in self.param_names:
            getattr(self.model, n).data[dev_idx] = getattr(P, n).detach()
        self.optimizer.load_rows(idx, opt)

    def _leaves(self, P: StackedParams) -> list[Tensor]:
        return [getattr(P, n) for n in self.trainable]

    # ------------------------------------------------------------------------------------------
    # one epoch
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _penalties(self, leaves: list[Tensor], grads: list[Tensor], lam1: Tensor, lam2: Tensor) -> Optional[Tensor]:
        """Add the penalties' gradients to ``grads`` (in place); return the (E_a,) penalty values
        (None when no member has one).

        ``lambda1 * sum |p|`` has gradient ``lambda1 * sgn(p)`` (torch.abs's, 0 at 0) and
        ``lambda2 / 2 * sum p^2`` has ``lambda2 * p``: the terms autograd would add, without a graph.
        """
        pen = None
        if bool((lam1 > 0).any()):
            l1 = torch.stack([p.abs().reshape(p.shape[0], -1).sum(1) for p in leaves]).sum(0)
            pen = _rowwise(lam1, l1) * l1
            for p, g in zip(leaves, grads):
                g.addcmul_(torch.sgn(p), _rowwise(lam1, p))
        if self.config.l2_mode == "penalty" and bool((lam2 > 0).any()):
            l2 = torch.stack([0.5 * (p * p).reshape(p.shape[0], -1).sum(1) for p in leaves]).sum(0)
            pen2 = _rowwise(lam2, l2) * l2
            pen = pen2 if pen is None else pen + pen2
            for p, g in zip(leaves, grads):
                g.addcmul_(p, _rowwise(lam2, p))
        return pen

    def _group_step(self, P: StackedParams, grp, Ea: int, grads: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Loss and gradient of one group of members; gradients go into their rows of ``grads``.

        The group's parameters are fresh leaves (copies of its rows), so that autograd never
        scatters a group's gradient into full-size zero tensors (index_select's backward) and
        sums those over the groups. The step strategy chosen for the run (:attr:`step`: fused,
        head or autograd, see :mod:`tnattn.ensemble.steps`) computes the losses and gradients.

        Returns
        -------
        rows : Tensor, shape (G,), on the device
        losses : Tensor, shape (G,)
        wrong : Tensor, shape (G,)
            Wrongly predicted sites per member, before the update.
        y : Tensor, shape (G, B, L) or (B, L) shared
        """
        cfg = self.config
        rows = grp.rows.to(self.device)
        whole = len(grp.rows) == Ea
        sub = {}
        for n in self.param_names:
            t = getattr(P, n).detach()
            sub[n] = (t if whole else t.index_select(0, rows)).requires_grad_(n in self.trainable)
        sub["A_right"] = sub["A_left"] if self.model.shared else sub["A_right"]
        Pg = StackedParams(sub["A_left"], sub["A_right"], sub["C"], sub["u"], sub["v"], sub.get("scale"))
        xg, yg = grp.x.to(self.device), grp.y.to(self.device)
        res = self.step(Pg, xg, yg)
        wrong = res.wrong if res.wrong is not None else _wrong_sites(res.logits, yg)
        for n, g in res.grads.items():
            if whole:
                grads[n] = g
            else:
                grads[n].index_copy_(0, rows, g)
        return rows, res.losses, wrong, yg

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of every active member; returns per-member measurements (arrays over the
        active members)."""
        ids, idx, P, opt = self._work
        Ea = len(ids)
        mult = self.schedule(epoch)
        lam1 = self.l1[idx] * mult
        lam2 = self.l2[idx] * mult
        leaves = self._leaves(P)
        # per-member sums, kept on the device and read once at the end of the epoch
        f64 = {"dtype": torch.float64, "device": self.device}
        loss_sum, pen_sum, grad_sum = torch.zeros(Ea, **f64), torch.zeros(Ea, **f64), torch.zeros(Ea, **f64)
        wrong, sites = torch.zeros(Ea, **f64), torch.zeros(Ea, **f64)
        n_batches = 0
        t0 = time.perf_counter()
        for groups in self.batches.epoch(ids.tolist()):
            # every member is in exactly one group per step, so every row of every gradient is written
            grads = {n: torch.empty_like(getattr(P, n)) for n in self.trainable}
            records = [self._group_step(P, grp, Ea, grads) for grp in groups]
            grads = [grads[n] for n in self.trainable]
            pen = self._penalties(leaves, grads, lam1, lam2)
            with torch.no_grad():  # |grad| per member as the single-model trainer (norm of the norms), in float64
                norms = [torch.linalg.vector_norm(g.reshape(Ea, -1), dim=1, dtype=torch.float64) for g in grads]
                gnorm = torch.linalg.vector_norm(torch.stack(norms), dim=0)
            grads = self._apply_l2(leaves, grads, lam2)
            opt.step(leaves, grads)
            with torch.no_grad():
                for rows, losses, wrong_sites, y in records:
                    n = y.shape[-1] * y.shape[-2]
                    loss_sum.index_add_(0, rows, losses.double(), alpha=n)
                    wrong.index_add_(0, rows, wrong_sites.double())
                    sites.index_add_(0, rows, torch.full((len(rows),), float(n), **f64))
                if pen is not None:
                    pen_sum += pen.double()
                grad_sum += gnorm
            n_batches += 1
        self.train_seconds += time.perf_counter() - t0
        sites = sites.cpu()
        self.member_tokens += int(sites.sum())
        return {
            "loss": (loss_sum.cpu() / sites).numpy(),
            "penalty": (pen_sum.cpu() / n_batches).numpy(),
            "batch_error": (wrong.cpu() / sites).numpy(),
            "grad_norm": (grad_sum.cpu() / n_batches).numpy(),
            "lambda1": lam1.numpy(),
            "lambda2": lam2.numpy(),
        }

    @torch.no_grad()
    def _apply_l2(self, leaves: list[Tensor], grads: list[Tensor], lam2: Tensor) -> list[Tensor]:
        mode = self.config.l2_mode
        if mode == "penalty" or not bool((lam2 > 0).any()):
            return grads
        if mode == "coupled":  # grad += lambda2 * p (Adam's weight_decay)
            return [add_scaled_rows(g, p, lam2) for p, g in zip(leaves, grads)]
        ids, idx, P, opt = self._work
        for p in leaves:  # decoupled: p *= 1 - lr * lambda2
            p.mul_(_rowwise(1.0 - self.lr[idx] * lam2, p))
        return grads

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        """Training error every epoch; test errors and D_eff on each member's test epochs."""
        from tnattn.metrics import effective_dimension

        cfg = self.config
        ids, idx, P, _ = self._work
        Ea = len(ids)
        out: dict[str, np.ndarray] = {}
        x, y = self.train_x, self.train_y
        out["train_error"] = self.train_evaluator(P, x if x.dim() == 2 else x[idx], y if y.dim() == 2 else y[idx])
        test_now = np.full(Ea, epoch % cfg.eval_every == 0)
        if cfg.eval_when_fit:
            test_now |= out["train_error"] == 0.0
        k = cfg.eval_screen
        if k > 0 and not test_now.all():
            # Exact screen for t_eps (as in tnattn.train.Trainer): members error-free on the first
            # k sequences of every test length get the full evaluation this epoch.
            cand = np.nonzero(~test_now)[0]
            Pc = P if cand.size == Ea else P.select(torch.as_tensor(cand, dtype=torch.long, device=self.device))
            clean = np.ones(cand.size, dtype=bool)
            for s in self.test_sets.values():
                clean &= self.evaluator(Pc, s.x[:k], s.y[:k]) == 0.0
            test_now[cand[clean]] = True
        sel = np.nonzero(test_now)[0]
        for m in self.test_sets:
            out[f"test_error_{m}"] = np.full(Ea, np.nan)
        out["deff"] = np.full(Ea, np.nan)
        out["contexts_zero"] = np.zeros(Ea, dtype=bool)
        if sel.size:
            rows = torch.as_tensor(sel, dtype=torch.long, device=self.device)
            Ps = P if sel.size == Ea else P.select(rows)
            for m, s in self.test_sets.items():
                out[f"test_error_{m}"][sel] = self.evaluator(Ps, s.x, s.y)
            if self.probe is not None:
                # D_eff uses the left context of the middle site only, which depends on the symbols
                # before it: scanning that prefix gives the same values for a quarter of the work
                # of both full scans.
                mid = self.probe.shape[-1] // 2
                L = contexts_ensemble(Ps.A_left, self.probe[..., : mid + 1], Ps.u)
                pts = L[:, :, mid].double().cpu()
                out["deff"][sel] = effective_dimension(pts.numpy()) if pts.shape[1] >= 2 else np.nan
                out["contexts_zero"][sel] = ~pts.reshape(pts.shape[0], -1).ne(0).any(1).numpy()
        for n in self.param_names:
            t = getattr(P, n).detach()
            out[f"norm_{n}"] = torch.linalg.vector_norm(t.reshape(Ea, -1).double(), dim=1).cpu().numpy()
        return out

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------
    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _update_members(self, epoch: int, ids: np.ndarray, row: dict) -> None:
        cfg = self.config
        tests = np.stack([row[f"test_error_{m}"] for m in self.test_sets])  # (n_lengths, Ea)
        for k, e in enumerate(ids):
            if self.t_train[e] < 0 and row["train_error"][k] == 0.0:
                self.t_train[e] = epoch
            if self.t_eps[e] < 0 and not np.isnan(tests[:, k]).any() and (tests[:, k] == 0.0).all():
                self.t_eps[e] = epoch
            if cfg.grokking_definition == "stays_zero":
                # a measured nonzero error clears the time: the zero did not stay
                if row["train_error"][k] > 0.0:
                    self.t_train[e] = -1
                if (np.nan_to_num(tests[:, k]) > 0.0).any():
                    self.t_eps[e] = -1
            reason = None
            if not row["finite"][k]:
                reason = "diverged"
            elif _dead(row, k):
                reason = "dead"
            elif cfg.stop_after_grok >= 0 and self.t_eps[e] >= 0 and epoch >= self.t_eps[e] + cfg.stop_after_grok:
                reason = "grokked"
            elif cfg.patience > 0:
                loss = row["loss"][k]
                if loss < self.best_loss[e] - cfg.min_delta:
                    self.best_loss[e], self.best_epoch[e] = float(loss), epoch
                elif epoch - self.best_epoch[e] >= cfg.patience:
                    reason = "patience"
            if reason is None and epoch >= cfg.max_epochs:
                reason = "max_epochs"
            if reason is not None:
                self.stop_reason[e] = reason
                self.stop_epoch[e] = epoch

    def _on_signal(self, signum, frame):
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._signal = signum

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def fit(self) -> EnsembleResult:
        """Train until every member has stopped or ``max_epochs`` is reached (or a signal arrives).

        With ``config.resume`` and a checkpoint in the run directory, the run continues from it.
        """
        old_threads = torch.get_num_threads()
        if self.elementwise_threads is not None:
            torch.set_num_threads(self.elementwise_threads)
        # config.logger: a logger of tnattn.loggers in <run_dir>/logs for this fit.
        logger = None
        if self.config.logger != "none" and self.run_dir is not None:
            from tnattn.loggers import make_logger

            logger = make_logger(self.config.logger, self.run_dir / "logs", config=self.config.to_dict())
            self.callbacks.append(logger)
        try:
            with kernel_threads(self.kernel_threads), contextlib.ExitStack() as stack:
                if self.run_dir is not None:
                    stack.enter_context(lock_directory(self.run_dir, "ensemble run directory"))
                return self._fit()
        finally:
            torch.set_num_threads(old_threads)
            if logger is not None:
                self.callbacks.remove(logger)
                logger.close()

    def _fit(self) -> EnsembleResult:
        cfg = self.config
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.resume and checkpoint_exists(self.checkpoint_path):
                self.load_state_dict(load_checkpoint(self.checkpoint_path))
                if self.epoch > cfg.max_epochs:
                    raise RunDirectoryError(
                        f"cannot resume: {self.run_dir} already holds {self.epoch} epochs, more than "
                        f"max_epochs={cfg.max_epochs}; give max_epochs >= {self.epoch}"
                    )
            else:
                for name in ("summary.json", "histories.npz"):
                    (self.run_dir / name).unlink(missing_ok=True)
                remove_checkpoint(self.checkpoint_path)
        # Members stopped only by max_epochs continue when max_epochs grew (as a resumed single run).
        for e in range(self.E):
            if self.stop_reason[e] in ("max_epochs", "interrupted") and self.epoch < cfg.max_epochs:
                self.stop_reason[e] = None
            elif self.stop_reason[e] == "interrupted":
                self.stop_reason[e] = "max_epochs"
        self._t0 = time.perf_counter()
        self._gather()
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_epochs, initial=self.epoch, unit="epoch", dynamic_ncols=True, desc=f"ensemble E={self.E}")
        previous = self._install_signals()
        try:
            while self.epoch < cfg.max_epochs and len(self._work[0]):
                epoch = self.epoch + 1
                ids = self._work[0]
                row = self.train_epoch(epoch)
                row.update(self.evaluate(epoch))
                row["finite"] = self._finite()
                self.epoch = epoch
                self._update_members(epoch, ids, row)
                dead = [int(e) for e in ids if self.stop_reason[e] == "dead"]
                if dead:
                    warnings.warn(
                        f"ensemble epoch {epoch}: member(s) {dead} stopped dead (their probe contexts are all "
                        "exactly zero, or their gradient was exactly zero with a non-zero loss)",
                        DeadModelWarning, stacklevel=2,
                    )
                values = {c: row[c] for c in self.columns if c in row}
                self.history.record(epoch, ids, values, self._wall())
                stopped = [e for e in ids if self.stop_reason[e] is not None]
                if self._signal is not None:
                    for e in ids:
                        if self.stop_reason[e] is None:
                            self.stop_reason[e] = "interrupted"
                            self.stop_epoch[e] = epoch
                    break
                if stopped:
                    self._scatter()
                    self._gather()
                # Finished members are saved right away, so that a crash never loses them.
                if self.run_dir is not None and (stopped or epoch % cfg.checkpoint_every == 0) and len(self._work[0]):
                    self.save_checkpoint()
                if bar is not None:
                    bar.set_postfix(active=len(self._work[0]), grokked=int((self.t_eps >= 0).sum()), refresh=False)
                    bar.update(1)
                if self.on_epoch is not None:
                    self.on_epoch(self, epoch)
                for cb in self.callbacks:
                    cb.on_ensemble_epoch(self, epoch)
            self._scatter()
            for e in range(self.E):
                if self.stop_reason[e] is None:
                    self.stop_reason[e] = "max_epochs"
                    self.stop_epoch[e] = self.epoch
            self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for cb in self.callbacks:
                end = getattr(cb, "on_ensemble_end", None)
                if end is not None:
                    end(self)
        return self._finish()

    @torch.no_grad()
    def _finite(self) -> np.ndarray:
        _, _, P, _ = self._work
        ok = None
        for n in self.param_names:
            t = getattr(P, n)
            f = torch.isfinite(t.reshape(t.shape[0], -1)).all(1)
            ok = f if ok is None else ok & f
        return ok.cpu().numpy()

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def state_dict(self) -> dict:
        """Everything needed to continue the run (tensors and plain containers only)."""
        self._scatter()
        return {
            "format": FORMAT_VERSION,
            "ensemble_format": ENSEMBLE_FORMAT,
            "epoch": self.epoch,
            "seeds": list(self.seeds),
            "shared_data": self.shared_data,
            "data_seed": self.data_seed,
            "config": self.config.to_dict(),
            "model": {n: getattr(self.model, n).detach().clone() for n in self.param_names},
            "optimizer": self.optimizer.state_dict(),
            "generators": self.batches.state(),
            "history": self.history.state_dict(),
            "t_train": torch.from_numpy(self.t_train.copy()),
            "t_eps": torch.from_numpy(self.t_eps.copy()),
            "stop_reason": list(self.stop_reason),
            "stop_epoch": torch.from_numpy(self.stop_epoch.copy()),
            "best_loss": torch.from_numpy(self.best_loss.copy()),
            "best_epoch": torch.from_numpy(self.best_epoch.copy()),
            "member_tokens": self.member_tokens,
            "train_seconds": self.train_seconds,
            "wall_time": self._wall(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same config up to run-control fields, seeds and hyperparameters)."""
        if state.get("ensemble_format") != ENSEMBLE_FORMAT:
            from tnattn import __version__

            found = state.get("ensemble_format")
            raise ValueError(
                "not an ensemble checkpoint" if found is None else
                f"an ensemble checkpoint of format {found!r}; tnattn {__version__} reads format {ENSEMBLE_FORMAT} "
                "only: resume it with the tnattn version that wrote it, or start the run again"
            )
        self.config.check_resume(state["config"])
        if list(state["seeds"]) != self.seeds or bool(state["shared_data"]) != self.shared_data:
            raise ValueError("cannot resume: the checkpoint has different seeds or data mode")
        if not torch.equal(state["optimizer"]["lr"], self.lr):
            raise ValueError("cannot resume: the checkpoint has different per-member learning rates")
        with torch.no_grad():
            for n in self.param_names:
                getattr(self.model, n).copy_(state["model"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state(state["generators"])
        self.history = EnsembleHistory.from_state_dict(state["history"])
        self.epoch = int(state["epoch"])
        self.t_train = state["t_train"].numpy().copy()
        self.t_eps = state["t_eps"].numpy().copy()
        self.stop_reason = list(state["stop_reason"])
        self.stop_epoch = state["stop_epoch"].numpy().copy()
        self.best_loss = state["best_loss"].numpy().copy()
        self.best_epoch = state["best_epoch"].numpy().copy()
        self.member_tokens = int(state["member_tokens"])
        self.train_seconds = float(state["train_seconds"])
        self.wall_before = float(state["wall_time"])
        self._work = None

    def save_checkpoint(self) -> Optional[Path]:
        """Write the checkpoint atomically (no-op without a run directory)."""
        if self.checkpoint_path is None:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------------------------------
    # results
    # ------------------------------------------------------------------------------------------
    def _spikes(self) -> list[list[int]]:
        from tnattn.metrics import detect_loss_spikes

        loss = self.history.column("loss")
        spike = self.history.data["spike"]
        out = []
        for e in range(self.E):
            T = int(self.stop_epoch[e]) or self.history.T
            onsets = detect_loss_spikes(loss[e, :T].astype(np.float64), window=_SPIKE_WINDOW) if T > _SPIKE_WINDOW else []
            spike[e, :T] = 0.0
            for t in onsets:
                spike[e, int(t)] = 1.0
            out.append([int(t) + 1 for t in onsets])
        return out

    def member_summaries(self) -> list[dict]:
        spikes = self._spikes()
        out = []
        for e in range(self.E):
            T = int(self.stop_epoch[e])
            final = {}
            for m in self.test_sets:
                col = self.history.column(f"test_error_{m}")[e, :T]
                seen = col[~np.isnan(col)]
                final[str(m)] = float(seen[-1]) if seen.size else None
            tt = int(self.t_train[e]) if self.t_train[e] >= 0 else None
            te = int(self.t_eps[e]) if self.t_eps[e] >= 0 else None
            out.append({
                "member": e,
                "seed": self.seeds[e],
                "lr": float(self.lr[e]),
                "l1": float(self.l1[e]),
                "l2": float(self.l2[e]),
                "epochs": T,
                "stop_reason": self.stop_reason[e],
                "t_train": tt,
                "t_eps": te,
                "t_G": te - tt if te is not None and tt is not None else None,
                "grokked": te is not None,
                "final_loss": float(self.history.column("loss")[e, T - 1]) if T else None,
                "final_train_error": float(self.history.column("train_error")[e, T - 1]) if T else None,
                "last_test_errors": final,
                "loss_spikes": spikes[e],
            })  # fmt: skip
        return out

    def summary(self) -> dict:
        member_epochs = int(self.stop_epoch.sum())
        return {
            "E": self.E,
            "epochs": self.epoch,
            "member_epochs": member_epochs,
            "grokked": int((self.t_eps >= 0).sum()),
            "stop_reasons": {r: self.stop_reason.count(r) for r in sorted(set(map(str, self.stop_reason)))},
            "wall_time_s": self._wall(),
            "train_time_s": self.train_seconds,
            "member_token_steps": self.member_tokens,
            "member_token_steps_per_s": self.member_tokens / self.train_seconds if self.train_seconds > 0 else None,
            "shared_data": self.shared_data,
            "device": str(self.device),
            "kernel_threads": self.kernel_threads,
            "elementwise_threads": self.elementwise_threads,
        }

    def _finish(self) -> EnsembleResult:
        members = self.member_summaries()
        summary = self.summary()
        if self.run_dir is not None:
            write_json(self.run_dir / "summary.json", result_envelope("ensemble-train", self.config, {"summary": summary, "members": members}))
            arrays = self.history.arrays()
            atomic_write(self.run_dir / "histories.npz", lambda h: np.savez_compressed(h, **arrays), mode="wb")
        return EnsembleResult(self.history, summary, members, self.model, self.run_dir)


def _dead(row: dict, k: int) -> bool:
    """Whether active member ``k`` of an epoch's measurements is dead (as the single-model trainer,
    :mod:`tnattn.train.trainer`): its probe contexts are all exactly zero, or its gradient was
    exactly zero on every batch while its loss is not. Measurements absent from ``row`` count as
    alive."""
    if "contexts_zero" in row and row["contexts_zero"][k]:
        return True
    if "grad_norm" in row and "loss" in row:
        loss = row["loss"][k]
        return bool(row["grad_norm"][k] == 0.0 and np.isfinite(loss) and loss > 0.0)
    return False


def _rowwise(values: Tensor, like: Tensor) -> Tensor:
    return values.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def _wrong_sites(logits: Tensor, y: Tensor) -> Tensor:
    """(G,) number of sites whose prediction from ``logits`` (G, N, M, c) differs from ``y``
    ((G, N, M) or (N, M) shared)."""
    if logits.shape[-1] == 1:  # compare booleans: no int64 predictions
        bad = (logits[..., 0] > 0) != (y if y.dtype == torch.bool else y != 0)
    else:
        bad = logits.argmax(dim=-1) != y
    return bad.reshape(logits.shape[0], -1).sum(1)

