"""Ensembles: thousands of independent TN-attention students per kernel call.

- the ops over (E, ...) member stacks are those of :mod:`tnattn.ops` (``contexts_ensemble``,
  ``tn_attention_ensemble`` and ``kernel_threads`` remain here for one release as deprecated aliases);
- the model of E members is :class:`tnattn.models.TNAttention` built with ``seeds=[...]`` (members
  initialised exactly like ``TNAttention(..., generator=torch.Generator().manual_seed(seed))``), its
  forward pass the functions of :mod:`tnattn.models.functional`;
- deprecated aliases (one release, ``DeprecationWarning`` on lookup): ``EnsembleTrainer`` /
  ``EnsembleResult`` of :class:`tnattn.train.Trainer` (E members at once) and
  :class:`tnattn.train.FitResult`; ``EnsembleTNAttention``, ``StackedParams``, ``ensemble_logits`` and
  ``ensemble_contexts`` of :class:`tnattn.models.TNAttention`, :class:`tnattn.models.functional.Params`,
  :func:`tnattn.models.functional.logits` and :func:`tnattn.models.functional.contexts`;
- :mod:`tnattn.ensemble.stats`: grokking-time histograms, the aligned ensemble average of the test
  error with the fitted nu, D_eff around grokking, the full-protocol cost projected from a run;
- :mod:`tnattn.ensemble.fused`: Scenario A's training step (forward, head, squared-error loss,
  backward) as one kernel call (the fused heads of :mod:`tnattn.ops.heads` on stacked parameters),
  which the trainer takes when it applies;
- :mod:`tnattn.ensemble.allstrings`: exact predictions on all d**M strings through shared
  prefix/suffix contexts (the trainer's training-error evaluation on the CPU);
- :mod:`tnattn.ensemble.distributed`: members sharded over ``torch.distributed`` ranks.
"""

from tnattn.ensemble.allstrings import all_strings_predict, all_strings_wrong_fraction, is_all_strings
from tnattn.ensemble.distributed import MergedResult, init_distributed, load_merged, run_ensemble, shard_members
from tnattn.ensemble._deprecated import contexts_ensemble, kernel_threads, tn_attention_ensemble
from tnattn.ensemble.stats import aligned_mean, aligned_test_error, grokking_time_histogram, protocol_cost

__all__ = [
    "contexts_ensemble",
    "tn_attention_ensemble",
    "kernel_threads",
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


def _ensemble_logits(P, x, *, normalize_map: bool):
    from tnattn.models.functional import logits

    return logits(P, x, normalize_map=normalize_map)


def _ensemble_contexts(P, x):
    from tnattn.models.functional import contexts

    return contexts(P, x)


# Deprecated names (one release): name -> (replacement, what to use instead).
_DEPRECATED = {
    # (tnattn.train as an attribute of tnattn is the train function, so the module is named in full)
    "EnsembleTrainer": ("tnattn.train.trainer.Trainer", "tnattn.train.Trainer"),
    "EnsembleResult": ("tnattn.train.trainer.FitResult", "tnattn.train.FitResult"),
    "EnsembleTNAttention": ("tnattn.models.TNAttention", "tnattn.models.TNAttention(..., seeds=[...])"),
    "StackedParams": ("tnattn.models.functional.Params", "tnattn.models.Params"),
    "ensemble_logits": (_ensemble_logits, "tnattn.models.functional.logits"),
    "ensemble_contexts": (_ensemble_contexts, "tnattn.models.functional.contexts"),
}


def __getattr__(name: str):
    if name in _DEPRECATED:
        import importlib
        import warnings

        target, instead = _DEPRECATED[name]
        warnings.warn(f"tnattn.ensemble.{name} is deprecated and will be removed in the next release; use {instead}",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        if isinstance(target, str):
            module, _, attr = target.rpartition(".")
            return getattr(importlib.import_module(module), attr)
        return target
    raise AttributeError(f"module 'tnattn.ensemble' has no attribute {name!r}")
