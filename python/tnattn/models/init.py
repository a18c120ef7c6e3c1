"""Initial values of the TN-attention tensors and boundary vectors.

All random draws happen in float64 on the CPU from the given generator and are cast afterwards,
so one seed gives the same initial model (up to rounding) for every dtype and device.

Context-tensor schemes (``init``)
---------------------------------
``"normal"``
    Every entry N(0, std^2): the paper's and the author's code's default (std = 1).
``"orthogonal"``
    Each symbol's matrix ``A[s]`` is std times a Haar-random orthogonal matrix: the contexts start
    as rotations (no direction is contracted), which keeps long sequences from collapsing onto
    one dominant direction at initialisation.
``"identity"``
    ``A[s] = I + std * G / sqrt(D)`` with G standard normal: near-identity transfer matrices
    (contexts that initially barely depend on the input; take std << 1 for a small perturbation).

The contexts are projective (normalised after each step), so a global scale of A never changes
the forward pass; it only sets the relative step size of gradient updates. The classification
tensor ``C`` is N(0, std^2) in every scheme: with unit contexts and one-hot embeddings each raw
output ``<C, f_i>`` then has variance std^2 whatever D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["INITS", "BOUNDARIES", "context_tensor", "classifier_tensor", "top_eigenvector", "random_unit"]

INITS = ("normal", "orthogonal", "identity")
BOUNDARIES = ("e1", "eig", "random")


def _randn(shape, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def context_tensor(d: int, D: int, scheme: str, std: float, generator: torch.Generator | None) -> Tensor:
    """A context tensor drawn by ``scheme``.

    Parameters
    ----------
    d, D : int
        Alphabet size and bond dimension.
    scheme : {"normal", "orthogonal", "identity"}
    std : float
        Scale of the random part (see the module docstring).
    generator : torch.Generator or None

    Returns
    -------
    Tensor, shape (d, D, D), float64 on the CPU
    """
    if scheme == "normal":
        return std * _randn((d, D, D), generator)
    if scheme == "orthogonal":
        Q, Rm = torch.linalg.qr(_randn((d, D, D), generator))
        # Fixing the signs of R's diagonal makes Q Haar-distributed (plain QR is biased).
        signs = torch.sign(torch.diagonal(Rm, dim1=-2, dim2=-1))
        signs[signs == 0] = 1.0
        return std * Q * signs.unsqueeze(-2)
    if scheme == "identity":
        eye = torch.eye(D, dtype=torch.float64).expand(d, D, D)
        return eye + std / math.sqrt(D) * _randn((d, D, D), generator)
    raise ValueError(f"init must be one of {INITS}, got {scheme!r}")


def classifier_tensor(d: int, D: int, c: int, std: float, generator: torch.Generator | None) -> Tensor:
    """``C`` with N(0, std^2) entries; shape (d, D, D, c), float64 on the CPU."""
    return std * _randn((d, D, D, c), generator)


def random_unit(D: int, generator: torch.Generator | None) -> Tensor:
    """A uniformly random unit vector; shape (D,), float64 on the CPU."""
    g = _randn((D,), generator)
    return g / torch.linalg.vector_norm(g)


def top_eigenvector(Mat: Tensor, *, left: bool) -> Tensor:
    """Unit real vector along the eigenvector of ``Mat`` with the largest ``|eigenvalue|``.

    Parameters
    ----------
    Mat : Tensor, shape (D, D)
    left : bool
        True: left eigenvector (``u^T Mat = lambda u^T``); False: right (``Mat v = lambda v``).

    Returns
    -------
    Tensor, shape (D,), float64 on the CPU

    Notes
    -----
    A complex dominant eigenvector is first rotated so that its largest-magnitude component is
    real and positive, then its real part is taken and normalised. The rotation makes the result
    independent of the arbitrary phase LAPACK returns and guarantees a nonzero real part. For a
    real eigenvector this only fixes the sign (largest component positive). Ties in ``|lambda|``
    (e.g. a complex-conjugate pair) go to the first eigenvalue LAPACK lists.
    """
    Mat = Mat.detach().to(device="cpu", dtype=torch.float64)
    if left:
        Mat = Mat.T
    vals, vecs = torch.linalg.eig(Mat)
    vec = vecs[:, int(torch.argmax(vals.abs()))]
    pivot = vec[int(torch.argmax(vec.abs()))]
    vec = vec * (pivot.abs() / pivot)
    re = vec.real
    return re / torch.linalg.vector_norm(re)
