"""The members a :class:`~tnattn.train.Trainer` trains: how their steps and measurements are made.

The trainer owns the loop, the per-member bookkeeping (grokking times, stopping, divergence,
callbacks, history, checkpoints); a *member set* owns the parameters, the optimiser, the batches
and the arithmetic. There are two, chosen by how the trainer is built:

:class:`StackedMembers` (``Trainer(config, seeds)``)
    E members built from a :class:`~tnattn.train.TrainConfig`, one per seed, with stacked
    parameters (E, ...). Member ``e`` reproduces the single run of its seed: the same initial
    model (:func:`tnattn.train.build_model` from the member's model seed), the same batches (drawn
    from the member's data generator in the same order, :class:`tnattn.data.MemberBatches`), the same
    loss, penalties and optimiser (:mod:`tnattn.ensemble.optim`, Adam per member). Each step is
    made by the step strategy chosen once for the run (:mod:`tnattn.ensemble.steps`: fused, head
    or autograd) on every group of members whose crops have the same length; errors are counted
    by evaluators chosen once too (:mod:`tnattn.ensemble.evaluators`: fused count, chunked or
    all-strings trie). Members that stop leave the working set (their parameters and optimiser
    rows are written back), so they stop costing compute.
:class:`ModuleMember` (``Trainer.from_model(model, batches, config, ...)``)
    One given ``nn.Module`` (any model with ``logits`` and ``predict``), its own batches and a
    ``torch.optim`` optimiser, differentiated by autograd: a library user's own model or data, and
    the single run of :func:`tnattn.train.train`.

Both report the same per-member measurements (arrays over the members still training), so the
trainer's loop, stopping rules and files do not depend on which one runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from tnattn.data import LabelledSet, MemberBatches, MiniBatches, all_sequences, make_test_sets, random_sequences
from tnattn.train.config import TrainConfig
from tnattn.train.losses import compute_loss, make_loss
from tnattn.train.penalties import PenaltySchedule, apply_l2, l1_penalty, l2_penalty

__all__ = ["StackedMembers", "ModuleMember", "evaluate_error", "per_member"]

# Context entries (sites x D) per evaluation chunk of one module: bounds the memory on long test
# sets while keeping chunks large (each chunk costs a scan over the sequence length).
_EVAL_ELEMENTS = 1 << 23
_PARAM_ORDER = ("A_left", "A_right", "C", "u", "v", "scale")


def _predict_from_logits(logits: Tensor) -> Tensor:
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).long()
    return logits.argmax(dim=-1)


@torch.no_grad()
def evaluate_error(model: torch.nn.Module, data: LabelledSet, device=None) -> float:
    """Fraction of wrong output sites of ``model.predict`` on ``data``, evaluated in chunks.

    Parameters
    ----------
    model : nn.Module
        Has ``predict(x) -> (N, M)`` int64.
    data : LabelledSet
        Inputs (N, M) and targets (N, M).
    device : torch.device, optional
        Where to evaluate (default: where ``data`` lives).
    """
    N, M = data.x.shape
    D = int(getattr(model, "D", 32))
    chunk = max(1, _EVAL_ELEMENTS // (max(M, 1) * D))
    wrong = 0
    for start in range(0, N, chunk):
        x = data.x[start : start + chunk]
        y = data.y[start : start + chunk]
        if device is not None:
            x, y = x.to(device), y.to(device)
        wrong += int((model.predict(x) != y).sum())
    return wrong / (N * M)


def per_member(name: str, values, E: int, default: float, *, positive: bool) -> Tensor:
    """(E,) float64 hyperparameter values: ``values`` (one per member) or ``default`` for all.

    Raises
    ------
    ValueError
        Wrong count, or a value that is not finite and >= 0 (> 0 when ``positive``).
    """
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


def _clone(obj):
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------------------
# one given module
# ------------------------------------------------------------------------------------------------
class ModuleMember:
    """One ``nn.Module`` trained by autograd and a ``torch.optim`` optimiser (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Has ``logits(x) -> (N, M, c)`` and ``predict(x) -> (N, M)``; ``contexts(x) -> (L, R)`` is
        needed only for the D_eff column (nan otherwise).
    batches : iterable of LabelledSet
        Re-iterable: each iteration is one epoch. A :class:`~tnattn.data.MiniBatches`' generator
        is checkpointed as ``"data"``.
    config : TrainConfig
    train_set : LabelledSet, optional
        Uncropped training set (``train_error``); without it ``train_error`` is ``batch_error``.
    generators : dict[str, torch.Generator], optional
        Further generators to checkpoint.
    device : torch.device
    """

    E = 1
    shared_data = False

    def __init__(self, model, batches: Iterable[LabelledSet], config: TrainConfig, *, train_set=None,
                 generators: Optional[dict] = None, device=None):  # fmt: skip
        self.model, self.batches, self.config, self.train_set = model, batches, config, train_set
        self.generators = dict(generators or {})
        if isinstance(batches, MiniBatches) and "data" not in self.generators:
            self.generators["data"] = batches.generator
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        opt = torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD
        self.optimizer = opt(self.params, lr=config.lr)
        self.loss_fn = make_loss(config.loss, config.activation)
        self.param_names = [name for name, _ in model.named_parameters()]
        self.norm_columns = [f"norm_{n.replace('.', '_')}" for n in self.param_names]
        self.seeds = [config.seed]
        self.lr, self.l1, self.l2 = (torch.tensor([float(v)], dtype=torch.float64) for v in (config.lr, config.l1, config.l2))
        self.ids = np.zeros(1, dtype=np.int64)
        self.train_sites = 0
        self.train_seconds = 0.0

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    # -- working set (one member: nothing to compact) ------------------------------------------
    def gather(self, ids: np.ndarray) -> None:
        self.ids = ids

    def scatter(self) -> None:
        pass

    def member_model(self, e: int):
        return self.model

    def snapshot(self, e: int) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": _clone(self.optimizer.state_dict())}  # fmt: skip

    def restore(self, e: int, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(_clone(snapshot["optimizer"]))

    # -- one epoch -----------------------------------------------------------------------------
    def train_epoch(self, epoch: int, mult: float, on_batch: Optional[Callable[[int, list], None]] = None) -> dict:
        cfg = self.config
        lam1, lam2 = cfg.l1 * mult, cfg.l2 * mult
        self.model.train()
        loss_sum = pen_sum = grad_sum = 0.0
        wrong = sites = n_batches = 0
        t0 = time.perf_counter()
        for b, batch in enumerate(self.batches):
            x, y = batch.x.to(self.device), batch.y.to(self.device)
            logits = self.model.logits(x)
            data_loss = self.loss_fn(logits, y)
            total, penalty = data_loss, 0.0
            if lam1 > 0:
                pen = lam1 * l1_penalty(self.params)
                total, penalty = total + pen, penalty + float(pen.detach())
            if lam2 > 0 and cfg.l2_mode == "penalty":
                pen = lam2 * l2_penalty(self.params)
                total, penalty = total + pen, penalty + float(pen.detach())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in self.params if p.grad is not None]
            # in float64: float32 sums of squares overflow beyond ~1e19 and underflow below ~1e-19 (a
            # false zero here would stop a live run as dead)
            norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if grads else 0.0
            if lam2 > 0 and cfg.l2_mode != "penalty":
                apply_l2(self.params, lam2, cfg.l2_mode, lr=cfg.lr)
            self.optimizer.step()
            n = y.numel()
            loss_value = float(data_loss.detach())
            loss_sum += loss_value * n
            pen_sum += penalty
            grad_sum += grad_norm
            with torch.no_grad():
                wrong += int((_predict_from_logits(logits) != y).sum())
            sites += n
            n_batches += 1
            if on_batch is not None:
                on_batch(b, [loss_value])
        if n_batches == 0:
            raise ValueError("the batches iterable yielded no batch")
        self.train_seconds += time.perf_counter() - t0
        self.train_sites += sites
        one = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
        return {"loss": one(loss_sum / sites), "penalty": one(pen_sum / n_batches), "batch_error": one(wrong / sites),
                "grad_norm": one(grad_sum / n_batches), "lambda1": one(lam1), "lambda2": one(lam2)}  # fmt: skip

    # -- measurements --------------------------------------------------------------------------
    def train_error(self) -> Optional[np.ndarray]:
        self.model.eval()
        if self.train_set is None:
            return None
        return np.array([evaluate_error(self.model, self.train_set, self.device)])

    def test_error(self, sel: np.ndarray, data: LabelledSet) -> np.ndarray:
        self.model.eval()
        return np.array([evaluate_error(self.model, data, self.device)] if sel.size else [])

    def final_error(self, e: int, data: LabelledSet) -> float:
        """Error of the member's current parameters on ``data``."""
        self.model.eval()
        return evaluate_error(self.model, data, self.device)

    @torch.no_grad()
    def probe_points(self, sel: np.ndarray, probe: Tensor) -> Optional[np.ndarray]:
        """(len(sel), P, D) float64 left contexts at the middle site of the probe, or None."""
        if not hasattr(self.model, "contexts"):
            return None
        L, _ = self.model.contexts(probe.to(self.device))
        return L[:, L.shape[1] // 2].detach().double().cpu().numpy()[None]

    @torch.no_grad()
    def norms(self) -> dict:
        return {c: np.array([float(torch.linalg.vector_norm(p.detach(), dtype=torch.float64))])
                for c, (_, p) in zip(self.norm_columns, self.model.named_parameters())}  # fmt: skip

    def finite(self) -> np.ndarray:
        # A module whose parameters overflow raises NonFiniteParameterError in its next forward pass.
        return np.ones(1, dtype=bool)

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generators": {k: g.get_state() for k, g in self.generators.items()},
            },
        }

    def load_state_dict(self, state: dict) -> None:
        if "rng" not in state:
            raise ValueError("this checkpoint holds stacked members (written by Trainer(config, seeds) or tnattn.train.train); "
                             "resume it with the same kind of trainer")  # fmt: skip
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        saved = state["rng"]["generators"]
        if set(saved) != set(self.generators):
            raise ValueError(f"checkpoint has generators {sorted(saved)}, trainer has {sorted(self.generators)}")
        for k, g in self.generators.items():
            g.set_state(saved[k])


# ------------------------------------------------------------------------------------------------
# E members built from a config
# ------------------------------------------------------------------------------------------------
class StackedMembers:
    """E members from ``config`` and ``seeds``, stacked (see the module docstring).

    Parameters
    ----------
    config : TrainConfig
    seeds : list of int
    lr, l1, l2 : Tensor, shape (E,), float64
        Per-member hyperparameters.
    shared_data : bool
        One stream of batches (from ``data_seed``) for every member.
    data_seed : int
    device : torch.device
    """

    def __init__(self, config: TrainConfig, seeds: list, lr: Tensor, l1: Tensor, l2: Tensor, *,
                 shared_data: bool, data_seed: int, device):  # fmt: skip
        from tnattn.ensemble.evaluators import choose_evaluator, choose_train_evaluator
        from tnattn.ensemble.optim import make_optimizer
        from tnattn.ensemble.steps import choose_step
        from tnattn.models import TNAttention
        from tnattn.train.build import build_model, build_teacher, output_size, split_seed

        self.config, self.seeds, self.E = config, seeds, len(seeds)
        self.lr, self.l1, self.l2 = lr, l1, l2
        self.shared_data, self.device = shared_data, torch.device(device)
        teacher = self.teacher = build_teacher(config)
        self.c = output_size(teacher)
        members = []
        for e in range(self.E):
            model_seed, _ = split_seed(seeds[e])
            member_config = dataclasses.replace(config, seed=seeds[e], lr=float(lr[e]), l1=float(l1[e]), l2=float(l2[e]))
            members.append(build_model(member_config, teacher, generator=torch.Generator().manual_seed(model_seed),
                                       device=self.device))  # fmt: skip
        self.model = TNAttention.from_members(members)
        del members

        # Data: member e's data generator draws its random training set (if any), then its batches.
        gens = [torch.Generator().manual_seed(split_seed(s)[1]) for s in ([data_seed] if shared_data else seeds)]
        d = teacher.d
        if config.train_size > 0:
            xs = [random_sequences(config.train_size, config.train_length, d, generator=g) for g in gens]
            x = xs[0] if shared_data else torch.stack(xs)
        else:
            x = all_sequences(config.train_length, d)
        crop = (config.crop_min, config.crop_max) if config.crop_min > 0 else None
        # binary targets as one-byte booleans (cheap to compare and to cast to the loss's dtype)
        self.batches = MemberBatches(x, teacher, config.batch_size or None, crop, gens, shared=shared_data,
                                       label_dtype=torch.bool if self.c == 1 else None)  # fmt: skip
        y = teacher(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        self.train_x, self.train_y = x.to(self.device), y.to(self.device)
        #: How wrong-site fractions are counted (tnattn.ensemble.evaluators), chosen once: on the
        #: test sets, and on the training set (the all-strings trie for the paper's training set).
        self.evaluator = choose_evaluator(self.train_x, c=self.c, d=d, normalize_map=self.model.normalize_map)
        self.train_evaluator = choose_train_evaluator(self.train_x, c=self.c, d=d,
                                                      normalize_map=self.model.normalize_map)  # fmt: skip
        tests = make_test_sets(teacher, config.test_lengths, n=config.test_size, d=d, seed=config.test_seed)
        self.test_sets = {int(m): s.to(self.device) for m, s in tests.items()}

        self.param_names = [n for n in _PARAM_ORDER
                            if getattr(self.model, n) is not None and not (n == "A_right" and self.model.shared)]  # fmt: skip
        self.norm_columns = [f"norm_{n}" for n in self.param_names]
        self.trainable = [n for n in self.param_names if getattr(self.model, n).requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = make_optimizer(config.optimizer, [getattr(self.model, n).detach() for n in self.trainable], lr)
        member_loss = torch.vmap(lambda z, t: compute_loss(z, t, config.loss, config.activation))
        #: How each group's losses and gradients are computed (tnattn.ensemble.steps), chosen once.
        self.step = choose_step(self.train_x, self.model.stacked(), trainable=self.trainable, loss=config.loss,
                                activation=config.activation, normalize_map=self.model.normalize_map,
                                member_loss=member_loss)  # fmt: skip
        self.train_sites = 0
        self.train_seconds = 0.0
        self._work = None  # (active ids, index, working params, optimiser rows), see gather

    @property
    def n_parameters(self) -> int:
        return sum(getattr(self.model, n)[0].numel() for n in self.trainable)

    @property
    def ids(self) -> np.ndarray:
        return self._work[0]

    # -- working set: the active members' parameters and optimiser state, compacted -------------
    def _params(self, tensors: dict):
        from tnattn.models.functional import Params

        tensors["A_right"] = tensors["A_left"] if self.model.shared else tensors["A_right"]
        return Params(tensors["A_left"], tensors["A_right"], tensors["C"], tensors["u"], tensors["v"], tensors.get("scale"))

    def gather(self, ids: np.ndarray) -> None:
        """Make ``ids`` the working set (copies of their rows, fresh leaves)."""
        idx = torch.as_tensor(ids, dtype=torch.long)
        dev_idx = idx.to(self.device)
        P = self._params({n: getattr(self.model, n).detach()[dev_idx].clone().requires_grad_(n in self.trainable)
                          for n in self.param_names})  # fmt: skip
        self._work = (ids, idx, P, self.optimizer.rows(idx))

    @torch.no_grad()
    def scatter(self) -> None:
        """Write the working set back into the model and the full optimiser state."""
        if self._work is None:
            return
        ids, idx, P, opt = self._work
        dev_idx = idx.to(self.device)
        for n in self.param_names:
            getattr(self.model, n).data[dev_idx] = getattr(P, n).detach()
        self.optimizer.load_rows(idx, opt)

    def _row(self, e: int) -> int:
        where = np.nonzero(self._work[0] == e)[0]
        if not where.size:
            raise ValueError(f"member {e} is not training")
        return int(where[0])

    def member_model(self, e: int):
        """Member ``e``'s current parameters as a :class:`~tnattn.models.TNAttention` (a copy)."""
        self.scatter()
        return self.model.member(e)

    @torch.no_grad()
    def snapshot(self, e: int) -> dict:
        k = self._row(e)
        _, _, P, opt = self._work
        return {"params": {n: getattr(P, n)[k].clone() for n in self.param_names},
                "optimizer": _clone(opt.rows(torch.tensor([k])).__dict__)}  # fmt: skip

    @torch.no_grad()
    def restore(self, e: int, snapshot: dict) -> None:
        k = self._row(e)
        _, _, P, opt = self._work
        for n in self.param_names:
            getattr(P, n)[k] = snapshot["params"][n]
        part = opt.rows(torch.tensor([k]))
        part.__dict__.update(_clone(snapshot["optimizer"]))
        opt.load_rows(torch.tensor([k]), part)

    # -- one epoch -----------------------------------------------------------------------------
    @torch.no_grad()
    def _penalties(self, leaves: list, grads: list, lam1: Tensor, lam2: Tensor) -> Optional[Tensor]:
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

    @torch.no_grad()
    def _apply_l2(self, leaves: list, grads: list, lam2: Tensor, idx: Tensor) -> list:
        from tnattn.ensemble.optim import add_scaled_rows

        mode = self.config.l2_mode
        if mode == "penalty" or not bool((lam2 > 0).any()):
            return grads
        if mode == "coupled":  # grad += lambda2 * p (Adam's weight_decay)
            return [add_scaled_rows(g, p, lam2) for p, g in zip(leaves, grads)]
        for p in leaves:  # decoupled: p *= 1 - lr * lambda2
            p.mul_(_rowwise(1.0 - self.lr[idx] * lam2, p))
        return grads

    def _group_step(self, P, grp, Ea: int, grads: dict):
        """Loss and gradient of one group of members; gradients go into their rows of ``grads``.

        The group's parameters are fresh leaves (copies of its rows), so that autograd never
        scatters a group's gradient into full-size zero tensors (index_select's backward) and
        sums those over the groups.
        """
        rows = grp.rows.to(self.device)
        whole = len(grp.rows) == Ea
        sub = {}
        for n in self.param_names:
            t = getattr(P, n).detach()
            sub[n] = (t if whole else t.index_select(0, rows)).requires_grad_(n in self.trainable)
        xg, yg = grp.x.to(self.device), grp.y.to(self.device)
        res = self.step(self._params(sub), xg, yg)
        wrong = res.wrong if res.wrong is not None else _wrong_sites(res.logits, yg)
        for n, g in res.grads.items():
            if whole:
                grads[n] = g
            else:
                grads[n].index_copy_(0, rows, g)
        return rows, res.losses, wrong, yg

    def train_epoch(self, epoch: int, mult: float, on_batch=None) -> dict:
        ids, idx, P, opt = self._work
        Ea = len(ids)
        lam1, lam2 = self.l1[idx] * mult, self.l2[idx] * mult
        leaves = [getattr(P, n) for n in self.trainable]
        # per-member sums, kept on the device and read once at the end of the epoch
        f64 = {"dtype": torch.float64, "device": self.device}
        loss_sum, pen_sum, grad_sum = torch.zeros(Ea, **f64), torch.zeros(Ea, **f64), torch.zeros(Ea, **f64)
        wrong, sites = torch.zeros(Ea, **f64), torch.zeros(Ea, **f64)
        n_batches = 0
        t0 = time.perf_counter()
        for b, groups in enumerate(self.batches.epoch(ids.tolist())):
            # every member is in exactly one group per step, so every row of every gradient is written
            grads = {n: torch.empty_like(getattr(P, n)) for n in self.trainable}
            records = [self._group_step(P, grp, Ea, grads) for grp in groups]
            grads = [grads[n] for n in self.trainable]
            pen = self._penalties(leaves, grads, lam1, lam2)
            with torch.no_grad():  # |grad| per member as a single run (norm of the norms), in float64
                norms = [torch.linalg.vector_norm(g.reshape(Ea, -1), dim=1, dtype=torch.float64) for g in grads]
                gnorm = torch.linalg.vector_norm(torch.stack(norms), dim=0)
            grads = self._apply_l2(leaves, grads, lam2, idx)
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
            if on_batch is not None:  # per-batch hooks: each member's data loss of this step (a host sync)
                step_loss = torch.empty(Ea, dtype=torch.float64, device=self.device)
                for rows, losses, _, _ in records:
                    step_loss.index_copy_(0, rows, losses.double())
                on_batch(b, step_loss.tolist())
        self.train_seconds += time.perf_counter() - t0
        sites = sites.cpu()
        self.train_sites += int(sites.sum())
        return {
            "loss": (loss_sum.cpu() / sites).numpy(),
            "penalty": (pen_sum.cpu() / n_batches).numpy(),
            "batch_error": (wrong.cpu() / sites).numpy(),
            "grad_norm": (grad_sum.cpu() / n_batches).numpy(),
            "lambda1": lam1.numpy(),
            "lambda2": lam2.numpy(),
        }

    # -- measurements --------------------------------------------------------------------------
    def _select(self, sel: np.ndarray):
        ids, _, P, _ = self._work
        if sel.size == len(ids):
            return P
        return P.select(torch.as_tensor(sel, dtype=torch.long, device=self.device))

    @torch.no_grad()
    def train_error(self) -> np.ndarray:
        _, idx, P, _ = self._work
        x, y = self.train_x, self.train_y
        return self.train_evaluator(P, x if x.dim() == 2 else x[idx], y if y.dim() == 2 else y[idx])

    @torch.no_grad()
    def test_error(self, sel: np.ndarray, data: LabelledSet) -> np.ndarray:
        """Errors of the working-set rows ``sel`` on ``data``."""
        return self.evaluator(self._select(sel), data.x, data.y)

    @torch.no_grad()
    def final_error(self, e: int, data: LabelledSet) -> float:
        """Error of member ``e``'s current parameters on ``data`` (also after it left the working set)."""
        self.scatter()
        return float(self.evaluator(self.model.stacked([e]), data.x, data.y)[0])

    @torch.no_grad()
    def probe_points(self, sel: np.ndarray, probe: Tensor) -> np.ndarray:
        from tnattn.ops import contexts

        # D_eff uses the left context of the middle site only, which depends on the symbols before
        # it: scanning that prefix gives the same values for a quarter of the work of both scans.
        Ps = self._select(sel)
        mid = probe.shape[-1] // 2
        L = contexts(Ps.A_left, probe[..., : mid + 1], Ps.u)
        return L[:, :, mid].double().cpu().numpy()

    @torch.no_grad()
    def norms(self) -> dict:
        ids, _, P, _ = self._work
        return {c: torch.linalg.vector_norm(getattr(P, n).detach().reshape(len(ids), -1).double(), dim=1).cpu().numpy()
                for c, n in zip(self.norm_columns, self.param_names)}  # fmt: skip

    @torch.no_grad()
    def finite(self) -> np.ndarray:
        _, _, P, _ = self._work
        ok = None
        for n in self.param_names:
            t = getattr(P, n)
            f = torch.isfinite(t.reshape(t.shape[0], -1)).all(1)
            ok = f if ok is None else ok & f
        return ok.cpu().numpy()

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.scatter()
        return {
            "model": {n: getattr(self.model, n).detach().clone() for n in self.param_names},
            "optimizer": self.optimizer.state_dict(),
            "generators": self.batches.state(),
        }

    def _from_module_state(self, state: dict) -> dict:
        """A single run's checkpoint as tnattn <= 0.1 wrote it (a module's ``state_dict``, a
        ``torch.optim`` state, the data generator under ``rng``) in this class's layout: the same
        numbers with a member dimension of 1 (the stacked optimisers reproduce ``torch.optim``)."""
        if self.E != 1:
            raise ValueError(f"a single run's checkpoint resumes one member, not {self.E}")
        model = {n: state["model"][n].reshape(1, *state["model"][n].shape) for n in self.param_names}
        group = state["optimizer"]["param_groups"][0]
        lr = torch.tensor([float(group["lr"])], dtype=torch.float64)
        if self.config.optimizer == "adam":
            per = [state["optimizer"]["state"].get(i, {}) for i in group["params"]]
            if len(per) != len(self.trainable):
                raise ValueError(f"the checkpoint's optimiser holds {len(per)} parameters, the model trains {len(self.trainable)}")
            steps = float(per[0]["step"]) if per and "step" in per[0] else 0.0
            def moment(key: str) -> list:
                return [per[k][key].reshape(1, *per[k][key].shape) if key in per[k] else torch.zeros_like(model[n])
                        for k, n in enumerate(self.trainable)]  # fmt: skip

            optimizer = {"kind": "adam", "lr": lr, "steps": torch.tensor([steps], dtype=torch.float64),
                         "betas": [float(x) for x in group["betas"]], "eps": float(group["eps"]),
                         "exp_avg": moment("exp_avg"), "exp_avg_sq": moment("exp_avg_sq")}  # fmt: skip
        else:
            optimizer = {"kind": "gd", "lr": lr}
        return {**state, "model": model, "optimizer": optimizer, "generators": [state["rng"]["generators"]["data"]]}

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:  # a single run's checkpoint of tnattn <= 0.1
            state = self._from_module_state(state)
        if not torch.equal(state["optimizer"]["lr"], self.lr):
            raise ValueError("cannot resume: the checkpoint has different per-member learning rates")
        with torch.no_grad():
            for n in self.param_names:
                getattr(self.model, n).copy_(state["model"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state(state["generators"])
        self._work = None
