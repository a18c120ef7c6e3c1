"""Scenario B: frozen random context tensors, only the classification tensor C is learned.

Paper: the fixed-attention scenario and Table 1 (documentation: Science, "The two training
scenarios" and "Measurements"). With the context tensor ``A`` fixed, every site ``i`` of every
sequence maps to the feature ``f_i = l_i (x) e_{x_i} (x) r_i`` in ``R^{d D^2}`` and learning ``C`` is
a perceptron (no bias) on those points. This module runs the whole pipeline on an *ensemble* of
``E`` tensors at once (thousands at ``D = 2``):

1. :func:`sample_tensors` draws ``A ~ N(0, 1)`` of shape (E, d, D, D);
   :func:`boundary_vectors` picks the boundary vectors (see there for the eigenvector choice);
2. :func:`ensemble_contexts` scans left/right contexts for a shared batch of sequences with a
   leading ensemble dimension (the library's op, :func:`tnattn.ops.contexts` on stacked tensors;
   for each member the maths of ``tnattn.reference.contexts``);
3. :func:`features` / :func:`linear_problem` build ``G = mean f f^T + lambda2 I`` and
   ``a = mean y f`` on the training set (all ``2^3`` sequences of length 3, labels ``+-1`` from
   rule 30 with open boundaries);
4. :func:`stationary_solution` is the fixed point of gradient flow (L2: ``(G + lambda2 I)^+ a``;
   L1: the Lasso solution by FISTA);
5. :func:`acceptance` evaluates the sign predictions on a long random test set, in stages (a small
   subset first, the full set only for survivors -- exact, since a member with an error on the
   subset has a nonzero error on the full set); a tensor is accepted iff its test error is exactly 0.
   :func:`grokking_probability` is the accepted fraction;
6. :func:`flow_errors` / :func:`train_classifier` train ``C`` from many random initialisations by
   gradient flow (closed form through the eigendecomposition of ``G``; proximal gradient descent
   when ``lambda1 > 0``) and record training and test error against time;
   :func:`analyse_tensor` measures ``D_eff``, ``nu``, ``xi*``, ``eps`` and the grokking times.

Feature layout: ``f[s D^2 + a D + b] = delta_{s, x_i} l_i[a] r_i[b]``, i.e. ``C`` of shape
(d, D, D) flattened, so ``<C, f_i> = l_i^T C[x_i] r_i``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from tnattn import metrics
from tnattn.ops import contexts
from tnattn.reference import normalize
from tnattn.rules import elementary

__all__ = [
    "single_thread",
    "sample_tensors",
    "boundary_vectors",
    "ensemble_contexts",
    "rule_labels",
    "features",
    "TrainingProblem",
    "training_problem",
    "linear_problem",
    "stationary_solution",
    "predict",
    "test_errors",
    "acceptance",
    "PROBABILITY_CONVENTIONS",
    "minimum_detectable_effect",
    "grokking_probability",
    "flow_weights",
    "flow_errors",
    "train_classifier",
    "DEFF_ON",
    "NU_WINDOW_FAMILY",
    "TensorAnalysis",
    "analyse_tensor",
]

_DTYPE = torch.float64


@contextlib.contextmanager
def single_thread():
    """Run torch on one intra-op thread inside the block.

    Scenario B works on very many tiny tensors (2x2 matrices); there, dispatching each op to a
    thread pool costs far more than the arithmetic, and on a loaded machine it can be 10-40x slower
    than one thread. The previous setting is restored on exit.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


# ---------------------------------------------------------------------------------------------
# Tensors, boundaries, contexts, features
# ---------------------------------------------------------------------------------------------


def sample_tensors(E: int, D: int = 2, d: int = 2, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """``E`` context tensors with i.i.d. N(0, 1) entries, shape (E, d, D, D), float64."""
    if E < 1 or D < 1 or d < 2:
        raise ValueError(f"need E >= 1, D >= 1, d >= 2; got E={E}, D={D}, d={d}")
    return torch.randn(E, d, D, D, generator=generator, dtype=_DTYPE)


def _fix_sign(v: Tensor) -> Tensor:
    """Make the largest-magnitude component of each row positive (eigenvectors have no sign)."""
    idx = v.abs().argmax(-1, keepdim=True)
    s = torch.sign(torch.gather(v, -1, idx))
    return v * torch.where(s == 0, torch.ones_like(s), s)


def boundary_vectors(A: Tensor, symbol: int = 0, *, rtol: float = 1e-9) -> tuple:
    """Boundary vectors ``(u, v)`` = dominant left / right eigenvectors of ``A[:, symbol]``.

    ``u`` is the eigenvector of ``A[s]^T`` and ``v`` of ``A[s]`` for the eigenvalue of largest
    modulus, so ``u`` is a fixed direction of the left scan (``u^T A[s] ~ u^T``) and ``v`` of the
    right scan. When the dominant eigenvalue is complex (a complex pair has no real dominant
    eigenvector; about a third of Gaussian 2x2 matrices), we fall back to the top left / right
    singular vectors of ``A[s]``, the directions the matrix stretches most; the returned ``fallback``
    flag marks those members. Vectors are unit norm, sign fixed so the largest component is > 0.

    Parameters
    ----------
    A : Tensor, shape (E, d, D, D)
    symbol : int
        Which symbol's matrix defines the boundaries (the paper uses one symbol's matrix).
    rtol : float
        A dominant eigenvalue counts as complex when ``|Im| > rtol * |lambda|``.

    Returns
    -------
    u, v : Tensor, shape (E, D)
    fallback : Tensor of bool, shape (E,)
    """
    if A.dim() != 4 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must have shape (E, d, D, D), got {tuple(A.shape)}")
    if not 0 <= symbol < A.shape[1]:
        raise ValueError(f"symbol must be in [0, {A.shape[1]}), got {symbol}")
    M = A[:, symbol]

    def dominant(mat):
        lam, vec = torch.linalg.eig(mat)
        k = lam.abs().argmax(-1)
        lam_k = lam.gather(-1, k[:, None])[:, 0]
        vec_k = vec.gather(-1, k[:, None, None].expand(-1, mat.shape[-1], 1))[..., 0]
        cplx = lam_k.imag.abs() > rtol * lam_k.abs()
        return vec_k.real, cplx

    v_eig, cplx_r = dominant(M)
    u_eig, cplx_l = dominant(M.transpose(-1, -2))
    U, _, Vh = torch.linalg.svd(M)
    fallback = cplx_r | cplx_l
    u = torch.where(fallback[:, None], U[..., 0], u_eig)
    v = torch.where(fallback[:, None], Vh[:, 0, :], v_eig)
    return _fix_sign(normalize(u)), _fix_sign(normalize(v)), fallback


def ensemble_contexts(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Normalised contexts for every member of an ensemble of context tensors.

    Member ``e`` equals ``tnattn.reference.contexts(A[e], x, boundary[e], reverse=reverse)`` (to
    rounding); one call of :func:`tnattn.ops.contexts` on stacked tensors (the fused kernels) scans all
    members and sequences.

    Parameters
    ----------
    A : Tensor, shape (E, d, D, D)
    x : Tensor, shape (N, M), integer symbols shared by all members
    boundary : Tensor, shape (E, D) or (D,)
    reverse : bool
        False: left contexts (``l_0 = u``, ``l_i ~ l_{i-1}^T A[x_{i-1}]``); True: right contexts
        (``r_{M-1} = v``, ``r_i ~ A[x_{i+1}] r_{i+1}``).

    Returns
    -------
    Tensor, shape (E, N, M, D)
    """
    if A.dim() != 4:
        raise ValueError(f"A must have shape (E, d, D, D), got {tuple(A.shape)}")
    if x.dim() != 2 or x.dtype.is_floating_point:
        raise ValueError(f"x must be integer symbols of shape (N, M), got {tuple(x.shape)} {x.dtype}")
    E, d, D, _ = A.shape
    b = boundary if boundary.dim() == 2 else boundary.expand(E, D)
    if b.shape != (E, D):
        raise ValueError(f"boundary must have shape ({E}, {D}) or ({D},), got {tuple(boundary.shape)}")
    # The ensemble kernel scans all members and sequences at once (member e: tnattn.ops.contexts).
    return contexts(A, x.long(), b.to(A.dtype).contiguous(), reverse=reverse)


def rule_labels(x: Tensor, rule: int = 30) -> Tensor:
    """Labels ``+-1`` of an elementary rule (open boundaries) for sequences ``x`` (N, M)."""
    return elementary(rule, "open")(x).to(_DTYPE) * 2.0 - 1.0


def features(L: Tensor, R: Tensor, x: Tensor, d: int = 2) -> Tensor:
    """Feature points ``f = l (x) e_x (x) r``.

    Parameters
    ----------
    L, R : Tensor, shape (E, N, M, D)
    x : Tensor, shape (N, M)
    d : int

    Returns
    -------
    Tensor, shape (E, N, M, d D^2)
    """
    E, N, M, D = L.shape
    lr = L[..., :, None] * R[..., None, :]  # (E, N, M, D, D)
    onehot = torch.nn.functional.one_hot(x.long(), d).to(L.dtype)  # (N, M, d)
    f = onehot[None, :, :, :, None, None] * lr[:, :, :, None]
    return f.reshape(E, N, M, d * D * D)


@dataclass
class TrainingProblem:
    """Per-member training data and the linear problem (training set shared by all members).

    Attributes
    ----------
    F : Tensor, shape (E, P, k)
        Training features (P sites, k = d D^2).
    y : Tensor, shape (P,)
        Labels +-1.
    G0 : Tensor, shape (E, k, k)
        ``mean f f^T`` (without the L2 term).
    a : Tensor, shape (E, k)
        ``mean y f``.
    """

    F: Tensor
    y: Tensor
    G0: Tensor
    a: Tensor


def linear_problem(F: Tensor, y: Tensor) -> tuple:
    """``G0 = mean f f^T`` (E, k, k) and ``a = mean y f`` (E, k) over the P sites of F (E, P, k)."""
    P = F.shape[-2]
    return torch.einsum("epi,epj->eij", F, F) / P, torch.einsum("p,epi->ei", y, F) / P


def training_problem(A: Tensor, u: Tensor, v: Tensor, *, train_length: int = 3, rule: int = 30) -> TrainingProblem:
    """Features and moments of the training set: all ``d^train_length`` sequences."""
    from tnattn.data import all_sequences

    d = A.shape[1]
    x = all_sequences(train_length, d)
    L = ensemble_contexts(A, x, u)
    R = ensemble_contexts(A, x, v, reverse=True)
    F = features(L, R, x, d).reshape(A.shape[0], -1, d * A.shape[2] ** 2)
    y = rule_labels(x, rule).reshape(-1)
    G0, a = linear_problem(F, y)
    return TrainingProblem(F, y, G0, a)


def stationary_solution(
    G0: Tensor,
    a: Tensor,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    *,
    iters: int = 20000,
    tol: float = 1e-13,
) -> Tensor:
    """Fixed point of gradient flow on ``(1/P) sum_p (1/2)(<c,f_p> - y_p)^2 + lambda1|c|_1 + lambda2/2 |c|^2``.

    The data term is the mean over the ``P`` training sites. This is the paper's risk
    ``(1/2N) sum_i (1/2)(yhat_i - y_i)^2`` (arXiv:2210.15435, Sec. 3), whose sum runs over the
    ``2N`` points of its two classes of ``N``: a mean as well. Its gradient is
    ``G0 c - a + lambda2 c + lambda1 sgn(c)`` with ``G0 = mean f f^T`` and ``a = mean y f``
    (:func:`linear_problem`), so the fixed point below solves ``(G0 + lambda2 I) c = a - lambda1 s``.

    ``lambda1 = 0``: ``(G0 + lambda2 I)^+ a`` (pseudo-inverse: for singular ``G0`` and no L2 this is
    the minimum-norm solution, the limit of the flow from ``c = 0``). ``lambda1 > 0``: the Lasso
    solution by FISTA (step ``1/L``, ``L`` the largest eigenvalue of ``G0 + lambda2 I``, adaptive
    restart) with exact support polishing (see ``_lasso``); a member stops when its KKT conditions
    hold exactly or its iterate moves less than ``tol``.

    Parameters
    ----------
    G0 : Tensor, shape (E, k, k)
    a : Tensor, shape (E, k)

    Returns
    -------
    Tensor, shape (E, k)
    """
    if lambda1 < 0 or lambda2 < 0:
        raise ValueError(f"lambda1 and lambda2 must be >= 0, got {lambda1}, {lambda2}")
    k = G0.shape[-1]
    G = G0 + lambda2 * torch.eye(k, dtype=G0.dtype)
    if lambda1 == 0:
        return (torch.linalg.pinv(G, hermitian=True) @ a[..., None])[..., 0]
    c = _lasso(G.numpy(), a.numpy(), float(lambda1), iters=iters, tol=tol)
    return torch.as_tensor(c, dtype=G0.dtype)


def _lasso(G: np.ndarray, a: np.ndarray, lam: float, *, iters: int, tol: float, block: int = 200) -> np.ndarray:
    """Vectorised Lasso ``min (1/2) c^T G c - a.c + lam |c|_1`` for many tiny problems.

    FISTA with gradient-based adaptive restart, in numpy (per-iteration overhead matters for
    8-dimensional problems). Every ``block`` iterations each member's support and signs are
    *polished*: the reduced system ``G_SS c_S = a_S - lam s_S`` is solved exactly and accepted when
    it satisfies the KKT conditions (signs consistent, ``|a - G c| <= lam`` off the support), which
    makes the result exact up to round-off once FISTA has found the support. Members that never
    pass keep their FISTA iterate (converged to ``tol`` or stopped after ``iters`` iterations).
    """
    E, k = a.shape
    L = np.linalg.eigvalsh(G)[:, -1:].clip(1e-12)
    c = np.zeros_like(a)
    z, tk = c.copy(), np.ones((E, 1))
    out = np.zeros_like(a)
    live = np.ones(E, dtype=bool)
    eye = np.eye(k)
    for it in range(1, iters + 1):
        Gl, al, Ll, cl, zl, tl = G[live], a[live], L[live], c[live], z[live], tk[live]
        grad = np.einsum("eij,ej->ei", Gl, zl) - al
        w = zl - grad / Ll
        cn = np.sign(w) * np.maximum(np.abs(w) - lam / Ll, 0.0)
        tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tl * tl))
        restart = np.sum((zl - cn) * (cn - cl), axis=1, keepdims=True) > 0
        tn = np.where(restart, 1.0, tn)
        zn = np.where(restart, cn, cn + ((tl - 1.0) / tn) * (cn - cl))
        moved = np.max(np.abs(cn - cl), axis=1)
        c[live], z[live], tk[live] = cn, zn, tn
        finished = np.zeros(E, dtype=bool)
        idx = np.nonzero(live)[0]
        finished[idx[moved < tol]] = True
        if it % block == 0 or it == iters:
            act = np.abs(cn) > 0
            sg = np.sign(cn)
            both = act[:, :, None] & act[:, None, :]
            Gm = np.where(both, Gl, eye)
            rhs = np.where(act, al - lam * sg, 0.0)
            try:
                cp = np.linalg.solve(Gm, rhs[..., None])[..., 0]
            except np.linalg.LinAlgError:
                cp = np.full_like(rhs, np.nan)
            res = al - np.einsum("eij,ej->ei", Gl, cp)
            ok = np.all(np.where(act, np.sign(cp) == sg, np.abs(res) <= lam * (1 + 1e-9) + 1e-15), axis=1)
            ok &= np.all(np.isfinite(cp), axis=1)
            c[idx[ok]] = cp[ok]
            finished[idx[ok]] = True
        done = finished & live
        out[done] = c[done]
        live &= ~finished
        if not live.any():
            break
    out[live] = c[live]
    return out


def predict(c: Tensor, L: Tensor, R: Tensor, x: Tensor) -> Tensor:
    """Raw outputs ``l_i^T C[x_i] r_i`` for weights ``c`` (E, d D^2): shape (E, N, M)."""
    E, N, M, D = L.shape
    C = c.reshape(E, -1, D, D)
    Cx = C[:, x.long()]  # (E, N, M, D, D)
    return torch.einsum("enma,enmab,enmb->enm", L, Cx, R)


def test_errors(
    c: Tensor, A: Tensor, u: Tensor, v: Tensor, x: Tensor, y: Tensor, *, chunk: int = 256
) -> Tensor:
    """Fraction of wrong sites (``sign(output) != y``; output 0 counts as wrong) per member.

    Parameters
    ----------
    c : Tensor, shape (E, k)
    A : Tensor, shape (E, d, D, D)
    u, v : Tensor, shape (E, D)
    x : Tensor, shape (N, M)
    y : Tensor, shape (N, M), labels +-1
    chunk : int
        Members per block (memory ~ chunk * N * M * D^2).

    Returns
    -------
    Tensor, shape (E,)
    """
    out = torch.empty(A.shape[0], dtype=_DTYPE)
    with single_thread():
        return _test_errors(out, c, A, u, v, x, y, chunk)


def _test_errors(out, c, A, u, v, x, y, chunk):
    for s in range(0, A.shape[0], chunk):
        sl = slice(s, s + chunk)
        L = ensemble_contexts(A[sl], x, u[sl])
        R = ensemble_contexts(A[sl], x, v[sl], reverse=True)
        pred = predict(c[sl], L, R, x)
        out[sl] = ((pred * y[None]) <= 0).to(_DTYPE).mean(dim=(1, 2))
    return out


def acceptance(
    c: Tensor,
    A: Tensor,
    u: Tensor,
    v: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    stages: Sequence[int] = (4, 40, 200),
    chunk: int = 256,
) -> Tensor:
    """Whether each member's weights give exactly zero error on the test set ``x_test``.

    Staged for speed and exact: the members are first checked on the first ``stages[0]``
    sequences, survivors on the first ``stages[1]``, ..., the last survivors on all of them.

    Returns
    -------
    Tensor of bool, shape (E,)
    """
    alive = torch.arange(A.shape[0])
    bounds = [s for s in stages if s < x_test.shape[0]] + [x_test.shape[0]]
    for nseq in bounds:
        if alive.numel() == 0:
            break
        err = test_errors(c[alive], A[alive], u[alive], v[alive], x_test[:nseq], y_test[:nseq], chunk=chunk)
        alive = alive[err == 0]
    ok = torch.zeros(A.shape[0], dtype=torch.bool)
    ok[alive] = True
    return ok


#: Conventions for the grokking probability of Scenario B (:func:`grokking_probability`).
#: ``"all_tensors"``: accepted / all sampled tensors; a tensor whose dominant eigenvalue of
#: ``A[0]`` is a complex pair has no real top eigenvector (the paper's boundary vectors), gets the
#: top singular vectors instead (:func:`boundary_vectors`) and counts like any other.
#: ``"real_dominant"``: such tensors are left out of numerator and denominator (only tensors
#: with the paper's eigenvector boundaries are sampled).
PROBABILITY_CONVENTIONS = ("all_tensors", "real_dominant")


def minimum_detectable_effect(
    p: float, n: int, *, alpha: float = 0.05, power: float = 0.8, discordant: Optional[float] = None
) -> float:
    """Smallest difference of two acceptance probabilities a two-sided test detects.

    Normal approximation: ``MDE = (z_{1-alpha/2} + z_power) * se``. Independent samples of ``n``
    tensors each: ``se = sqrt(2 p (1 - p) / n)``. The same ``n`` tensors under both settings
    (common random numbers, as :func:`grokking_probability` does; McNemar's test): ``se =
    sqrt(discordant / n)`` with ``discordant`` the fraction of tensors accepted under exactly one
    of the two settings.

    Parameters
    ----------
    p : float in [0, 1]
        Acceptance probability of the reference setting.
    n : int
        Tensors per setting (> 0).
    alpha, power : float in (0, 1)
    discordant : float in [0, 1], optional
        Paired design (see above).

    Returns
    -------
    float
        The detectable difference of probabilities (absolute, not in per cent).

    Raises
    ------
    ValueError
        For arguments out of range.
    """
    from scipy.stats import norm

    if not 0 <= p <= 1 or n < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need 0 <= p <= 1, n >= 1, 0 < alpha, power < 1; got p={p}, n={n}, alpha={alpha}, power={power}")
    if discordant is not None and not 0 <= discordant <= 1:
        raise ValueError(f"discordant must lie in [0, 1], got {discordant}")
    se = math.sqrt(2 * p * (1 - p) / n) if discordant is None else math.sqrt(discordant / n)
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def grokking_probability(
    n_tensors: int,
    lambda1s: Sequence[float] = (0.0,),
    lambda2s: Sequence[float] = (0.0,),
    *,
    D: int = 2,
    test_sequences: int = 1000,
    test_length: int = 100,
    train_length: int = 3,
    rule: int = 30,
    seed: int = 0,
    chunk: int = 2000,
    progress: bool = False,
) -> dict:
    """Accepted fraction of random ``A`` for each regularisation setting (rejection sampling).

    The same ``A`` samples and test set serve every ``(lambda1, lambda2)`` pair (common random
    numbers: the curve against lambda is smoother than independent estimates would be).

    Parameters
    ----------
    n_tensors : int
        Number of random tensors (the paper used 20000 per point).
    lambda1s, lambda2s : sequence of float
        Settings, zipped pairwise ``(lambda1s[i], lambda2s[i])``; a length-1 sequence is
        broadcast against the other.
    D, test_sequences, test_length, train_length, rule, seed, chunk, progress
        Ensemble and data settings; ``chunk`` tensors are processed per block.

    Returns
    -------
    dict
        ``lambda1``, ``lambda2`` (lists), ``accepted`` (counts), ``probability``, ``stderr``
        (binomial), ``n_tensors``, ``fallback_fraction`` (complex dominant eigenvalue, see
        :func:`boundary_vectors`); the same under the two conventions of
        :data:`PROBABILITY_CONVENTIONS`: ``by_convention[name]`` with ``accepted``,
        ``probability``, ``stderr`` and ``n_tensors``; ``accepted_fallback`` (accepted tensors
        with a complex dominant pair, per setting); ``accepted_indices``: for each setting the
        global indices of
        the accepted tensors, and ``accepted_tensors``: for the first setting, the accepted
        ``(A, u, v)`` themselves (lists of tensors).
    """
    l1 = list(lambda1s)
    l2 = list(lambda2s)
    if len(l1) != len(l2):
        if len(l1) == 1:
            l1 = l1 * len(l2)
        elif len(l2) == 1:
            l2 = l2 * len(l1)
        else:
            raise ValueError("lambda1s and lambda2s must have the same length or length 1")
    gen = torch.Generator().manual_seed(seed)
    x_test = torch.randint(0, 2, (test_sequences, test_length), generator=gen)
    y_test = rule_labels(x_test, rule)
    counts = [0] * len(l1)
    accepted = [[] for _ in l1]
    kept_A, kept_u, kept_v = [], [], []
    n_fallback = 0
    fallback_idx: set = set()
    blocks = range(0, n_tensors, chunk)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="scenario B: sampling A", unit="block")
    for s in blocks:
        m = min(chunk, n_tensors - s)
        A = sample_tensors(m, D, generator=gen)
        u, v, fb = boundary_vectors(A)
        n_fallback += int(fb.sum())
        fallback_idx.update((s + torch.nonzero(fb)[:, 0]).tolist())
        prob = training_problem(A, u, v, train_length=train_length, rule=rule)
        for j, (a1, a2) in enumerate(zip(l1, l2)):
            c = stationary_solution(prob.G0, prob.a, a1, a2)
            ok = acceptance(c, A, u, v, x_test, y_test)
            counts[j] += int(ok.sum())
            accepted[j].extend((s + torch.nonzero(ok)[:, 0]).tolist())
            if j == 0:
                kept_A.extend(A[ok]), kept_u.extend(u[ok]), kept_v.extend(v[ok])
    p = np.asarray(counts, dtype=np.float64) / n_tensors
    acc_fb = [sum(1 for i in acc if i in fallback_idx) for acc in accepted]
    n_real = n_tensors - n_fallback
    by_conv = {}
    for name, num, den in (("all_tensors", counts, n_tensors),
                           ("real_dominant", [c - f for c, f in zip(counts, acc_fb)], n_real)):  # fmt: skip
        q = np.asarray(num, dtype=np.float64) / max(den, 1)
        by_conv[name] = {"accepted": list(num), "n_tensors": int(den), "probability": q.tolist(),
                         "stderr": np.sqrt(q * (1 - q) / max(den, 1)).tolist()}  # fmt: skip
    return {
        "lambda1": l1,
        "lambda2": l2,
        "accepted": counts,
        "probability": p.tolist(),
        "stderr": np.sqrt(p * (1 - p) / n_tensors).tolist(),
        "n_tensors": n_tensors,
        "fallback_fraction": n_fallback / n_tensors,
        "accepted_fallback": acc_fb,
        "by_convention": by_conv,
        "accepted_indices": accepted,
        "accepted_tensors": (kept_A, kept_u, kept_v),
    }


# ---------------------------------------------------------------------------------------------
# Training C from many initialisations
# ---------------------------------------------------------------------------------------------


def flow_weights(G: Tensor, a: Tensor, c0: Tensor, t: Tensor) -> Tensor:
    """Closed-form gradient flow ``dc/dt = a - G c`` for one problem and many runs.

    With ``G = V diag(g) V^T``: ``c(t) = V [ e^{-g t} V^T c0 + (1 - e^{-g t})/g V^T a ]`` (the
    second factor is ``t`` where ``g = 0``, so singular ``G`` is fine).

    Parameters
    ----------
    G : Tensor, shape (k, k)
        Including the L2 term.
    a : Tensor, shape (k,)
    c0 : Tensor, shape (R, k)
        Initial weights.
    t : Tensor, shape (R,) or (R, T)
        Times per run.

    Returns
    -------
    Tensor, shape (R, k) or (R, T, k)
    """
    g, V = torch.linalg.eigh(G)
    g = g.clamp_min(0.0)
    tt = t if t.dim() == 2 else t[:, None]
    gt = g[None, None, :] * tt[..., None]  # (R, T, k)
    decay = torch.exp(-gt)
    safe = torch.where(g > 1e-14, g, torch.ones_like(g))
    growth = torch.where(g > 1e-14, -torch.expm1(-gt) / safe, tt[..., None].expand_as(gt))
    coef = decay * (c0 @ V)[:, None, :] + growth * (V.T @ a)[None, None, :]
    out = coef @ V.T
    return out if t.dim() == 2 else out[:, 0]


def flow_errors(c: Tensor, F: Tensor, y: Tensor) -> Tensor:
    """Fraction of wrong points (``sign(<c, f>) != y``, 0 counts as wrong).

    Parameters
    ----------
    c : Tensor, shape (..., k)
    F : Tensor, shape (P, k)
    y : Tensor, shape (P,)

    Returns
    -------
    Tensor, shape (...)
    """
    return ((c @ F.T) * y <= 0).to(_DTYPE).mean(-1)


def _first_zero_times(err: Tensor, times: Tensor, definition: str) -> Tensor:
    """Zero-error time per run under ``definition`` (nan if never): err (R, T), times (T,)."""
    return torch.as_tensor(metrics.zero_times(err.numpy(), times.numpy(), definition=definition))


def train_classifier(
    F_train: Tensor,
    y_train: Tensor,
    F_test: Tensor,
    y_test: Tensor,
    c0: Tensor,
    times: Tensor,
    *,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    dt: float = 0.05,
    refine: int = 40,
    definition: str = "first_zero",
) -> dict:
    """Train ``C`` from many initialisations; record errors and the zero-error times.

    ``lambda1 = 0``: exact gradient flow (:func:`flow_weights`), and ``t_train`` / ``t_eps`` are
    refined by bisection between records. ``lambda1 > 0``: full-batch proximal gradient descent
    with step ``dt`` (time ``t = steps * dt``), recorded at the nearest step; no refinement.

    Parameters
    ----------
    F_train : Tensor, shape (P, k)
    y_train : Tensor, shape (P,)
    F_test : Tensor, shape (Q, k)
    y_test : Tensor, shape (Q,)
    c0 : Tensor, shape (R, k)
    times : Tensor, shape (T,), increasing, starting at 0
    lambda1, lambda2 : float
    dt : float
        Step of the proximal descent (``lambda1 > 0``); must be below ``2 / max eig(G)``.
    refine : int
        Bisection steps (``lambda1 = 0``).
    definition : {"first_zero", "stays_zero"}
        Grokking-time convention (:func:`tnattn.metrics.zero_times`); default the paper's first
        zero (arXiv:2210.15435, Sec. 3).

    Returns
    -------
    dict
        ``times`` (T,), ``train_error`` / ``test_error`` (R, T), ``t_train`` / ``t_eps`` /
        ``t_grok`` (R,) with nan where zero is never reached, ``t_eps_lower`` (R,): the latest
        time known to have a nonzero test error before ``t_eps`` (the lower end of the bisection
        bracket, or the previous record without refinement; ``t_eps`` itself where ``t_eps`` is
        the first record or nan), ``c_final`` (R, k).
    """
    metrics.check_definition(definition)
    P = F_train.shape[0]
    k = F_train.shape[1]
    G = F_train.T @ F_train / P + lambda2 * torch.eye(k, dtype=F_train.dtype)
    a = F_train.T @ y_train / P
    R = c0.shape[0]
    if lambda1 == 0:
        W = flow_weights(G, a, c0, times[None, :].expand(R, -1))  # (R, T, k)
    else:
        W = torch.empty(R, times.numel(), k, dtype=F_train.dtype)
        c = c0.clone()
        step = 0
        for j, tj in enumerate(times.tolist()):
            target = int(round(tj / dt))
            while step < target:
                w = c - dt * (c @ G - a)
                c = torch.sign(w) * torch.clamp(w.abs() - dt * lambda1, min=0.0)
                step += 1
            W[:, j] = c
    tr = flow_errors(W, F_train, y_train)
    te = torch.stack([flow_errors(W[:, j], F_test, y_test) for j in range(times.numel())], 1)
    t_train = _first_zero_times(tr, times, definition)
    t_eps = _first_zero_times(te, times, definition)
    t_eps_lower = _previous_record(t_eps, times)
    if lambda1 == 0 and refine:
        t_train, _ = _bisect(t_train, times, lambda t: flow_errors(flow_weights(G, a, c0, t), F_train, y_train) == 0, refine)
        t_eps, t_eps_lower = _bisect(t_eps, times, lambda t: flow_errors(flow_weights(G, a, c0, t), F_test, y_test) == 0, refine)
    return {
        "times": times,
        "train_error": tr,
        "test_error": te,
        "t_train": t_train,
        "t_eps": t_eps,
        "t_eps_lower": t_eps_lower,
        "t_grok": t_eps - t_train,
        "c_final": W[:, -1],
        "G": G,
        "a": a,
    }


def _previous_record(t_rec: Tensor, times: Tensor) -> Tensor:
    """The record before each recorded time (the time itself at the first record or nan)."""
    sel = torch.isfinite(t_rec) & (t_rec > times[0])
    idx = torch.searchsorted(times, torch.where(sel, t_rec, times[0]))
    return torch.where(sel, times[(idx - 1).clamp_min(0)], t_rec)


def _bisect(t_rec: Tensor, times: Tensor, ok, steps: int) -> tuple:
    """Refine first-zero times between the preceding record and the recorded time.

    Returns the refined times and the lower ends of their final brackets (error still nonzero).
    """
    t_rec = t_rec.clone()
    sel = torch.isfinite(t_rec) & (t_rec > times[0])
    if not bool(sel.any()):
        return t_rec, t_rec.clone()
    idx = torch.searchsorted(times, torch.where(sel, t_rec, times[0]))
    lo = times[(idx - 1).clamp_min(0)].clone()
    hi = torch.where(sel, t_rec, times[0]).clone()
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        good = ok(mid)
        hi = torch.where(sel & good, mid, hi)
        lo = torch.where(sel & ~good, mid, lo)
    return torch.where(sel, hi, t_rec), torch.where(sel, lo, t_rec)


#: Fit windows of nu in :func:`analyse_tensor` for the window systematic, as factors
#: ``(f_lo, f_hi)`` of the central error band ``[min_count / Q, max_error]``: the window is the
#: range of ``tau`` where the aligned mean error lies in ``[f_lo min_count / Q, f_hi max_error]``.
#: Lower ends 0.5, 1, 2 times, upper ends 1/3, 1, 3 times the central ones; a band other than the
#: central one is used when its upper end is at least 3 times its lower end, and any band only
#: when it holds at least 4 grid points (without the central band, the whole ``tau`` range is the
#: central window).
NU_WINDOW_FAMILY = tuple((lo, hi) for lo in (0.5, 1.0, 2.0) for hi in (1 / 3, 1.0, 3.0))


def _nu_budget(nu: float, stat: float, by_window: list, nu_lower: float) -> dict:
    """Window and resolution systematics and the total of a Scenario B nu (see TensorAnalysis)."""
    nus = np.array([b["nu"] for b in by_window], dtype=float)
    nus = nus[np.isfinite(nus)]
    window = float(0.5 * np.ptp(nus)) if nus.size else float("nan")
    resolution = abs(nu_lower - nu) if np.isfinite(nu_lower) else float("nan")
    parts = (stat, window, resolution)
    total = float(math.sqrt(sum(p * p for p in parts))) if all(np.isfinite(parts)) else float("nan")
    return {"window_syst": window, "resolution_syst": resolution, "total": total, "by_window": by_window}


#: Point sets for the effective dimension in :func:`analyse_tensor`.
DEFF_ON = ("test", "train", "per_class")


@dataclass
class TensorAnalysis:
    """Measurements on one accepted tensor (Table-1 row and grokking times).

    Attributes
    ----------
    D_eff : float
        Effective dimension of the feature points chosen by ``deff_on`` (:func:`analyse_tensor`).
    nu, nu_err : float
        Critical exponent from runs aligned at ``t_eps`` and its bootstrap standard error over the
        initialisations.
    nu_fit_err : float
        The regression standard error of that fit (power-law misfit inside the window; for one
        tensor the runs share their data and scatter little, so this is usually the larger).
    nu_window_syst : float
        Systematic error of the fit window: half the spread (max - min) / 2 of nu over the
        windows of :data:`NU_WINDOW_FAMILY` (``lambda1 > 0``: over ``max_error`` times 1/3, 1, 3).
    nu_resolution_syst : float
        Systematic error of the time resolution: the change of nu (same window) when every run is
        aligned at the lower end of its ``t_eps`` bracket instead of ``t_eps`` (the true crossing
        lies between the two). With ``lambda1 = 0`` the bracket is bisected to ``2^-refine`` of a
        record step, so this part is tiny; with ``lambda1 > 0`` it is one record step.
    nu_total : float
        ``sqrt(nu_err^2 + nu_window_syst^2 + nu_resolution_syst^2)``, the total uncertainty.
    nu_by_window : list of dict
        Per window of the family: ``band`` (error band), ``window`` (tau range) and ``nu``.
    xi_star : float
        Max over classes of ``xi_left + xi_right`` (estimator ``xi_method``).
    xi_per_class : dict
    xi_predicted : float
        ``(D_eff - 2 nu + 1)/2``.
    eps_centroid, eps_gap, eps_spread : float
        Class separation (:func:`tnattn.metrics.class_separation`, all three estimators).
    eps : float
        The one chosen by ``eps_method``.
    t_train, t_eps, t_grok : ndarray, shape (R,)
    grokked_fraction : float
        Runs whose test error reaches zero within the horizon.
    error_jump : float
        Mean test error of the aligned runs just before ``t_eps`` (``tau`` = ``10^-tau_decades`` of
        the median ``t_eps``): the discontinuous part of the transition. Test sites with
        identical features (e.g. runs of the boundary symbol, whose context is the boundary
        eigenvector itself) flip together, so some tensors show a jump instead of a power law.
    curves : dict
        A few runs' ``times`` / ``train_error`` / ``test_error`` and the aligned mean error.
    variants : dict
        Every estimator choice at once: ``D_eff`` ({deff_on: value}), ``xi_star`` ({xi_method:
        value}), ``xi_predicted`` ({deff_on: value}), ``eps`` ({eps_method: value}); the
        sensitivity of Table 1 to the choices.
    options : dict
        The choices behind the headline values.
    """

    D_eff: float
    nu: float
    nu_err: float
    xi_star: float
    xi_per_class: dict
    xi_predicted: float
    eps_centroid: float
    eps_gap: float
    t_train: np.ndarray
    t_eps: np.ndarray
    t_grok: np.ndarray
    grokked_fraction: float
    error_jump: float = float("nan")
    curves: dict = field(default_factory=dict)
    eps_spread: float = float("nan")
    eps: float = float("nan")
    nu_fit_err: float = float("nan")
    nu_window_syst: float = float("nan")
    nu_resolution_syst: float = float("nan")
    nu_total: float = float("nan")
    nu_by_window: list = field(default_factory=list)
    variants: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def analyse_tensor(
    A: Tensor,
    u: Tensor,
    v: Tensor,
    *,
    n_inits: int = 100,
    init_scale: float = 1.0,
    test_sequences: int = 100,
    test_length: int = 100,
    train_length: int = 3,
    rule: int = 30,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    t_max: Optional[float] = None,
    n_times: int = 150,
    tau_decades: float = 4.0,
    max_error: float = 0.01,
    min_count: int = 10,
    gap_points: int = 4000,
    seed: int = 0,
    deff_on: str = "test",
    xi_method: str = "edges",
    eps_method: str = "gap",
    definition: str = "first_zero",
) -> TensorAnalysis:
    """Train ``C`` for one tensor from many initialisations and measure the Table-1 quantities.

    Table 1 of arXiv:2210.15435 does not publish its estimators; each choice is a named option
    (:data:`DEFF_ON`, :data:`tnattn.metrics.XI_METHODS`, :data:`tnattn.metrics.EPS_METHODS`),
    and ``variants`` holds the values under every choice.

    * ``D_eff``: :func:`tnattn.metrics.effective_dimension` of the test feature points
      (``deff_on="test"``), of the training feature points (``"train"``: the 8 x 3 sites the
      classifier is trained on) or the mean over the two classes of the test points' value
      (``"per_class"``).
    * ``xi*``: :func:`tnattn.metrics.xi_star` on the angles of the left/right contexts of the test
      sites, per class (``D = 2`` only; ``nan`` otherwise), at the edges of the support
      (``xi_method="edges"``) or from the largest density anywhere (``"max_density"``).
    * ``eps``: :func:`tnattn.metrics.class_separation` (centroid on all points; gap and spread on
      a random subset of ``gap_points``, the pairwise search being quadratic); ``eps_method``
      picks the headline one.
    * ``t_eps``: the grokking-time convention ``definition`` (:func:`tnattn.metrics.zero_times`).
    * ``nu``: every grokking run's test error is evaluated (closed-form flow, ``lambda1 = 0``) at
      ``t_eps - tau`` on a log grid of ``tau`` spanning ``tau_decades`` decades below the median
      ``t_eps`` (runs that grok earlier than the median are left out of the average), then
      :func:`tnattn.metrics.fit_critical_exponent` averages and fits where the mean error lies
      between ``min_count / Q`` (``Q`` test sites; below, the error is a staircase of single
      sites) and ``max_error``. With ``lambda1 > 0`` the recorded histories are used. The total
      uncertainty ``nu_total`` adds the bootstrap error, the window systematic
      (:data:`NU_WINDOW_FAMILY`) and the time-resolution systematic in quadrature.
    * Grokking times from :func:`train_classifier`.

    Parameters
    ----------
    A : Tensor, shape (d, D, D)
    u, v : Tensor, shape (D,)
        Boundary vectors.
    n_inits : int
        Random initialisations ``c0 ~ N(0, init_scale^2)``.
    t_max : float, optional
        Horizon; default ``20 / g_min`` with ``g_min`` the smallest nonzero eigenvalue of ``G``.

    Returns
    -------
    TensorAnalysis
    """
    for name, value, allowed in (("deff_on", deff_on, DEFF_ON), ("xi_method", xi_method, metrics.XI_METHODS),
                                 ("eps_method", eps_method, metrics.EPS_METHODS)):  # fmt: skip
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    metrics.check_definition(definition)
    D = A.shape[1]
    # One generator, drawn in a fixed order: test sequences, initialisations, then the gap subset.
    gen = torch.Generator().manual_seed(seed)
    Lt, Rt, F_test, yt = _test_features(A, u, v, gen, test_sequences, test_length, rule)
    prob = training_problem(A[None].to(_DTYPE), u[None].to(_DTYPE), v[None].to(_DTYPE), train_length=train_length,
                            rule=rule)  # fmt: skip
    F_train, y_train = prob.F[0], prob.y
    G = prob.G0[0] + lambda2 * torch.eye(F_train.shape[1], dtype=_DTYPE)
    g, times = _flow_times(G, t_max, n_times)
    c0 = init_scale * torch.randn(n_inits, F_train.shape[1], generator=gen, dtype=_DTYPE)
    res = train_classifier(F_train, y_train, F_test, yt, c0, times, lambda1=lambda1, lambda2=lambda2,
                           definition=definition)  # fmt: skip
    t_eps = res["t_eps"].numpy()
    t_train = res["t_train"].numpy()
    grok = np.isfinite(t_eps) & (t_eps > 0)  # runs with a history before t_eps (for nu)
    fit = _no_nu()
    if grok.sum() >= 2 and lambda1 == 0:
        fit = _nu_closed_form(res, c0, grok, F_test, yt, tau_decades=tau_decades, max_error=max_error,
                              min_count=min_count)  # fmt: skip
    elif grok.sum() >= 2:
        fit = _nu_recorded(res, times, grok, max_error=max_error)
    nu, budget = fit["nu"], fit["budget"]
    deffs, xis, pers, epss = _estimator_variants(F_test, yt, F_train, Lt, Rt, gen, gap_points)
    D_eff = deffs[deff_on]
    show = min(8, n_inits)
    curves = {
        "times": times.numpy(),
        "train_error": res["train_error"][:show].numpy(),
        "test_error": res["test_error"][:show].numpy(),
        "aligned_tau": fit["aligned_tau"],
        "aligned_mean_error": fit["aligned_mean"],
        "test_angles_left": metrics.angles(Lt.reshape(-1, 2).numpy()) if D == 2 else None,
        "test_angles_right": metrics.angles(Rt.reshape(-1, 2).numpy()) if D == 2 else None,
        "test_labels": yt.numpy(),
        "g_eigenvalues": g.numpy(),
    }
    return TensorAnalysis(
        D_eff=D_eff,
        nu=float(nu),
        nu_err=float(fit["nu_err"]),
        xi_star=float(xis[xi_method]),
        xi_per_class={str(k_): v_ for k_, v_ in pers[xi_method].items()},
        xi_predicted=float((D_eff - 2 * nu + 1) / 2),
        eps_centroid=float(epss["centroid"]),
        eps_gap=float(epss["gap"]),
        t_train=t_train,
        t_eps=t_eps,
        t_grok=t_eps - t_train,
        grokked_fraction=float(np.isfinite(t_eps).mean()),
        error_jump=fit["jump"],
        curves=curves,
        eps_spread=float(epss["spread"]),
        eps=float(epss[eps_method]),
        nu_fit_err=float(fit["nu_fit_err"]),
        nu_window_syst=float(budget["window_syst"]),
        nu_resolution_syst=float(budget["resolution_syst"]),
        nu_total=float(budget["total"]),
        nu_by_window=budget["by_window"],
        variants={
            "D_eff": deffs,
            "xi_star": xis,
            "xi_predicted": {k: float((v - 2 * nu + 1) / 2) for k, v in deffs.items()},
            "eps": epss,
        },
        options={"deff_on": deff_on, "xi_method": xi_method, "eps_method": eps_method, "definition": definition},
    )


# The named steps of analyse_tensor, in the order it takes them.


def _test_features(A: Tensor, u: Tensor, v: Tensor, gen: torch.Generator, test_sequences: int, test_length: int,
                   rule: int) -> tuple:  # fmt: skip
    """Random test sequences (drawn from ``gen``), their contexts and feature points.

    Returns ``Lt, Rt`` (shape (test_sequences, test_length, D)), ``F_test`` (shape (Q, d D^2),
    ``Q = test_sequences * test_length`` sites) and the labels ``yt`` (shape (Q,)).
    """
    d, D = A.shape[0], A.shape[1]
    x_test = torch.randint(0, d, (test_sequences, test_length), generator=gen)
    y_test = rule_labels(x_test, rule)
    A1, u1, v1 = A[None].to(_DTYPE), u[None].to(_DTYPE), v[None].to(_DTYPE)
    Lt = ensemble_contexts(A1, x_test, u1)[0]
    Rt = ensemble_contexts(A1, x_test, v1, reverse=True)[0]
    F_test = features(Lt[None], Rt[None], x_test, d)[0].reshape(-1, d * D * D)
    return Lt, Rt, F_test, y_test.reshape(-1)


def _flow_times(G: Tensor, t_max: Optional[float], n_times: int) -> tuple:
    """Eigenvalues of ``G`` and the record times: 0, then a log grid from 0.01 to ``t_max``
    (default ``20 / g_min``, ``g_min`` the smallest nonzero eigenvalue: the slowest mode relaxes)."""
    g = torch.linalg.eigvalsh(G)
    g_min = float(g[g > 1e-10 * g.max()].min())
    if t_max is None:
        t_max = 20.0 / g_min
    times = torch.cat([torch.zeros(1, dtype=_DTYPE), torch.logspace(-2, np.log10(t_max), n_times - 1, dtype=_DTYPE)])
    return g, times


def _no_nu() -> dict:
    """The nu measurement of a tensor with too few grokking runs to fit (all nan)."""
    nan = float("nan")
    return {"nu": nan, "nu_err": nan, "nu_fit_err": nan, "jump": nan, "aligned_tau": None, "aligned_mean": None,
            "budget": {"window_syst": nan, "resolution_syst": nan, "total": nan, "by_window": []}}  # fmt: skip


def _with_fit(out: dict, fit, budget: dict) -> dict:
    out.update(nu=fit.nu, nu_err=fit.nu_err, nu_fit_err=fit.fit_err, aligned_tau=fit.tau, aligned_mean=fit.mean_error,
               budget=budget)  # fmt: skip
    return out


def _nu_closed_form(res: dict, c0: Tensor, grok: np.ndarray, F_test: Tensor, yt: Tensor, *, tau_decades: float,
                    max_error: float, min_count: int) -> dict:  # fmt: skip
    """nu with ``lambda1 = 0``: the test error of every late-grokking run evaluated on the closed-form
    flow at ``t_eps - tau``, aligned, averaged and fitted, with its error budget
    (:class:`TensorAnalysis`, :data:`NU_WINDOW_FAMILY`). Returns the fields of :func:`_no_nu`."""
    out = _no_nu()
    t_eps, t_lower = res["t_eps"].numpy(), res["t_eps_lower"].numpy()
    # Align the runs whose t_eps is at least the median: their histories cover the whole
    # tau range up to tau_hi = median t_eps (runs that grok earlier would cut it short).
    tmed = float(np.median(t_eps[grok]))
    grok = grok & (t_eps >= tmed)
    tau = torch.as_tensor(np.geomspace(tmed * 10 ** (-tau_decades), tmed * 0.999, 60))
    c0g = c0[torch.as_tensor(grok)]

    def aligned(te_np, window, n_boot):
        te_r = torch.as_tensor(te_np)
        tgrid = torch.cat([te_r[:, None] - tau.flip(0)[None, :], te_r[:, None]], 1)  # increasing
        Eg = flow_errors(flow_weights(res["G"], res["a"], c0g, tgrid), F_test, yt)
        return metrics.fit_critical_exponent(Eg.numpy(), tgrid.numpy(), te_np, window=window, n_boot=n_boot)

    def nu_or_nan(te_np, window):
        try:
            return aligned(te_np, window, 0).nu
        except ValueError:
            return float("nan")

    try:
        full = aligned(t_eps[grok], (float(tau[0]), float(tau[-1])), 100)
    except ValueError:
        return out
    out["jump"] = float(full.mean_error[0])
    # Window: mean error between min_count/Q (below, the discrete test set makes the
    # error a staircase of single sites) and max_error (the asymptotic regime); the
    # family scales both ends.
    lo_err = min_count / yt.numel()
    windows = {}
    for f_lo, f_hi in NU_WINDOW_FAMILY:
        lo_e, hi_e = f_lo * lo_err, f_hi * max_error
        sel = (full.mean_error <= hi_e) & (full.mean_error >= lo_e)
        central = (f_lo, f_hi) == (1.0, 1.0)  # always tried, as before the family
        if (central or hi_e >= 3 * lo_e) and sel.sum() >= 4:
            windows[(f_lo, f_hi)] = (float(full.tau[sel][0]), float(full.tau[sel][-1]))
    if (1.0, 1.0) in windows:
        fit = aligned(t_eps[grok], windows[(1.0, 1.0)], 100)
    else:
        # The error never gets below max_error before t_eps (a jump, see error_jump),
        # or the band holds too few points: the fit over the whole tau range is the
        # central value (nu ~ 0 for a jump) and joins the family.
        fit = full
        windows = {(1.0, 1.0): (float(full.tau[0]), float(full.tau[-1])), **windows}
    by_window = [{"band": [f_lo * lo_err, f_hi * max_error] if (f_lo, f_hi) != (1.0, 1.0) or fit is not full
                  else [0.0, 1.0], "window": list(w),
                  "nu": fit.nu if (f_lo, f_hi) == (1.0, 1.0) else nu_or_nan(t_eps[grok], w)}
                 for (f_lo, f_hi), w in windows.items()]  # fmt: skip
    # Resolution: the same window with every run aligned at the lower end of its
    # t_eps bracket instead (the true crossing lies in between).
    nu_lower = nu_or_nan(t_lower[grok], fit.window)
    return _with_fit(out, fit, _nu_budget(fit.nu, fit.nu_err, by_window, nu_lower))


def _nu_recorded(res: dict, times: Tensor, grok: np.ndarray, *, max_error: float) -> dict:
    """nu with ``lambda1 > 0``: the recorded test-error histories of the grokking runs, aligned and
    fitted, with its error budget (window family over ``max_error``; resolution: one record step).
    Returns the fields of :func:`_no_nu`."""
    out = _no_nu()
    t_eps, t_lower = res["t_eps"].numpy(), res["t_eps_lower"].numpy()
    hist = res["test_error"][torch.as_tensor(grok)].numpy()

    def recorded(te_np, n_boot, **kw):
        try:
            return metrics.fit_critical_exponent(hist, times.numpy(), te_np, n_boot=n_boot, **kw)
        except ValueError:
            return None

    # Recorded histories: the window ends where the mean error exceeds f_hi max_error.
    fit = recorded(t_eps[grok], 200, max_error=max_error)
    if fit is None:
        return out
    by_window = []
    for f in sorted({f_hi for _, f_hi in NU_WINDOW_FAMILY}):
        v = fit if f == 1.0 else recorded(t_eps[grok], 0, max_error=f * max_error)
        if v is not None:
            by_window.append({"band": [float("nan"), f * max_error], "window": list(v.window), "nu": v.nu})
    lower = recorded(t_lower[grok], 0, window=fit.window)
    return _with_fit(out, fit, _nu_budget(fit.nu, fit.nu_err, by_window, lower.nu if lower is not None else float("nan")))


def _estimator_variants(F_test: Tensor, yt: Tensor, F_train: Tensor, Lt: Tensor, Rt: Tensor, gen: torch.Generator,
                        gap_points: int) -> tuple:  # fmt: skip
    """``D_eff``, ``xi*`` (with its per-class values) and ``eps`` under every estimator choice:
    dicts keyed by :data:`DEFF_ON`, :data:`tnattn.metrics.XI_METHODS` (twice) and the
    ``eps`` methods; the gap and spread estimators use ``gap_points`` sites drawn from ``gen``."""
    Fn, yn = F_test.numpy(), yt.numpy()
    deffs = {
        "test": float(metrics.effective_dimension(Fn)),
        "train": float(metrics.effective_dimension(F_train.numpy())),
        "per_class": float(np.mean([metrics.effective_dimension(Fn[yn == c]) for c in np.unique(yn)])),
    }
    xis, pers = {}, {}
    for m in metrics.XI_METHODS:
        if Lt.shape[-1] == 2:
            xis[m], pers[m] = metrics.xi_star(Lt.reshape(-1, 2).numpy(), Rt.reshape(-1, 2).numpy(), yn, method=m)
        else:
            xis[m], pers[m] = float("nan"), {}
    pick = torch.randperm(F_test.shape[0], generator=gen)[:gap_points]
    epss = {"centroid": metrics.class_separation(Fn, yn)}
    for m in ("gap", "spread"):
        epss[m] = metrics.class_separation(F_test[pick].numpy(), yt[pick].numpy(), method=m)
    return deffs, xis, pers, epss
