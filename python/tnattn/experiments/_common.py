"""What the experiment modules share: their settings' fields, progress bars and the locked run.

Every experiment's ``run(config)`` checks its settings again, locks ``config.out`` and runs its
body (:func:`run_locked`); the Monte Carlo experiments share the field of the grokking-time
convention (:func:`grokking_definition_field`).
"""

from __future__ import annotations

import time
from dataclasses import field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from tnattn._fields import require
from tnattn.io import result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.metrics import GROKKING_DEFINITIONS

__all__ = ["option", "grokking_definition_field", "check_choices", "progress_bar", "run_locked"]

T = TypeVar("T")


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and its ``--flag`` help (extra keys, e.g. ``choices``, go
    into the metadata the CLI reads)."""
    return field(default=default, metadata={"help": help, **kw})


def grokking_definition_field() -> Any:
    """The ``grokking_definition`` field: which zero-error time ``t_train``/``t_eps`` name
    (:data:`tnattn.metrics.GROKKING_DEFINITIONS`; default the paper's first zero)."""
    return option("first_zero", "t_train/t_eps: first time with zero error (the paper's) or first time from which "
                  "it stays zero", choices=GROKKING_DEFINITIONS)  # fmt: skip


def check_choices(config: Any, *names: str) -> None:
    """Each named field of ``config`` must hold one of its ``metadata["choices"]``.

    Raises
    ------
    ConfigError
        Naming the first field that does not, with its choices and value.
    """
    declared = {f.name: f.metadata["choices"] for f in fields(config) if f.name in names}
    for name in names:
        value = getattr(config, name)
        require(value in declared[name], name, f"must be one of {declared[name]}, got {value!r}")


def progress_bar(it: Iterable[T], progress: bool, desc: str) -> Iterable[T]:
    """``it`` behind a tqdm bar labelled ``desc`` when ``progress`` is true, else ``it`` itself."""
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc)


def run_locked(config: Any, body: Callable[[Any], dict], *, name: str, plot: Callable[[dict, Path], Any], png: str,
               summary: Callable[[dict], dict] = dict) -> dict:  # fmt: skip
    """Check ``config`` again, run ``body(config)`` with ``config.out`` locked, draw and write and
    return its results.

    The fields may have been changed after construction, hence the second check. Nothing is
    resumed (a rerun of a Monte Carlo experiment recomputes everything); the lock keeps two runs
    from writing one folder. The results get ``seconds`` (the time ``body`` took); ``plot(results,
    path)`` draws them into ``config.out/png`` and ``summary(results)`` (default: all of them) goes
    into ``results.json`` (:func:`tnattn.io.result_envelope` of experiment ``name``).
    """
    config.__post_init__()
    with lock_directory(config.out, "experiment directory"):
        t_start = time.time()
        results = body(config)
        results["seconds"] = time.time() - t_start
        out = Path(config.out)
        plot(results, out / png)
        write_json(out / "results.json", result_envelope(name, config, summary(results)))
        return results
