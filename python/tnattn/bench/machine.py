"""The machine header of every benchmark: CPU, threads, torch build and BLAS, GPU; the sgemm rate.

The sgemm rate (a large float32 matrix product through ``torch.mm``) is the practical dense peak the
roofline percentages are measured against; it is measured in the same process and thread setting as
the numbers it normalises.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from tnattn.bench.timing import median_time

__all__ = ["cpu_model", "cpu_simd_flags", "torch_blas", "gpu_name", "machine_header", "format_header", "gemm_gflops"]

_SIMD = ("avx2", "fma", "avx512f", "avx512vl", "avx512_bf16", "amx_tile", "neon", "asimd", "sve")


def _cpuinfo_field(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """CPU model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_simd_flags() -> str:
    """The SIMD extensions among a few that matter for the kernels (space separated)."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split())
    return " ".join(f for f in _SIMD if f in flags)


def torch_blas() -> str:
    """BLAS/LAPACK of this torch build, from ``torch.__config__.show()``."""
    cfg = torch.__config__.show().replace("\n", ",")
    for key in ("BLAS_INFO=", "LAPACK_INFO="):
        for part in cfg.split(","):
            if key in part:
                return part[part.index(key):].strip()
    return "MKL" if torch.backends.mkl.is_available() else "unknown"


def gpu_name() -> str | None:
    """Name of the current CUDA device, or None."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.cuda.current_device())


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_header(device: str = "cpu") -> dict:
    """Facts about the machine and software the numbers depend on.

    Parameters
    ----------
    device : str
        The device the benchmark runs on ("cpu" or "cuda").

    Returns
    -------
    dict
        CPU model, SIMD flags, the kernels' instruction-set path in use and those this CPU runs,
        the build (compiler, -march=native or not, CUDA), logical CPUs, torch threads, load average (other jobs on the same
        cores slow the measurements down), torch version and BLAS, CUDA version and GPU if any,
        Python and tnattn versions, date.
    """
    import tnattn

    info = tnattn.build_info()
    return {
        "cpu": cpu_model(),
        "simd": cpu_simd_flags(),
        "cpu_isa": info["cpu_isa"],
        "cpu_isas": ",".join(info["cpu_isas"]),
        "build": f"{info['compiler']}; native={info['native']}; cuda={info['cuda']}",
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": _load_average(),
        "torch": torch.__version__,
        "blas": torch_blas(),
        "cuda": torch.version.cuda,
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "tnattn": getattr(tnattn, "__version__", "unknown"),
        "device": device,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def format_header(header: dict) -> str:
    """``# key: value`` lines (floats with one decimal)."""
    lines = []
    for k, v in header.items():
        lines.append(f"# {k}: {v:.1f}" if isinstance(v, float) else f"# {k}: {v}")
    return "\n".join(lines)


def gemm_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix product (``torch.mm``), 2 n^3 flops, median of repeats."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    t = median_time(lambda: torch.mm(a, b), device=device, warmup=2, repeats=repeats, budget_s=5.0)
    return 2.0 * n**3 / t.median_s / 1e9
