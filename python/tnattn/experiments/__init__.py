"""Experiments: one module per experiment, each a ``Config`` dataclass and ``run(config)``.

Every experiment module defines

- ``Config``: a dataclass whose fields (with defaults and ``metadata={"help": ...}``) are the
  experiment's settings; the CLI turns the fields into ``--flags`` automatically;
- ``run(config) -> dict``: runs the experiment, writes its JSON results (with
  :func:`tnattn.io.result_envelope`) and PNG figures into ``config.out`` and returns the results.

So the same experiment runs from Python, from the CLI (``tnattn experiment NAME``) and from the
tests (with a tiny config).

Settings are checked when the ``Config`` is built (:class:`~tnattn.errors.ConfigError`, one line
and exit status 2 on the command line), so a study never fails on a bad value after it started.
An experiment folder is locked while an experiment runs in it (:mod:`tnattn.locks`). Reruns into
the same folder: ``perceptron-1d``, ``perceptron-ball`` and ``scenario-b`` keep no training state
and recompute everything (``results.json`` carries the new settings); ``scenario-a`` and
``structure`` continue their training state, allow only output and analysis settings to change and
the epoch limit to grow, and refuse any other change (:mod:`tnattn.experiments._rerun`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXPERIMENTS", "load"]

#: Experiment name (as typed on the command line) -> module path.
EXPERIMENTS: dict[str, str] = {
    "perceptron-1d": "tnattn.experiments.perceptron_1d",
    "perceptron-ball": "tnattn.experiments.perceptron_ball",
    "scenario-b": "tnattn.experiments.scenario_b",
    "scenario-a": "tnattn.experiments.scenario_a",
    "structure": "tnattn.experiments.structure",
}


def load(name: str) -> ModuleType:
    """Import the module of experiment ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a known experiment.
    """
    try:
        module_path = EXPERIMENTS[name]
    except KeyError:
        known = ", ".join(sorted(EXPERIMENTS))
        raise ValueError(f"unknown experiment {name!r}; known experiments: {known}") from None
    return importlib.import_module(module_path)
