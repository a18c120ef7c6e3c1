"""Argument validation shared by the tnattn ops (real and fake kernels).

Every check works on fake/meta tensors too (shapes, dtypes and devices only, never data), so the
same function runs in the real kernel, in ``register_fake`` and under ``torch.compile``. Errors name
the offending argument: ``TypeError`` for wrong types/dtypes, ``ValueError`` for wrong shapes/sizes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Integer dtypes accepted for symbol inputs, mapped to the kernel's ``x_kind`` code.
SYMBOL_DTYPES = {torch.uint8: 0, torch.int32: 1, torch.int64: 2}
#: ``x_kind`` code of real embeddings (same floating dtype as the parameters).
X_REAL = 3
FLOAT_DTYPES = (torch.float32, torch.float64)


class XInfo(NamedTuple):
    """Sizes of an input sequence batch: N sequences of length M, kernel kind code.

    A named tuple, not a frozen dataclass: one is built on every op call, and a frozen dataclass
    costs several times as much to construct."""

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


_CPU = torch.device("cpu")


def check_devices(**tensors: Tensor) -> torch.device:
    """All tensors on one device, and one the build supports (CPU; CUDA when built with it)."""
    if all(t.is_cpu for t in tensors.values()):
        return _CPU  # the common case, without building a torch.device per tensor (eager ops pay per call)
    first = check_same_device(**tensors)
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


# ------------------------------------------------------------------------------------------------
# The native ops' layout: one argument check for the single-model call and for (E, ...) stacks


class Layout:
    """Geometry of one native op call, as the kernels see it (always with a member dimension E).

    ``stacked`` is False for the single-model call (parameters without E): the kernels then run it
    as E = 1, and outputs and gradients drop the leading E. ``x_shared``: one batch for all
    members (X = 1 in tnattn/api.h). ``u_pb``/``v_pb``: per-sequence boundary vectors (for
    ``contexts``, ``u_pb`` is its boundary's flag). A plain class with slots: built on every call.
    """

    __slots__ = ("stacked", "E", "N", "M", "d", "D", "c", "kind", "x_shared", "u_pb", "v_pb", "lead")

    def __init__(self, stacked, E, N, M, d, D, c, kind, x_shared, u_pb, v_pb):
        self.stacked, self.E, self.N, self.M, self.d, self.D, self.c = stacked, E, N, M, d, D, c
        self.kind, self.x_shared, self.u_pb, self.v_pb = kind, x_shared, u_pb, v_pb
        #: The member dimension of outputs: (E,) for stacks, () for the single-model call.
        self.lead = (E,) if stacked else ()

    @property
    def real(self) -> bool:
        return self.kind == X_REAL

    def grad_boundary(self, g: Tensor, per_batch: bool) -> Tensor:
        """A boundary gradient as the kernel wrote it (per sequence) summed to its input's shape."""
        return g if per_batch else g.sum(1 if self.stacked else 0)

    def grad_boundary_shape(self, per_batch: bool) -> tuple:
        return (*self.lead, self.N, self.D) if per_batch else (*self.lead, self.D)

    def grad_x_shape(self) -> tuple:
        """Shape of ``x``'s gradient (real embeddings): that of ``x`` itself."""
        return (self.N, self.M, self.d) if (self.x_shared or not self.stacked) else (self.E, self.N, self.M, self.d)


def check_stacked(name: str, A, ndim: int) -> Tensor:
    """A stacked parameter (E, d, D, D[, c]) of float32/float64 with E, d, D >= 1."""
    check_tensor(A, name)
    if A.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {A.dtype}")
    layout = "(E, d, D, D)" if ndim == 4 else "(E, d, D, D, c)"
    if A.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {tuple(A.shape)}")
    if A.shape[2] != A.shape[3]:
        raise ValueError(f"{name} must hold square matrices {layout}, got shape {tuple(A.shape)}")
    if min(A.shape[:4]) == 0:
        raise ValueError(f"{name} must have E >= 1, d >= 1 and D >= 1, got shape {tuple(A.shape)}")
    return A


def check_stacked_x(x, E: int, d: int, dtype: torch.dtype) -> tuple[XInfo, bool]:
    """(sizes, shared) of a stacked call's inputs: symbols (E, N, M) per member or (N, M) shared,
    real embeddings (E, N, M, d) per member or (N, M, d) shared (the dtype decides)."""
    check_tensor(x, "x")
    per_member_dim = 4 if x.is_floating_point() else 3
    if x.dim() == per_member_dim:
        if x.shape[0] != E:
            raise ValueError(f"x has {x.shape[0]} members in its leading dimension but the parameters have E = {E}")
        return check_x(x[0], d, dtype), False
    if x.dim() == per_member_dim - 1:
        return check_x(x, d, dtype), True
    what = "real embeddings (E, N, M, d) or (N, M, d)" if x.is_floating_point() else "symbols (E, N, M) or (N, M)"
    raise ValueError(f"x must hold {what}, got shape {tuple(x.shape)}")


def check_stacked_boundary(b, E: int, N: int, D: int, dtype: torch.dtype, name: str) -> bool:
    """A stacked boundary (E, D) or per-sequence (E, N, D); returns True when per-sequence."""
    check_tensor(b, name)
    if b.dtype != dtype:
        raise TypeError(f"{name} must have the parameters' dtype {dtype}, got {b.dtype}")
    if b.dim() == 2 and tuple(b.shape) == (E, D):
        return False
    if b.dim() == 3 and tuple(b.shape) == (E, N, D):
        return True
    raise ValueError(f"{name} must have shape (E, D) = ({E}, {D}) or (E, N, D) = ({E}, {N}, {D}), got {tuple(b.shape)}")


def contexts_layout(A, x, boundary, *, stacked: bool | None = None) -> Layout:
    """Check the arguments of the native ``contexts`` op; ``stacked`` None: decided by ``A``'s rank."""
    if stacked is None:  # a non-tensor takes the single-model checks, which name it
        stacked = isinstance(A, Tensor) and A.dim() == 4
    if not stacked:
        xi, d, D, per_batch = check_contexts_args(A, x, boundary)
        return Layout(False, 1, xi.N, xi.M, d, D, 1, xi.kind, False, per_batch, False)
    A = check_stacked("A", A, 4)
    E, d, D = A.shape[0], A.shape[1], A.shape[2]
    xi, shared = check_stacked_x(x, E, d, A.dtype)
    per_batch = check_stacked_boundary(boundary, E, xi.N, D, A.dtype, "boundary")
    check_devices(A=A, x=x, boundary=boundary)
    return Layout(True, E, xi.N, xi.M, d, D, 1, xi.kind, shared, per_batch, False)


def tn_attention_layout(x, A_left, A_right, C, u, v, *, stacked: bool | None = None) -> Layout:
    """Check the arguments of the native ``tn_attention`` op; ``stacked`` as in :func:`contexts_layout`."""
    if stacked is None:
        stacked = isinstance(A_left, Tensor) and A_left.dim() == 4
    if not stacked:
        xi, d, D, c, u_pb, v_pb = check_tn_attention_args(x, A_left, A_right, C, u, v)
        return Layout(False, 1, xi.N, xi.M, d, D, c, xi.kind, False, u_pb, v_pb)
    A_left = check_stacked("A_left", A_left, 4)
    A_right = check_stacked("A_right", A_right, 4)
    E, d, D = A_left.shape[0], A_left.shape[1], A_left.shape[2]
    if A_right.dtype != A_left.dtype:
        raise TypeError(f"A_right has dtype {A_right.dtype} but A_left has {A_left.dtype}")
    if A_right.shape != A_left.shape:
        raise ValueError(f"A_right has shape {tuple(A_right.shape)} but A_left has {tuple(A_left.shape)}")
    C = check_stacked("C", C, 5)
    if C.dtype != A_left.dtype:
        raise TypeError(f"C has dtype {C.dtype} but A_left has {A_left.dtype}")
    if tuple(C.shape[:4]) != (E, d, D, D):
        raise ValueError(f"C must have shape (E, d, D, D, c) = ({E}, {d}, {D}, {D}, c), got {tuple(C.shape)}")
    c = C.shape[4]
    if c == 0:
        raise ValueError("C has c = 0 outputs; need c >= 1")
    xi, shared = check_stacked_x(x, E, d, A_left.dtype)
    u_pb = check_stacked_boundary(u, E, xi.N, D, A_left.dtype, "u")
    v_pb = check_stacked_boundary(v, E, xi.N, D, A_left.dtype, "v")
    check_devices(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
    return Layout(True, E, xi.N, xi.M, d, D, c, xi.kind, shared, u_pb, v_pb)
