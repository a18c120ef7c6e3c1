"""Argument validation shared by the tnattn ops (real and fake kernels).

Every check works on fake/meta tensors too (shapes, dtypes and devices only, never data), so the
same function runs in the real kernel, in ``register_fake`` and under ``torch.compile``. Errors name
the offending argument: ``TypeError`` for wrong types/dtypes, ``ValueError`` for wrong shapes/sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Integer dtypes accepted for symbol inputs, mapped to the kernel's ``x_kind`` code.
SYMBOL_DTYPES = {torch.uint8: 0, torch.int32: 1, torch.int64: 2}
#: ``x_kind`` code of real embeddings (same floating dtype as the parameters).
X_REAL = 3
FLOAT_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class XInfo:
    """Sizes of an input sequence batch: N sequences of length M, kernel kind code."""

    N: int
    M: int
    kind: int

    @property
    def real(self) -> bool:
        return self.kind == X_REAL


def _tensor(t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_params(name: str, A, *, ndim: int = 3) -> Tensor:
    """A context tensor (d, D, D) of float32/float64 (``ndim`` counts all dimensions)."""
    A = _tensor(A, name)
    if A.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {A.dtype}")
    if A.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions (d, D, D), got shape {tuple(A.shape)}")
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must hold square matrices (..., D, D), got shape {tuple(A.shape)}")
    if A.shape[-1] == 0 or A.shape[-3] == 0:
        raise ValueError(f"{name} must have d >= 1 and D >= 1, got shape {tuple(A.shape)}")
    return A


def check_x(x, d: int, dtype: torch.dtype, name: str = "x") -> XInfo:
    """Symbols (N, M) of uint8/int32/int64, or real embeddings (N, M, d) of ``dtype``."""
    x = _tensor(x, name)
    if x.is_floating_point():
        if x.dtype != dtype:
            raise TypeError(f"real embeddings {name} must have the parameters' dtype {dtype}, got {x.dtype}")
        if x.dim() != 3:
            raise ValueError(f"real embeddings {name} must have shape (N, M, d), got {tuple(x.shape)}")
        if x.shape[2] != d:
            raise ValueError(f"{name} has {x.shape[2]} embedding channels but the alphabet size is d={d}")
        kind = X_REAL
    else:
        if x.dtype not in SYMBOL_DTYPES:
            raise TypeError(f"symbols {name} must be uint8, int32 or int64 (or real embeddings), got {x.dtype}")
        if x.dim() != 2:
            raise ValueError(f"symbols {name} must have shape (N, M), got {tuple(x.shape)}")
        kind = SYMBOL_DTYPES[x.dtype]
    N, M = x.shape[0], x.shape[1]
    if N == 0:
        raise ValueError(f"{name} has an empty batch (N = 0); pass at least one sequence")
    if M == 0:
        raise ValueError(f"{name} has length M = 0; sequences must have at least one site")
    return XInfo(N, M, kind)


def check_boundary(b, N: int, D: int, dtype: torch.dtype, name: str) -> bool:
    """A boundary vector (D,) or per-sequence (N, D); returns True when per-sequence."""
    b = _tensor(b, name)
    if b.dtype != dtype:
        raise TypeError(f"{name} must have the parameters' dtype {dtype}, got {b.dtype}")
    if b.dim() == 1:
        if b.shape[0] != D:
            raise ValueError(f"{name} must have shape (D,) = ({D},) or (N, D), got {tuple(b.shape)}")
        return False
    if b.dim() == 2:
        if b.shape[0] != N or b.shape[1] != D:
            raise ValueError(f"{name} must have shape (D,) or (N, D) = ({N}, {D}), got {tuple(b.shape)}")
        return True
    raise ValueError(f"{name} must have shape (D,) or (N, D), got {tuple(b.shape)}")


def _cuda_built() -> bool:
    from . import _C

    return bool(_C.has_cuda())


def check_devices(**tensors: Tensor) -> torch.device:
    """All tensors on one device, and one the build supports (CPU; CUDA when built with it)."""
    devs = {name: t.device for name, t in tensors.items()}
    first_name, first = next(iter(devs.items()))
    for name, dev in devs.items():
        if dev != first:
            raise ValueError(f"{name} is on {dev} but {first_name} is on {first}; put all inputs on one device")
    if first.type == "cuda":
        if not _cuda_built():
            raise ValueError(
                f"inputs are on {first}, but tnattn was built without its CUDA kernels; move them to the "
                "CPU or rebuild with TNATTN_CUDA=ON (pip install --no-build-isolation -C "
                "cmake.define.TNATTN_CUDA=ON .)"
            )
    elif first.type not in ("cpu", "meta"):
        raise ValueError(f"inputs are on {first}; tnattn runs on cpu and cuda tensors only")
    return first
