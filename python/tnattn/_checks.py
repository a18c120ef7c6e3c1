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


def check_tensor(t, name: str) -> Tensor:
    """A dense (strided) torch.Tensor: sparse, mkldnn and nested tensors are refused by name.

    The kernels read raw strided memory, and torch's own errors for other layouts (raised deep
    inside ``contiguous()`` or ``data_ptr()``) do not say which argument was wrong.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; convert it with .to_dense()")
    if t.is_nested:
        raise TypeError(f"{name} must be a dense (strided) tensor, got a nested tensor")
    return t


_tensor = check_tensor


def check_grad(name: str, g, shape: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An incoming gradient of exactly the output's ``shape``, ``dtype`` and ``device``.

    The backward kernels read ``prod(shape)`` elements from it, so a smaller tensor would be read
    out of bounds.
    """
    g = check_tensor(g, name)
    if g.dtype != dtype:
        raise TypeError(f"{name} must have the output's dtype {dtype}, got {g.dtype}")
    if tuple(g.shape) != tuple(shape):
        raise ValueError(f"{name} must have the output's shape {tuple(shape)}, got {tuple(g.shape)}")
    if g.device != device:
        raise ValueError(f"{name} is on {g.device} but the inputs are on {device}")
    return g


def check_flags(name: str, flags, n: int) -> list[bool]:
    """A list of ``n`` bools (the ``needs`` argument of the backward ops)."""
    if not isinstance(flags, (list, tuple)) or len(flags) != n or not all(isinstance(f, bool) for f in flags):
        raise ValueError(f"{name} must be a list of {n} bools, got {flags!r}")
    return list(flags)


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


def check_x(x, d: int, dtype: torch.dtype, name: str = "x", *, allow_empty_batch: bool = False) -> XInfo:
    """Symbols (N, M) of uint8/int32/int64, or real embeddings (N, M, d) of ``dtype``.

    ``allow_empty_batch`` accepts N = 0 (the reference implementation returns empty results).
    """
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
    if N == 0 and not allow_empty_batch:
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


def check_symbol_range(x: Tensor, d: int, name: str = "x") -> None:
    """Integer symbols all in [0, d) (reads the data: one host synchronisation).

    For callers without a kernel that counts bad symbols (the reference implementation); the
    native ops leave this check to the kernel.
    """
    if x.is_floating_point() or x.numel() == 0:
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= d:
        raise ValueError(f"{name} holds symbols outside [0, d) = [0, {d}): min {lo}, max {hi}")


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


def check_same_device(**tensors: Tensor) -> torch.device:
    """All tensors on one device (any device: for the plain-PyTorch reference)."""
    devs = {name: t.device for name, t in tensors.items()}
    first_name, first = next(iter(devs.items()))
    for name, dev in devs.items():
        if dev != first:
            raise ValueError(f"{name} is on {dev} but {first_name} is on {first}; put all inputs on one device")
    return first


def check_contexts_args(A, x, boundary, *, native: bool = True) -> tuple[XInfo, int, int, bool]:
    """Arguments of ``contexts(A, x, boundary)``: returns (sizes of x, d, D, per-sequence boundary).

    ``native=False`` (the reference implementation) accepts an empty batch and any device.
    """
    A = check_params("A", A)
    d, D = A.shape[0], A.shape[1]
    xi = check_x(x, d, A.dtype, allow_empty_batch=not native)
    per_batch = check_boundary(boundary, xi.N, D, A.dtype, "boundary")
    (check_devices if native else check_same_device)(A=A, x=x, boundary=boundary)
    return xi, d, D, per_batch


def check_tn_attention_args(x, A_left, A_right, C, u, v, *, native: bool = True) -> tuple[XInfo, int, int, int, bool, bool]:
    """Arguments of ``tn_attention``: returns (sizes of x, d, D, c, per-sequence u, per-sequence v).

    ``native=False`` as in :func:`check_contexts_args`.
    """
    A_left = check_params("A_left", A_left)
    A_right = check_params("A_right", A_right)
    d, D = A_left.shape[0], A_left.shape[1]
    if A_right.dtype != A_left.dtype:
        raise TypeError(f"A_right has dtype {A_right.dtype} but A_left has {A_left.dtype}")
    if A_right.shape != A_left.shape:
        raise ValueError(
            f"A_right has shape {tuple(A_right.shape)} but A_left has {tuple(A_left.shape)}; "
            "both must be (d, D, D)"
        )
    check_tensor(C, "C")
    if C.dtype != A_left.dtype:
        raise TypeError(f"C has dtype {C.dtype} but A_left has {A_left.dtype}")
    if C.dim() != 4 or C.shape[0] != d or C.shape[1] != D or C.shape[2] != D:
        raise ValueError(f"C must have shape (d, D, D, c) = ({d}, {D}, {D}, c), got {tuple(C.shape)}")
    c = C.shape[3]
    if c == 0:
        raise ValueError("C has c = 0 outputs; need c >= 1")
    xi = check_x(x, d, A_left.dtype, allow_empty_batch=not native)
    u_pb = check_boundary(u, xi.N, D, A_left.dtype, "u")
    v_pb = check_boundary(v, xi.N, D, A_left.dtype, "v")
    (check_devices if native else check_same_device)(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
    return xi, d, D, c, u_pb, v_pb
