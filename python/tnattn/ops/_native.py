"""The only caller of :mod:`tnattn._C`: device choice, kernel threads, CUDA workspace, bad symbols.

Every native op (:mod:`tnattn.ops._core`, :mod:`tnattn.ops.heads`) hands its checked, contiguous
buffers to :func:`call`, which runs the entry point on the device of the tensors:

* CPU: the threaded kernels with :func:`num_threads` threads (:class:`kernel_threads`, else
  ``torch.get_num_threads()``);
* CUDA (an extension built with ``TNATTN_CUDA``, see ``_C.has_cuda()``): the CUDA kernels on that
  device and torch's current stream there, with a workspace allocator
  that hands out torch tensors from the caching allocator (kept alive until the call returns;
  reuse by later work on the same stream is stream-ordered). The C++ side makes the device
  current for the call and restores the previous one.

The entry points return the number of sequences that hold a symbol outside [0, d); :func:`call`
turns a non-zero count into the ``ValueError`` every op raises.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from .. import _C

__all__ = ["call", "kernel_threads", "num_threads"]

# Threads of the fused kernels; None = torch.get_num_threads(). Separate from torch's intra-op
# threads so that a trainer can run the many small elementwise torch ops on one thread (on a busy
# machine every OpenMP region waits for its slowest, possibly descheduled, thread) while the kernel
# calls, which hold nearly all of the work, still use every core. Per Python thread: two threads
# that each set their own count must neither see nor undo each other's setting.
class _Setting(threading.local):
    # Class attributes: the defaults every thread sees until it sets its own (a getattr that has
    # to fall back from a missing attribute costs about 1 us, which the eager ops pay per call).
    n: int | None = None
    stack: list | None = None


_KERNEL_THREADS = _Setting()


def _setting() -> int | None:
    return _KERNEL_THREADS.n


def num_threads() -> int:
    """Threads the CPU kernels use for the next call from this Python thread."""
    n = _KERNEL_THREADS.n
    return max(1, torch.get_num_threads() if n is None else n)


class kernel_threads:
    """Context manager: the native CPU kernels use ``n`` threads inside the block (None = torch's).

    The setting belongs to the calling Python thread: other threads keep their own (default None)
    and the previous value of this thread is restored on exit, also when the block raises and
    when one instance is entered again inside itself.

    Parameters
    ----------
    n : int or None
        Thread count (>= 1), or None for ``torch.get_num_threads()``.

    Raises
    ------
    ValueError
        ``n`` is not None and not an int >= 1.
    """

    def __init__(self, n: int | None):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be an int >= 1 or None, got {n!r}")
        self.n = n

    def __enter__(self):
        stack = _KERNEL_THREADS.stack
        if stack is None:
            stack = _KERNEL_THREADS.stack = []
        stack.append(_setting())
        _KERNEL_THREADS.n = self.n
        return self

    def __exit__(self, *exc):
        _KERNEL_THREADS.n = _KERNEL_THREADS.stack.pop()
        return False


def call(fn_name: str, *args, like: Tensor, d: int) -> None:
    """Run the entry point ``fn_name`` of :mod:`tnattn._C` on the device of ``like``.

    ``args`` are the fields of the entry point's parameter struct (csrc/include/tnattn/api.h, in
    the order of the binding table csrc/bindings.cpp); the execution argument follows from the
    device (see the module docstring): the thread count on the CPU, ``(device index, stream,
    allocator)`` on CUDA. ``d`` is the alphabet size, for the error message.

    Raises
    ------
    ValueError
        The kernel found sequences with a symbol outside [0, d).
    """
    dev = like.device
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        keep: list[Tensor] = []

        def alloc(nbytes: int) -> int:
            buf = torch.empty(max(int(nbytes), 1), dtype=torch.uint8, device=dev)
            keep.append(buf)
            return buf.data_ptr()

        stream = torch.cuda.current_stream(dev).cuda_stream
        bad = getattr(_C, fn_name)(*args, (index, stream, alloc))
    else:
        bad = getattr(_C, fn_name)(*args, num_threads())
    if bad:
        raise ValueError(f"x holds symbols outside [0, d) = [0, {d}) in {bad} sequence(s)")


def ptr(t: Tensor | None) -> int:
    """A buffer's address for the kernels; 0 (null) for a gradient that is not wanted."""
    return 0 if t is None else t.data_ptr()
