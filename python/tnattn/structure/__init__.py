"""Structure formation during training.

See the documentation: Science, "Loss spikes", and Experiments, "Structure formation".

- :mod:`~tnattn.structure.snapshots`: record the context point clouds of a fixed probe set during
  training (:class:`SnapshotRecorder`), store them compactly and reload them;
- :mod:`~tnattn.structure.spikes`: loss-spike events, inter-spike intervals, a periodicity test,
  D_eff step changes and their alignment with spikes;
- :mod:`~tnattn.structure.guard`: :class:`SpikeGuard`, the opt-in callback that reverts a spike if
  it raised D_eff;
- :mod:`~tnattn.structure.compare`: regularisation-schedule / guard comparisons over seeds.
"""

from tnattn.structure.compare import Setting, parse_setting, run_member, run_members, summarise_members
from tnattn.structure.guard import SpikeGuard, probe_deff
from tnattn.structure.snapshots import (
    ProbeSet,
    SnapshotRecorder,
    Snapshots,
    load_snapshots,
    make_probe,
    neighbourhood_index,
)
from tnattn.structure.spikes import (
    DeffSteps,
    PeriodicityResult,
    align_spikes_with_steps,
    analyse_history,
    deff_drift_between_spikes,
    deff_jumps_at,
    deff_steps,
    inter_spike_intervals,
    periodicity_test,
    pooled_periodicity_test,
    spike_events,
    spike_spectrum,
)

__all__ = [
    "ProbeSet",
    "make_probe",
    "neighbourhood_index",
    "SnapshotRecorder",
    "Snapshots",
    "load_snapshots",
    "SpikeGuard",
    "probe_deff",
    "spike_events",
    "inter_spike_intervals",
    "spike_spectrum",
    "PeriodicityResult",
    "periodicity_test",
    "pooled_periodicity_test",
    "DeffSteps",
    "deff_steps",
    "align_spikes_with_steps",
    "deff_jumps_at",
    "deff_drift_between_spikes",
    "analyse_history",
    "Setting",
    "parse_setting",
    "run_member",
    "run_members",
    "summarise_members",
]
