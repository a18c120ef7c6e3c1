"""What this build of the native kernels is, and which CPU code path runs.

The CPU kernels are compiled once per instruction set (x86-64: ``baseline`` SSE2, ``avx2`` with
FMA, ``avx512``; other architectures: ``baseline`` only) and the best copy that the CPU supports is
chosen when :mod:`tnattn._C` loads, so one wheel runs on every CPU of its architecture. The
environment variable ``TNATTN_CPU_ISA`` (read when :mod:`tnattn` is imported) or
:func:`set_cpu_isa` selects a lower copy, for tests and comparisons. Float32 results agree between
copies to rounding (the summation order inside a mat-vec follows the register width); float64
results agree with :mod:`tnattn.reference` on every copy.
"""

from __future__ import annotations

import os

from tnattn import _C

__all__ = ["build_info", "cpu_isa", "cpu_isas", "set_cpu_isa"]

ENV_VAR = "TNATTN_CPU_ISA"


def cpu_isas() -> list[str]:
    """Instruction-set copies of the CPU kernels that this CPU can run, worst to best."""
    return [s for s in _C.cpu_isas_supported().split(",") if s]


def cpu_isa() -> str:
    """The instruction-set copy of the CPU kernels in use (``"baseline"``, ``"avx2"`` or ``"avx512"``)."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> str:
    """Use the instruction-set copy ``name`` for every later CPU kernel call in this process.

    Parameters
    ----------
    name : str
        ``"baseline"``, ``"avx2"``, ``"avx512"`` or ``"best"`` (the best one this CPU runs).

    Returns
    -------
    str
        The copy in use before the call (pass it back to restore).

    Raises
    ------
    ValueError
        If ``name`` is not compiled into this build or this CPU cannot run it.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    previous = _C.cpu_isa()
    target = cpu_isas()[-1] if name == "best" else name
    if not _C.set_cpu_isa(target):
        compiled = _C.cpu_isas_compiled()
        raise ValueError(
            f"CPU instruction set {name!r} is not available: this build has {compiled!r}, "
            f"this CPU runs {', '.join(cpu_isas())!r}"
        )
    return previous


def build_info() -> dict:
    """How the native extension was built and which code paths it uses.

    Returns
    -------
    dict
        ``cpu_isa`` (the CPU kernel copy in use), ``cpu_isas`` (the copies this CPU runs),
        ``cpu_isas_compiled`` (all compiled copies), ``compiler``, ``cxx_flags``, ``native``
        (built with ``-march=native``), ``cuda`` (built with the CUDA kernels) and ``version``.
    """
    from tnattn import __version__

    return {
        "version": __version__,
        "cpu_isa": _C.cpu_isa(),
        "cpu_isas": cpu_isas(),
        "cpu_isas_compiled": [s for s in _C.cpu_isas_compiled().split(",") if s],
        "compiler": _C.BUILD_COMPILER,
        "cxx_flags": " ".join(_C.BUILD_FLAGS.split()),
        "native": bool(_C.BUILD_NATIVE),
        "cuda": bool(_C.has_cuda()),
    }


def _apply_env() -> None:
    """Honour ``TNATTN_CPU_ISA`` at import; a bad value is an error, not a silent fallback."""
    name = os.environ.get(ENV_VAR, "").strip()
    if name:
        try:
            set_cpu_isa(name)
        except ValueError as exc:
            raise ImportError(f"{ENV_VAR}={name!r}: {exc}") from None


_apply_env()
