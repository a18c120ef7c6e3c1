"""Ensembles: thousands of independent TN-attention students per kernel call.

- :mod:`tnattn.ensemble.ops`: ``tnattn::tn_attention_ensemble`` / ``tnattn::contexts_ensemble``
  custom ops (E parameter sets, per-member or shared batches, per-member gradients);
- :class:`EnsembleTNAttention`: stacked parameters (E, ...), members initialised exactly like
  ``TNAttention(..., generator=torch.Generator().manual_seed(seed))``;
- :class:`EnsembleTrainer`: E members trained at once, each equal to its single-model run
  (:func:`tnattn.train.train` with the member's seed), with per-member hyperparameters, metrics,
  grokking detection and stopping;
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
from tnattn.ensemble.trainer import EnsembleResult, EnsembleTrainer

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
