"""tnattn: tensor-network attention students for local sequence-to-sequence rules.

Layers, left to right; data flows to the right and a module imports only from its own layer or
layers to its left::

    csrc (C++/CUDA kernels; tnattn._C, one binding table)
      -> tnattn.ops          one op set over (E, ...) member stacks; one model is E = 1
      -> tnattn.models       TNAttention with E members; models.head (head and losses, written once);
                             models.functional (the forward pass over Params)
      -> tnattn.train        Trainer(config, seeds); member sets (train.members); callbacks per
                             member; MemberHistory
      -> tnattn.experiments  Scenario A/B, perceptron theory, structure
      -> tnattn.cli          the ``tnattn`` command

``tnattn.ensemble`` holds what E members add: ``steps``, ``evaluators`` and ``optim`` (under the
trainer, which imports them), ``fused`` (Scenario A's step in one kernel call), ``allstrings``,
``stats``, ``nu_budget``, and ``distributed`` (members sharded over ranks, above the trainer), plus
deprecated aliases for one release.

Beside the layers: ``tnattn.reference`` (the pure-PyTorch oracle of every op), ``tnattn.rules``
(teachers) with ``tnattn.teachers`` (the registry a training config names its teacher from),
``tnattn.data``, ``tnattn.metrics``, ``tnattn.theory`` (perceptron grokking models),
``tnattn.structure``, ``tnattn.plots``, ``tnattn.io`` and ``tnattn.bench``.

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
