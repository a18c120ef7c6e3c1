"""Ensembles: thousands of independent TN-attention students per kernel call.

- :mod:`tnattn.ensemble.ops`: ``tnattn::tn_attention_ensemble`` / ``tnattn::contexts_ensemble``
  custom ops (E parameter sets, per-member or shared batches, per-member gradients);
- :class:`EnsembleTNAttention`: stacked parameters (E, ...), members initialised exactly like
  ``TNAttention(..., generator=torch.Generator().manual_seed(seed))``;
- ``EnsembleTrainer`` / ``EnsembleResult``: deprecated aliases (one release) of
  :class:`tnattn.train.Trainer` (E members at once) and :class:`tnattn.train.FitResult`;
- :mod:`tnattn.ensemble.stats`: grokking-time histograms, the aligned ensemble average of the test
  error with the fitted nu, D_eff around grokking, the full-protocol cost projected from a run;
- :mod:`tnattn.ensemble.fused`: Scenario A's training step (forward, head, squared-error loss,
  backward) as one kernel call, which the trainer takes when it applies;
- :mod:`tnattn.ensemble.allstrings`: exact predictions on all d**M strings through shared
  prefix/suffix contexts (the trainer's training-error evaluation on the CPU);
- :mod:`tnattn.ensemble.distributed`: members sharded over ``torch.distributed`` ranks.
"""

from tnattn.ensemble.allstrings import all_strings_predict, all_strings_wrong_fraction, is_all_strings
from tnattn.ensemble.distributed import MergedResult, init_distributed, load_merged, run_ensemble, shard_members
from tnattn.ensemble.model import EnsembleTNAttention, StackedParams, ensemble_contexts, ensemble_logits
from tnattn.ensemble.ops import contexts_ensemble, kernel_threads, tn_attention_ensemble
from tnattn.ensemble.stats import aligned_mean, aligned_test_error, grokking_time_histogram, protocol_cost

_DEPRECATED = {"EnsembleTrainer": "Trainer", "EnsembleResult": "FitResult"}


def __getattr__(name: str):
    # The ensemble trainer became tnattn.train.Trainer (E >= 1 members); the old names stay one
    # release, with a DeprecationWarning when they are looked up.
    if name in _DEPRECATED:
        import importlib
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"tnattn.ensemble.{name} is deprecated; use tnattn.train.{new}", DeprecationWarning, stacklevel=2)
        # (tnattn.train as an attribute of tnattn is the train function, so import the module by name)
        return getattr(importlib.import_module("tnattn.train.trainer"), new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "contexts_ensemble",
    "tn_attention_ensemble",
    "kernel_threads",
    "EnsembleTNAttention",
    "StackedParams",
    "ensemble_logits",
    "ensemble_contexts",
    "EnsembleTrainer",
    "EnsembleResult",
    "grokking_time_histogram",
    "aligned_test_error",
    "aligned_mean",
    "protocol_cost",
    "all_strings_predict",
    "all_strings_wrong_fraction",
    "is_all_strings",
    "run_ensemble",
    "init_distributed",
    "shard_members",
    "load_merged",
    "MergedResult",
]
