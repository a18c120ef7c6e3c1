"""tnattn: tensor-network attention students for local sequence-to-sequence rules.

Layers, left to right (a module only imports from layers to its left)::

    tnattn._C (C++/CUDA kernels) -> tnattn.ops (torch custom ops over (E, ...) member stacks;
      one model is E = 1) -> tnattn.models -> tnattn.train -> tnattn.experiments -> tnattn.cli

``tnattn.ensemble`` trains E members at once; its modules sit beside those of one model and import
from them (and use ``tnattn.ops`` directly; the model of E members is ``tnattn.models.TNAttention``),
``ensemble.optim``, ``ensemble.steps`` and ``ensemble.evaluators`` under the one
trainer ``tnattn.train.Trainer`` (E >= 1 members), and ``ensemble.distributed`` (members sharded over
ranks) above it.

Beside them: ``tnattn.reference`` (the pure-PyTorch oracle of every op), ``tnattn.rules``
(teachers) with ``tnattn.teachers`` (the registry a training config names its teacher from),
``tnattn.data``, ``tnattn.metrics``, ``tnattn.theory`` (perceptron grokking models)
and ``tnattn.plots``.

The most used names are importable from the top level; the heavier modules (``metrics``,
``theory``, ``experiments``, ``plots``) load on first attribute access so that ``import tnattn``
stays cheap.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

# torch's OpenMP worker threads spin for a while after every parallel torch operation; on a machine
# with few cores they then compete with the kernels' own threads (tnattn.ops runs its C++ kernels
# on a pool of std::threads). Measured with `tnattn bench kernels --threads 2` on a 2-core machine:
# 1.2-1.7x faster forward and forward+backward with passive waiting (docs/benchmarks.md). libgomp
# reads the setting when torch loads, so it applies only when tnattn is imported before torch, and
# never overrides a value the user set (OMP_WAIT_POLICY=ACTIVE restores spinning).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tnattn import data, ops, reference, rules, teachers  # noqa: E402
from tnattn.buildinfo import build_info  # noqa: E402
from tnattn.data import all_sequences, make_test_sets, random_sequences, site_error  # noqa: E402
from tnattn.models import (  # noqa: E402
    NonFiniteParameterError,
    TNAttention,
    TNAttentionStack,
    exact_contexts,
    exact_local_rule,
    exact_rule30,
)
from tnattn.ops import contexts, tn_attention  # noqa: E402
from tnattn.rules import LocalRule, elementary, from_truth_table, random_rule  # noqa: E402
from tnattn.train import (  # noqa: E402
    PRESETS,
    Callback,
    Trainer,
    TrainConfig,
    TrainResult,
    load_run_config,
    preset,
    train,
)

_LAZY_MODULES = ("metrics", "theory", "experiments", "plots", "scenario_b", "structure", "ensemble", "bench", "io", "loggers")

__all__ = [
    "__version__",
    "build_info",
    # ops
    "contexts",
    "tn_attention",
    # teachers and data
    "LocalRule",
    "elementary",
    "random_rule",
    "from_truth_table",
    "all_sequences",
    "random_sequences",
    "make_test_sets",
    "site_error",
    # models
    "TNAttention",
    "TNAttentionStack",
    "NonFiniteParameterError",
    "exact_rule30",
    "exact_local_rule",
    "exact_contexts",
    # training
    "TrainConfig",
    "train",
    "Trainer",
    "TrainResult",
    "Callback",
    "preset",
    "PRESETS",
    "load_run_config",
    # modules
    "ops",
    "reference",
    "rules",
    "teachers",
    "data",
    *_LAZY_MODULES,
]


def __getattr__(name: str):
    # Lazy submodules: scipy/matplotlib are only imported by users who need them.
    if name in _LAZY_MODULES:
        return importlib.import_module(f"tnattn.{name}")
    raise AttributeError(f"module 'tnattn' has no attribute {name!r}")
